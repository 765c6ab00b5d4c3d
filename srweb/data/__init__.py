"""Datasets: benchmark HR folders, DIV2K, training patches, the built-in sample set.

All items are ``{"lr", "hr", "lr_path", "hr_path"}`` with float32 ``(C, H, W)`` tensors in [0, 1].
Names are imported on first use, so ``import srweb.data`` stays cheap and
``python -m srweb.data.pairs`` runs cleanly.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DIV2K": "div2k",
    "DownloadError": "download",
    "fetch_dataset": "download",
    "download_div2k": "div2k",
    "HRFolderDataset": "folders",
    "SkippedImage": "folders",
    "list_images": "folders",
    "FSRCNN_SCALES": "pairs",
    "PatchPairs": "pairs",
    "prepare_dataset": "prepare",
    "benchmark_path": "samples",
    "builtin_datasets": "samples",
    "sample_images_dir": "samples",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"srweb.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'srweb.data' has no attribute {name!r}")
