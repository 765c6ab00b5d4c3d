"""Community SR models (ESRGAN, Real-ESRGAN compact, SwinIR, HAT, SPAN, OmniSR, DAT, ...) built by
spandrel from their state dict: spandrel detects the architecture and its hyperparameters from the
tensors, so an imported weights entry needs no code of its own and nothing is ever unpickled.

Only spandrel's core registry (MIT) is used. Architectures of ``spandrel_extra_arches`` carry
non-commercial or copyleft licences: their state dicts are recognised here only to refuse them,
naming the licence.

spandrel (and the architectures it imports) is loaded on first use, inside the functions: it takes
seconds and only imported weights need it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The value of ``config["loader"]`` in the card of an imported entry.
COMMUNITY_LOADER = "spandrel"

# spandrel_extra_arches (not used): architecture -> (keys its state dicts hold, licence).
EXTRA_ARCHES: dict[str, tuple[tuple[str, ...], str]] = {
    "SRFormer": (
        ("conv_first.weight", "layers.0.residual_group.blocks.0.attn.aligned_relative_position_index"),
        "CC BY-NC 4.0",
    ),
    "CodeFormer": (
        ("quantize.embedding.weight", "position_emb", "ft_layers.0.self_attn.in_proj_weight"),
        "S-Lab License 1.0",
    ),
    "FeMaSR": (
        ("multiscale_encoder.in_conv.weight", "before_quant_group.0.weight", "out_conv.weight"),
        "CC BY-NC-SA 4.0",
    ),
    "Restormer": (
        ("patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "encoder_level1.0.attn.qkv_dwconv.weight"),
        "Academic Public License",
    ),
}


class CommunityModelError(ValueError):
    """A state dict that is not a usable super-resolution model."""


def spandrel_version() -> str:
    import spandrel  # heavy: only imported weights need it

    return spandrel.__version__


def extra_arch(state_dict: dict[str, Any]) -> tuple[str, str] | None:
    """``(architecture, licence)`` when the state dict is one of spandrel_extra_arches' models."""
    for arch, (keys, licence) in EXTRA_ARCHES.items():
        if all(key in state_dict for key in keys):
            return arch, licence
    return None


