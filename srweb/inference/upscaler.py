"""Upscaler: any PIL image in, the same mode family out, ``scale`` times larger.

Handles pre-upsampling models (fed a MATLAB-bicubic upscale), Y-only models (run on Y,
CbCr upscaled bicubically), alpha (upscaled on its own, never a black background), 16-bit
and odd modes, and tiles large inputs with an overlap so memory stays bounded.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from srweb.inference.backends import GraphRuntime, choose_backend, fallback, first_line, make_runtime, wants_fp32_ends
from srweb.config import get_settings, resolve_device
from srweb.imaging.io import encode_png, icc_profile_of, load_pixels, rgb_to_ycbcr, upright, ycbcr_to_rgb
from srweb.models import create_model, get_model_info, list_models
from srweb.imaging.resize import imresize
from srweb.weights.files import ENSEMBLE_SUFFIX, WeightsCard, load_weights, resolve_weights
from srweb.imaging.fileio import atomic_write_bytes

ProgressFn = Callable[[int, int], None]

# An activation element takes 4 bytes in fp32, 2 in bf16/fp16 (the tile budget: Settings.tile_budget_mb).
BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2}
MAX_GRID = 64
MAX_OUTPUT_SCALE = 16  # Upscaler(output_scale=): a x4 model at 16 makes 16x16 pixels of each input pixel


@dataclass(frozen=True)
class ModelProfile:
    """What tiling needs to know about a model, measured once with hooks on a tiny input."""

    receptive_radius: int  # input pixels that influence an output pixel, per side
    elements_per_pixel: int  # largest activation (channels x area ratio) per input pixel
    conv_inputs_per_pixel: float = 0.0  # elements of all convolution inputs per input pixel (what autograd keeps)


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 math (AVX512-BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def device_name(device: str = "cpu") -> str:
    """The processor a result was measured on: CPU model name, or the CUDA device name."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or device


def guard_verdict(precision: str, delta_db: float, dataset: str, device: str, tolerance_db: float = 0.01) -> dict:
    """The quality guard's entry in a card: is the fast path within ``tolerance_db`` of fp32?"""
    return {
        "fast_precision": precision,
        "fast_psnr_delta_db": round(delta_db, 4),
        "fast_path_ok": delta_db >= -tolerance_db,
        "guard": f"{dataset} PSNR within {tolerance_db} dB of fp32",
        "measured_on": device_name(device),
    }


def pick_precision(device: str, requested: str = "auto") -> str:
    """Resolve ``auto`` to the fastest safe precision for a device: bf16 / fp16 / fp32."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device == "cpu" and cpu_supports_bf16():
        return "bf16"
    return "fp32"


def card_precision(inference: dict, device: str, requested: str = "auto") -> str:
    """The precision to run weights in, given their card's ``inference`` block (its quality guard):
    ``requested`` unless it is ``auto``; else the device's fastest (:func:`pick_precision`) when the
    guard passed in that precision or the card has none, and fp32 when the guard failed or measured
    another precision (a card made where there is no bf16 vouches for fp32 only)."""
    fast = pick_precision(device, requested)
    if requested != "auto" or fast == "fp32":
        return fast
    measured = inference.get("fast_precision")
    return fast if inference.get("fast_path_ok", True) and measured in (None, fast) else "fp32"


def profile_model(model: nn.Module, in_channels: int, upsampling: str) -> ModelProfile:
    """Measure the receptive radius, peak activation size and convolution inputs of ``model`` with
    forward hooks (on any device, the meta device included: only shapes are read)."""
    size = 16
    radius = 0.0
    peak = float(in_channels)
    conv_inputs = 0

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal radius, peak, conv_inputs
        ratio = args[0].shape[-1] / size
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            k = module.kernel_size[0]
            radius += (k // 2) * module.dilation[0] / ratio
            conv_inputs += args[0].numel()
        out_ratio = output.shape[-1] / size
        peak = max(peak, output.shape[1] * out_ratio * out_ratio)

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            param = next(model.parameters(), None)
            x = torch.rand(1, in_channels, size, size, device=param.device if param is not None else "cpu")
            model(x)
    finally:
        for h in handles:
            h.remove()
    # Bicubic resampling (baselines, pre-upsampling) reaches 2 pixels further.
    return ModelProfile(
        receptive_radius=math.ceil(radius) + 2,
        elements_per_pixel=math.ceil(peak),
        conv_inputs_per_pixel=conv_inputs / size**2,
    )


class _FP32(nn.Module):
    """Runs the wrapped layer in fp32 inside an autocast region."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


