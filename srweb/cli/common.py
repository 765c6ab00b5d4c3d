"""What every ``srweb`` command shares: the one-line user error and JSON output."""

from __future__ import annotations

import json

EXIT_BAD_INPUT = 2
BACKEND_CHOICES = ["auto", "torch", "openvino", "onnxruntime"]  # srweb.inference.backends.BACKENDS and auto
SELF_ENSEMBLE_HELP = "average over the 8 flips and rotations of the input (8x the time, higher PSNR)"


class CLIError(Exception):
    """A user error reported as one line."""


def print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))