def canonical_state_dict(state_dict: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict as spandrel reads it (``params_ema`` / ``module.`` wrappers removed), tensors only."""
    from spandrel import canonicalize_state_dict  # heavy: only imported weights need it

    if not isinstance(state_dict, dict):
        raise CommunityModelError(f"holds a {type(state_dict).__name__}, not a state dict of tensors")
    state = canonicalize_state_dict(state_dict)
    if not isinstance(state, dict):
        raise CommunityModelError("holds no state dict of tensors")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CommunityModelError("holds no tensors")
    return tensors


def describe(state_dict: dict[str, torch.Tensor]):
    """spandrel's ImageModelDescriptor for a canonical state dict.

    Raises:
        CommunityModelError: an extra-arches architecture (named with its licence), a state dict
            spandrel does not recognise (with what spandrel said), or a model that is not image SR.
    """
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, UnsupportedModelError  # heavy: see module doc

    try:
        with warnings.catch_warnings():  # architectures' own construction notes (torch.meshgrid's default, ...)
            warnings.simplefilter("ignore", UserWarning)
            descriptor = MAIN_REGISTRY.load(state_dict)
    except UnsupportedModelError as exc:
        extra = extra_arch(state_dict)
        if extra:
            raise CommunityModelError(
                f"is a {extra[0]} model, an architecture of spandrel_extra_arches under the "
                f"{extra[1]} licence (non-commercial/copyleft): srweb does not load it"
            ) from None
        keys = ", ".join(list(state_dict)[:3]) + (", ..." if len(state_dict) > 3 else "")
        said = f"{type(exc).__name__}: {str(exc).strip()}" if str(exc).strip() else type(exc).__name__
        raise CommunityModelError(
            f"spandrel does not recognise this state dict ({said}; no architecture of its "
            f"core matches its {len(state_dict)} tensors: {keys})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - a recognised architecture whose loader fails on odd shapes
        raise CommunityModelError(f"spandrel could not build it ({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise CommunityModelError(
            f"is a {descriptor.architecture.name} {descriptor.purpose} model, not image super-resolution"
        )
    if descriptor.scale < 2:
        raise CommunityModelError(
            f"is a x{descriptor.scale} {descriptor.architecture.name} "
            f"{descriptor.purpose} model; srweb runs super-resolution (x2 and up)"
        )
    if descriptor.input_channels not in (1, 3) or descriptor.output_channels != descriptor.input_channels:
        raise CommunityModelError(
            f"takes {descriptor.input_channels} channels and gives {descriptor.output_channels}; "
            f"srweb runs RGB (3 -> 3) or grey (1 -> 1) models"
        )
    return descriptor


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def window_size(net: nn.Module) -> int:
    """The attention windows of a window-based transformer (SwinIR and HAT's ``window_size``, DAT's
    ``split_size`` rectangles), as one multiple (1 for none): tiles start on it, so every window of a
    tile is a window of the whole image."""
    sizes = {1}
    for module in net.modules():
        for attribute in ("window_size", "split_size"):
            size = getattr(module, attribute, None)
            if isinstance(size, int) and size > 0:
                sizes.add(size)
            elif isinstance(size, (tuple, list)) and all(isinstance(s, int) and s > 0 for s in size):
                sizes.update(size)
    return math.lcm(*sizes)


def has_global_operations(net: nn.Module) -> bool:
    """Whether some layer sees the whole image (adaptive pooling, channel attention over all pixels, as
    in RCAN, HAT's CAB, DAT): then no overlap makes tiles exactly equal to the whole image."""
    for module in net.modules():
        name = type(module).__name__.lower()
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or (
            "channel" in name and ("attn" in name or "attention" in name)
        ):
            return True
    return False


class CommunityModel(nn.Module):
    """A spandrel-built network with the attributes srweb relies on (``arch``, ``scale``, ``config``,
    ``in_channels``, ``input_kind``, ``upsampling``) and spandrel's size rules: the input is padded to
    the size the architecture needs (minimum, multiple, square) and the output cropped back.

    ``receptive_radius`` (from the card, measured at import) sets the tile overlap; tiles start on
    multiples of ``tile_multiple``.
    """

    def __init__(self, descriptor, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net = descriptor.model
        # spandrel's per-architecture call (some models return a tuple); private, so with a fallback.
        self._call: Callable[[nn.Module, torch.Tensor], torch.Tensor] = getattr(descriptor, "_call_fn", None) or (
            lambda model, image: model(image)
        )
        self.requirements = descriptor.size_requirements
        self.arch = descriptor.architecture.id
        self.scale = int(descriptor.scale)
        self.in_channels = int(descriptor.input_channels)
        self.input_kind = "y" if self.in_channels == 1 else "rgb"
        self.upsampling = "post"
        self.tile_multiple = math.lcm(self.requirements.multiple_of, window_size(self.net))
        self.config = {**describe_config(descriptor), **(config or {})}
        self.receptive_radius = self.config.get("receptive_radius")
        fuse_reparameterised(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_w, pad_h = self.requirements.get_padding(w, h)
        if pad_w or pad_h:  # reflect where the image is large enough, replicate beyond (as spandrel does)
            rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
            x = F.pad(x, (0, rw, 0, rh), "reflect") if rw or rh else x
            x = F.pad(x, (0, pad_w - rw, 0, pad_h - rh), "replicate") if pad_w > rw or pad_h > rh else x
        y = self._call(self.net, x)
        expected = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        if not isinstance(y, torch.Tensor) or tuple(y.shape[-2:]) != expected or y.shape[1] != self.in_channels:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise CommunityModelError(
                f"{self.arch} gave {got} for a {tuple(x.shape)} input, not "
                f"{self.in_channels} x {expected[0]} x {expected[1]} (x{self.scale})"
            )
        return y[..., : h * self.scale, : w * self.scale]


def fuse_reparameterised(net: nn.Module) -> None:
    """Fuse re-parameterised blocks (SPAN's Conv3XC) once: in eval mode they rebuild their fused kernel
    from the training branches on every call, which costs time and crashes torch.export (ONNX) with a
    segmentation fault. Imported models only run in eval mode, so the fused kernel is final."""
    with torch.no_grad():
        for module in net.modules():
            if callable(getattr(module, "update_params", None)) and hasattr(module, "eval_conv"):
                module.update_params()
                module.update_params = _no_update


def _no_update() -> None:
    """The fused kernel of a re-parameterised block is final (see :func:`fuse_reparameterised`)."""


def describe_config(descriptor) -> dict[str, Any]:
    """What a card keeps of spandrel's description (JSON)."""
    req = descriptor.size_requirements
    return {
        "loader": COMMUNITY_LOADER,
        "in_channels": int(descriptor.input_channels),
        "out_channels": int(descriptor.output_channels),
        "purpose": descriptor.purpose,
        "tags": list(descriptor.tags),
        "supports_half": bool(descriptor.supports_half),
        "supports_bfloat16": bool(descriptor.supports_bfloat16),
        "size_requirements": {"minimum": req.minimum, "multiple_of": req.multiple_of, "square": req.square},
        "tiling": descriptor.tiling.name.lower(),
    }


def build(state_dict: dict[str, Any], config: dict[str, Any] | None = None) -> CommunityModel:
    """A :class:`CommunityModel` (eval mode, CPU) from a state dict; ``config`` is its card's."""
    model = CommunityModel(describe(canonical_state_dict(state_dict)), config)
    return model.eval()


def load_community(tensors_path: str, arch: str, scale: int, config: dict[str, Any]) -> CommunityModel:
    """Build an imported entry from its safetensors file (no pickle), checking it is what its card says.

    Raises:
        CommunityModelError: unreadable tensors, or a model other than the card's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(tensors_path)
    except (SafetensorError, OSError) as exc:
        raise CommunityModelError(f"unreadable tensors ({_one_line(exc)})") from None
    model = build(state, config)
    if model.arch != arch or model.scale != int(scale):
        raise CommunityModelError(f"tensors are a {model.arch} x{model.scale} model, the card says {arch} x{scale}")
    return model
