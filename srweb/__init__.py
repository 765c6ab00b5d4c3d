"""srweb: a super-resolution studio (library, CLI and Gradio app over one PyTorch core).

The public API is imported lazily so ``import srweb`` stays cheap:

    >>> import srweb
    >>> srweb.list_models()[:3]
    >>> up = srweb.Upscaler("espcn-x3.general100")
    >>> up.upscale(PIL.Image.open("photo.png")).save("photo_x3.png")
    >>> card = srweb.import_model("realesr-general-x4v3.pth", license="BSD-3-Clause")  # any spandrel model
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "list_models": "srweb.models",
    "create_model": "srweb.models",
    "get_model_info": "srweb.models",
    "load_weights": "srweb.weights.files",
    "list_weights": "srweb.weights.files",
    "save_weights": "srweb.weights.files",
    "WeightsCard": "srweb.weights.files",
    "Upscaler": "srweb.inference.upscaler",
    "evaluate": "srweb.evaluation.evaluate",
    "import_model": "srweb.weights.importer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'srweb' has no attribute {name!r}")
