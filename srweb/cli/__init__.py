"""Command line: ``srweb COMMAND``, one module per command group in this package.

On bad input every command exits non-zero with one clear line on stderr, never a traceback.
A new command group is a module with ``register(subparsers)`` plus one entry in :data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import Sequence

from srweb.cli.common import EXIT_BAD_INPUT, CLIError

# The modules of srweb.cli (or a full module path), in the order `srweb --help` lists their commands.
COMMAND_GROUPS = (
    "models",
    "upscale",
    "evaluate",
    "prepare",
    "data",
    "train",
    "jobs",
    "workers",
    "bench",
    "compare",
    "hub",
    "onnx",
    "importer",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srweb", description="Super-resolution studio")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        import_module(group if "." in group else f"srweb.cli.{group}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from srweb.config import apply_threads
        from srweb.data.folders import show_warnings_as_lines

        apply_threads()
        show_warnings_as_lines()
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("srweb: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"srweb: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # the last line of defence: one line, no traceback
        print(f"srweb: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