def with_fp32_edges(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose first and last convolutions run in fp32 under autocast.

    Rounding the input image and the output layer to bf16 costs small luma models most of their
    fast-path PSNR loss (Set5: srcnn-x2 -0.015 -> -0.0001 dB, espcn-x2 -0.031 -> -0.003 dB), while
    these two layers are a few percent of their work; the weights are shared, not copied.
    """
    convs = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    if not convs:
        return model
    net = copy.copy(model)
    net._modules = dict(model._modules)  # a shallow tree copy: the original model is not modified
    for name in dict.fromkeys((convs[0], convs[-1])):
        parent_name, _, child = name.rpartition(".")
        parent = net
        for part in parent_name.split(".") if parent_name else ():
            clone = copy.copy(parent._modules[part])
            clone._modules = dict(clone._modules)
            parent._modules[part] = clone
            parent = clone
        parent._modules[child] = _FP32(parent._modules[child])
    return net


@lru_cache(maxsize=8)
def _cached_weights(path: str, mtime: float, card_mtime: float) -> tuple[nn.Module, WeightsCard]:
    return load_weights(path)


def load_cached(name_or_path: str) -> tuple[nn.Module, WeightsCard]:
    """``load_weights`` with a small cache keyed on the files and their modification times (a card
    rewritten by ``srweb bench --store`` is read again)."""
    tensors, card = resolve_weights(name_or_path)
    return _cached_weights(str(tensors), tensors.stat().st_mtime, card.stat().st_mtime)


class Upscaler:
    """Upscale PIL images with an SR model.

    Args:
        model: an ``nn.Module`` from :func:`srweb.create_model`, a weights name or path, or a
            baseline name (``bicubic``, ``nearest``).
        scale: required for baselines; otherwise must match the model's scale if given.
        device: ``auto`` (cuda > mps > cpu) or a torch device string.
        precision: ``auto`` (bf16 where the hardware has it, unless the card says the model
            loses quality in it), ``fp32``, ``bf16`` or ``fp16``.
        tile_size: input tile side in pixels; ``None`` (or 0) picks the tile grid that computes
            the fewest pixels (overlaps included) while each tile fits the activation budget.
        tile_overlap: context pixels around each tile; ``None`` uses the receptive radius, so
            the tiled result equals the untiled one.
        channels_last: use NHWC memory format (faster convolutions on CPU and GPU).
        compile: run the model through ``torch.compile``; ``None`` follows ``SRWEB_COMPILE``.
        self_ensemble: average the model over the 8 flips and rotations of the input (the "+"
            of EDSR+): 8 times the work for a higher PSNR; the name gets :data:`ENSEMBLE_SUFFIX`
            (and a weights name given with it, ``"NAME+"``, turns this on).
        output_scale: the factor of the output, when it is not the model's (e.g. 3.5 or 8 with a
            x4 model, 1.5 with a x2): the SR result is resized to it with MATLAB bicubic
            (antialiased when shrinking); ``None`` keeps the model's scale.
        backend: what runs the network (:mod:`srweb.inference.backends`): ``auto`` (the winner ``srweb bench
            --store`` recorded in the card for this processor, else torch), ``torch``, ``openvino``
            or ``onnxruntime``; ``None`` follows ``SRWEB_BACKEND``. A backend that cannot run here
            falls back to torch with one warning. ``backend`` and ``precision`` then say what runs.
        fp32_ends: keep the first and last convolution in fp32 when the rest runs in bf16/fp16;
            ``None``: as ``srweb bench`` measured for this backend on this processor, else for luma
            models only (:func:`srweb.inference.backends.wants_fp32_ends`).
    """

    def __init__(
        self,
        model: nn.Module | str,
        scale: int | None = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        channels_last: bool = True,
        compile: bool | None = None,
        self_ensemble: bool = False,
        output_scale: float | None = None,
        backend: str | None = None,
        fp32_ends: bool | None = None,
    ) -> None:
        for what, value in (("tile size", tile_size), ("tile overlap", tile_overlap)):
            if value is not None and value < 0:
                raise ValueError(f"{what} must be >= 0 pixels, got {value}")
        if output_scale is not None and not 0 < output_scale <= MAX_OUTPUT_SCALE:
            raise ValueError(f"output scale must be above 0 and at most {MAX_OUTPUT_SCALE}, got {output_scale:g}")
        self.card: WeightsCard | None = None
        if isinstance(model, str):
            if model.endswith(ENSEMBLE_SUFFIX) and not Path(model).exists():  # "NAME+", as results are named
                model, self_ensemble = model[: -len(ENSEMBLE_SUFFIX)], True
            model = self._resolve(model, scale)
        if scale is not None and int(scale) != int(model.scale):
            raise ValueError(f"{getattr(model, 'arch', 'model')} is a x{model.scale} model, not x{scale}")
        arch = getattr(model, "arch", None)
        if self_ensemble and arch in list_models() and not get_model_info(arch).trainable:
            raise ValueError(f"self-ensemble needs a model: {arch} gives the same image for every flip")
        self.scale = int(model.scale)
        self.output_scale = float(output_scale) if output_scale not in (None, self.scale) else None
        self.device = resolve_device(device)
        self.precision = card_precision(self.card.inference if self.card else {}, self.device, precision)
        self._torch_precision = self.precision
        self.backend, self.runtime = self._pick_backend(model, backend, precision, fp32_ends)
        self.last_compile_seconds = 0.0
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        in_channels = int(model.in_channels)
        self.profile = profile_model(self.model, in_channels, model.upsampling)
        # An imported model's radius was measured at import (hooks miss attention and functional convs);
        # window transformers need tiles that start on multiples of their window.
        self.tile_multiple = int(getattr(model, "tile_multiple", 1) or 1)
        known_radius = getattr(model, "receptive_radius", None)
        radius = self.profile.receptive_radius if known_radius is None else int(known_radius)
        self.tile_overlap = _round_up(radius, self.tile_multiple) if tile_overlap is None else tile_overlap
        self.tile_size = tile_size
        if tile_size and tile_size < self.tile_overlap:
            work = ((tile_size + 2 * self.tile_overlap) / tile_size) ** 2
            warnings.warn(
                f"tile size {tile_size} is below the {self.tile_overlap}-pixel overlap "
                f"{getattr(model, 'arch', 'this model')} needs on each side: every tile computes about "
                f"{work:.0f}x its own pixels (0 picks tiles automatically)",
                stacklevel=2,
            )
        element_bytes = BYTES_PER_ELEMENT[self.precision]
        settings = get_settings()
        budget_bytes = (
            settings.tile_budget_mb * 1e6 * (self.runtime.tile_budget_share if self.runtime is not None else 1)
        )
        self.max_tile_pixels = max(32 * 32, int(budget_bytes // (element_bytes * self.profile.elements_per_pixel)))
        self.compiled = settings.compile if compile is None else compile
        # Dynamic shapes: one compilation serves every image and tile size.
        net = with_fp32_edges(self.model) if self._torch_precision != "fp32" and self.fp32_ends else self.model
        self._net = torch.compile(net, dynamic=True) if self.compiled else net
        self.self_ensemble = bool(self_ensemble)
        self._lock = threading.Lock()
        self.last_seconds = 0.0

    def _pick_backend(
        self, model: nn.Module, requested: str | None, precision: str, fp32_ends: bool | None
    ) -> tuple[str, GraphRuntime | None]:
        """(backend name, graph runtime or None for torch); sets the precision it runs in and whether
        its first and last convolution stay fp32 (given, else as measured for the choice, else the rule)."""
        if requested is None:  # SRWEB_BACKEND: for saved weights; a baseline or bare module runs on torch
            requested = get_settings().backend if self.card is not None else "torch"
        inference = self.card.inference if self.card else {}
        choice = choose_backend(requested, precision, inference, self.device, self.precision, device_name("cpu"))

        def ends(measured: bool | None) -> bool:
            return next(e for e in (fp32_ends, measured, wants_fp32_ends(model)) if e is not None)

        self.fp32_ends = ends(choice.fp32_ends)
        runtime = make_runtime(choice, model, self.card, self.device, self.fp32_ends)
        if runtime is not None or choice.name == "torch":
            self.precision = choice.precision
            if choice.name == "torch":
                self._torch_precision = choice.precision
            return choice.name, runtime
        self.fp32_ends = ends(None)  # fell back to torch, for which nothing was measured
        return "torch", None

    def _resolve(self, name: str, scale: int | None) -> nn.Module:
        if name in list_models() and not get_model_info(name).trainable:
            if scale is None:
                raise ValueError(f"baseline {name!r} needs a scale")
            return create_model(name, int(scale))
        model, card = load_cached(name)
        self.card = card
        return model

    @property
    def name(self) -> str:
        name = self.card.name if self.card else getattr(self.model, "arch", "model")
        return name + ENSEMBLE_SUFFIX if self.self_ensemble else name

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) of the result for an ``h`` x ``w`` input."""
        if self.output_scale is None:
            return h * self.scale, w * self.scale
        return max(1, round(h * self.output_scale)), max(1, round(w * self.output_scale))

    def tile_grid(self, h: int, w: int) -> tuple[int, int]:
        """(rows, cols) of tiles for an ``h`` x ``w`` model input."""
        if self.tile_size:
            return math.ceil(h / self.tile_size), math.ceil(w / self.tile_size)
        pad, best = self.tile_overlap, None
        for rows in range(1, min(h, MAX_GRID) + 1):
            tile_h = math.ceil(h / rows) + (2 * pad if rows > 1 else 0)
            for cols in range(1, min(w, MAX_GRID) + 1):
                tile_w = math.ceil(w / cols) + (2 * pad if cols > 1 else 0)
                if tile_h * tile_w <= self.max_tile_pixels:
                    # Pixels computed in all, overlaps included; fewer tiles break ties.
                    cost = (h + 2 * pad * (rows - 1)) * (w + 2 * pad * (cols - 1)), rows * cols
                    if best is None or cost < best[0]:
                        best = cost, (rows, cols)
                    break
        return best[1] if best else (math.ceil(h / 32), math.ceil(w / 32))

    def _autocast(self):
        if self.precision == "fp32" or self.device == "mps":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runtime is not None:
            try:
                return self.runtime(x)
            except Exception as exc:  # noqa: BLE001 - a runtime's own errors vary: any of them falls back to torch
                fallback(self.backend, first_line(exc))
                self.runtime, self.backend, self.precision = None, "torch", self._torch_precision
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            y = self._net(x)
        return y.float().clamp_(0, 1).cpu()

    @torch.inference_mode()
    def forward_tensor(self, x: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        """Model-space forward of ``x`` (1, C, H, W) in [0, 1] with tiling; returns (1, C, sH, sW).

        With ``self_ensemble``, the mean of the forwards of the 8 flips and rotations of ``x``,
        each turned back (bicubic pre-upsampling commutes with them, so it can run inside).
        """
        if not self.self_ensemble:
            return self._forward_tiled(x, progress)
        total = None
        for k, (turns, flip) in enumerate((t, f) for t in range(4) for f in (False, True)):
            step = (lambda done, n, k=k: progress(k * n + done, 8 * n)) if progress else None
            y = self._forward_tiled(torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1)), step)
            y = torch.rot90(y, -turns, dims=(-2, -1))
            y = y.flip(-1) if flip else y
            total = y if total is None else total.add_(y)
        return total.div_(8)

    def _forward_tiled(self, x: torch.Tensor, progress: ProgressFn | None) -> torch.Tensor:
        if self.model.upsampling == "pre":
            x = imresize(x, scale=self.scale).clamp_(0, 1)
            out_scale = 1
        else:
            out_scale = self.scale
        _, _, h, w = x.shape
        pad = _round_up(self.tile_overlap, self.tile_multiple)
        rows, cols = self.tile_grid(h, w)
        if rows * cols == 1:
            out = self._forward(x)
            if progress:
                progress(1, 1)
            return out
        # Tiles and their context start on the model's multiple (a window transformer's window).
        th, tw = _round_up(math.ceil(h / rows), self.tile_multiple), _round_up(math.ceil(w / cols), self.tile_multiple)
        fixed = self.runtime is not None and self.runtime.fixed_shapes
        out = None
        for index, (y0, y1, py0, py1, x0, x1, px0, px1) in enumerate(tile_windows(h, w, th, tw, pad, fixed)):
            res = self._forward(x[..., py0:py1, px0:px1])
            if out is None:
                out = torch.empty(1, res.shape[1], h * out_scale, w * out_scale)
            s = out_scale
            out[..., y0 * s : y1 * s, x0 * s : x1 * s] = res[
                ..., (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
            ]
            if progress:
                progress(index + 1, rows * cols)
        return out

    def upscale_tensor(self, x: torch.Tensor, progress: ProgressFn | None = None) -> torch.Tensor:
        """Image-space upscale of ``x`` (C, H, W), C in {1, 3}, values in [0, 1]."""
        channels = x.shape[0]
        rgb = x.expand(3, -1, -1) if channels == 1 else x
        if self.model.input_kind == "y":
            ycc = rgb_to_ycbcr(rgb[None])
            y = self.forward_tensor(ycc[:, :1], progress)
            cbcr = imresize(ycc[:, 1:], scale=self.scale)
            out = ycbcr_to_rgb(torch.cat([y, cbcr], dim=1))[0]
        else:
            out = self.forward_tensor(rgb[None].contiguous(), progress)[0]
        out = out.clamp(0, 1)
        if self.output_scale is not None:
            out = imresize(out[None], size=self.output_size(*x.shape[-2:]))[0].clamp(0, 1)
        return out.mean(dim=0, keepdim=True) if channels == 1 else out

    def upscale(self, img: Image.Image | np.ndarray, progress: ProgressFn | None = None) -> Image.Image | np.ndarray:
        """Upscale a PIL image of any mode; the result keeps the mode family (and bit depth).

        An array (H, W) or (H, W, 1|2|3|4) of uint8 or uint16 (grey, grey+alpha, RGB, RGBA: e.g. 16-bit colour,
        which PIL cannot hold, from :func:`srweb.imaging.io.load_pixels`) comes back as the same kind of array.
        """
        start = time.perf_counter()
        if isinstance(img, np.ndarray):
            empty, size, convert = img.ndim < 2 or 0 in img.shape[:2], str(img.shape), _upscale_array
        else:
            img = upright(img)
            empty, size, convert = 0 in img.size, f"{img.width}x{img.height}", _upscale_any_mode
        if empty:
            raise ValueError(f"image has zero size ({size})")
        with self._lock:
            if self.runtime is not None:
                self.runtime.compile_seconds = 0.0
            result = convert(self, img, progress)
            self.last_compile_seconds = self.runtime.compile_seconds if self.runtime is not None else 0.0
        self.last_seconds = time.perf_counter() - start
        return result


def tile_windows(h: int, w: int, th: int, tw: int, pad: int, fixed: bool = False) -> list[tuple[int, ...]]:
    """The tiles of an ``h`` x ``w`` input, ``th`` x ``tw`` each (the last row and column may be smaller): per tile ``(y0, y1, py0, py1, x0, x1,
    px0, px1)``, the rows and columns it gives ([y0, y1) x [x0, x1)) and those the network sees, with
    ``pad`` pixels of context on each side that is not the image's edge.

    ``fixed``: every window has one shape (a compiled graph serves them all): a tile at the image's edge
    takes its missing context from further inside the image instead of being smaller, so it still sees
    the image's true edge and at least ``pad`` pixels elsewhere, as the untiled network would.
    """
    rows, cols = math.ceil(h / th), math.ceil(w / tw)
    win_h = min(h, th + 2 * pad) if rows > 1 else h
    win_w = min(w, tw + 2 * pad) if cols > 1 else w
    windows = []
    for index in range(rows * cols):
        y0, x0 = (index // cols) * th, (index % cols) * tw
        y1, x1 = min(y0 + th, h), min(x0 + tw, w)
        if fixed:
            py0, px0 = min(max(0, y0 - pad), h - win_h), min(max(0, x0 - pad), w - win_w)
            py1, px1 = py0 + win_h, px0 + win_w
        else:
            py0, px0 = max(0, y0 - pad), max(0, x0 - pad)
            py1, px1 = min(h, y1 + pad), min(w, x1 + pad)
        windows.append((y0, y1, py0, py1, x0, x1, px0, px1))
    return windows


def _round_up(value: int, multiple: int) -> int:
    return value if multiple <= 1 else -(-value // multiple) * multiple


def _to_array(img: Image.Image) -> tuple[np.ndarray, float]:
    """Image -> (H, W, C) float array in [0, 1] and the peak value of its bit depth."""
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return (arr / peak)[..., None], peak
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        peak = 255.0 if arr.max() > 1.0 else 1.0
        return (arr / peak)[..., None], peak
    arr = np.asarray(img, dtype=np.float64) / 255.0
    return (arr[..., None] if arr.ndim == 2 else arr), 255.0


def _resize_channel(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(channel, dtype=np.float32))[None, None]
    return imresize(t, size=size)[0, 0].clamp(0, 1).numpy()


def _upscale_planes(
    upscaler: Upscaler, colour: np.ndarray, alpha: np.ndarray | None, progress: ProgressFn | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour (H, W, 1|3) and alpha (H, W) or None, in [0, 1], upscaled; the SR model sees the colour
    premultiplied, so invisible pixels do not bleed into the edges of visible ones."""
    if alpha is not None:
        colour = colour * alpha[..., None]
    x = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1), dtype=np.float32))
    out = upscaler.upscale_tensor(x, progress).numpy().transpose(1, 2, 0)
    if alpha is not None:
        alpha = _resize_channel(alpha, out.shape[:2])
        out = np.where(alpha[..., None] > 1 / 510, out / np.maximum(alpha[..., None], 1 / 510), 0.0).clip(0, 1)
    return out, alpha


def _upscale_array(upscaler: Upscaler, img: np.ndarray, progress: ProgressFn | None) -> np.ndarray:
    """An (H, W) or (H, W, 1|2|3|4) uint8/uint16 array (grey, grey+alpha, RGB, RGBA) upscaled into the
    same kind of array."""
    if (
        img.dtype not in (np.uint8, np.uint16)
        or img.ndim not in (2, 3)
        or img.ndim == 3
        and img.shape[2] not in (1, 2, 3, 4)
    ):
        raise ValueError(
            f"an image array must be (H, W) or (H, W, 1|2|3|4) of uint8 or uint16, not {img.dtype} {img.shape}"
        )
    peak = float(np.iinfo(img.dtype).max)
    planes = img.reshape(*img.shape[:2], -1).astype(np.float64) / peak
    colours = planes.shape[2] - (planes.shape[2] in (2, 4))  # the last of 2 or 4 planes is alpha
    alpha = planes[..., colours] if colours < planes.shape[2] else None
    out, alpha = _upscale_planes(upscaler, planes[..., :colours], alpha, progress)
    if alpha is not None:
        out = np.concatenate([out, alpha[..., None]], axis=2)
    out = np.round(out * peak).astype(img.dtype)
    return out[..., 0] if img.ndim == 2 else out


def _upscale_any_mode(upscaler: Upscaler, img: Image.Image, progress: ProgressFn | None) -> Image.Image:
    mode, profile = img.mode, img.info.get("icc_profile")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA" or mode == "RGB" and "transparency" in img.info:  # RGB with a tRNS colour key
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("LA")
    elif mode == "1":
        img = img.convert("L")
    elif mode not in {"L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"}:
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV: processed in RGB, converted back below
    alpha = None
    if img.mode in {"RGBA", "LA"}:
        alpha = np.asarray(img.getchannel("A"), dtype=np.float64) / 255.0
        img = img.convert("RGB" if img.mode == "RGBA" else "L")
    arr, peak = _to_array(img)
    out, alpha = _upscale_planes(upscaler, arr, alpha, progress)
    if img.mode == "F":
        result = Image.fromarray((out[..., 0] * peak).astype(np.float32), mode="F")
    elif peak > 255:
        result = Image.fromarray(np.round(out[..., 0] * peak).astype(np.uint16))
    else:
        u8 = np.round(out * 255.0).astype(np.uint8)
        result = Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8)
    if alpha is not None:
        a = Image.fromarray(np.round(alpha * 255).astype(np.uint8))
        result = result.convert("RGBA" if result.mode == "RGB" else "LA")
        result.putalpha(a)
    if mode in {"CMYK", "YCbCr", "LAB", "HSV"}:
        result = result.convert(mode)
    if profile:  # colour-managed input (Display P3, Adobe RGB): same colours out
        result.info["icc_profile"] = profile
    return result


def output_paths(inputs: list[Path], out_dir: str | os.PathLike) -> list[Path]:
    """``out_dir/<stem>.png`` for each input; a stem seen before in the batch gets ``-2``, ``-3``, ...
    (``a.png`` and ``a.jpg`` do not overwrite each other)."""
    taken: set[Path] = set()
    paths = []
    for path in inputs:
        stem, n = Path(path).stem, 1
        target = Path(out_dir) / f"{stem}.png"
        while target in taken:
            n += 1
            target = Path(out_dir) / f"{stem}-{n}.png"
        taken.add(target)
        paths.append(target)
    return paths


def upscale_file(
    path: str | os.PathLike,
    upscaler: Upscaler,
    out_dir: str | os.PathLike,
    *,
    max_pixels: int | None = None,
    target: str | os.PathLike | None = None,
) -> Path:
    """Load, upscale and write ``target`` (default ``out_dir/<stem>.png``) in one rename; returns it.

    Raises:
        ValueError: the output would replace the input file.
    """
    target = Path(target) if target is not None else output_paths([Path(path)], out_dir)[0]
    if target.exists() and target.resolve() == Path(path).resolve():
        raise ValueError(f"{path}: the output would overwrite the input; pick another --out folder")
    pixels = load_pixels(path, max_pixels=max_pixels)
    profile = None if isinstance(pixels, Image.Image) else icc_profile_of(path)  # a PIL image carries its own
    return atomic_write_bytes(target, encode_png(upscaler.upscale(pixels), profile))


@dataclass(frozen=True)
class FileOutcome:
    """What became of one file of a batch: its output and the seconds it took (read, upscale, write),
    or why it has none."""

    source: Path
    target: Path | None = None
    seconds: float | None = None
    error: str | None = None


def upscale_files(
    paths: Sequence[str | os.PathLike], upscaler: Upscaler, out_dir: str | os.PathLike, *, max_pixels: int | None = None
) -> Iterator[FileOutcome]:
    """:func:`upscale_file` for each of ``paths`` into ``out_dir`` (``<stem>.png``; a repeated stem gets
    ``-2``, ...), yielding one outcome per file as it is done: a bad file (corrupt, too large, not an
    image) gets its message and the batch goes on."""
    paths = [Path(p) for p in paths]
    for path, target in zip(paths, output_paths(paths, out_dir)):
        start = time.perf_counter()  # not upscaler.last_seconds: another request may share the upscaler
        try:
            upscale_file(path, upscaler, out_dir, max_pixels=max_pixels, target=target)
        except Exception as exc:  # one bad file must not end the batch
            # ImageError is a ValueError: its message already says what is wrong with the file
            message = str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
            yield FileOutcome(path, error=message if str(path) in message else f"{path}: {message}")
        else:
            yield FileOutcome(path, target, time.perf_counter() - start)
