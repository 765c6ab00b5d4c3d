"""Does a training step fit in memory? A lower bound of what one step needs, against what is free.

Autograd keeps the input of every convolution until the backward pass has computed that layer's
weight gradient, so a step holds at least ``batch x input pixels x (elements of all convolution
inputs per pixel)`` values at once, plus, during the backward pass, the gradient of the widest
activation (the peak activation), plus the batch itself, the weights, their gradients and the
optimiser's state. Measured in the trainer on CPU (fp32, the growth of peak RSS per sample between
two batch sizes), a sample took 1.2x (srcnn), 1.4x (espcn, fp32 and bf16) and 1.6x (edsr-baseline)
this estimate, so a batch refused here could not have run; batches near the limit still pass (and
may swap). The SRGAN discriminator and VGG loss are left out (also a lower bound).
"""

from __future__ import annotations

import math
from pathlib import Path

from srweb.train.config import ConfigError, TrainConfig
from srweb.config import resolve_device

GB = 1024**3


def _arch_config(cfg: TrainConfig) -> dict:
    """The architecture overrides the trainer will build: a pretrained card's config, then ``overrides``."""
    if not cfg.pretrained:
        return dict(cfg.overrides)
    try:
        # torch: heavy; jobs.check_config imports this module before it knows it needs torch
        from srweb.weights.files import read_card, resolve_weights

        card = read_card(resolve_weights(cfg.pretrained)[1])
        return dict(card.config) if card.scale == cfg.scale else {**card.config, **cfg.overrides}
    except Exception:  # noqa: BLE001 - check_config reports a bad card elsewhere; estimate with the defaults
        return dict(cfg.overrides)


def activation_profile(cfg: TrainConfig) -> tuple[int, int, float, float, int]:
    """``(channels, input side, convolution input elements per input pixel, peak activation elements
    per input pixel, parameters)`` of the model ``cfg`` trains, from one forward pass on the meta device
    (no memory, no arithmetic: :func:`srweb.inference.upscaler.profile_model`). The input side is the LR patch,
    or the HR patch for pre-upsampling models."""
    import torch  # heavy: jobs.check_config imports this module before it knows it needs torch

    from srweb.inference.upscaler import profile_model  # torch: heavy (see above)
    from srweb.models import create_model  # torch: heavy (see above)

    with torch.device("meta"):
        model = create_model(cfg.model, cfg.scale, **_arch_config(cfg))
    profile = profile_model(model, model.in_channels, model.upsampling)
    side = cfg.patch_size * cfg.scale if model.upsampling == "pre" else cfg.patch_size
    params = sum(p.numel() for p in model.parameters())
    return model.in_channels, side, profile.conv_inputs_per_pixel, profile.elements_per_pixel, params


def step_bytes(cfg: TrainConfig, precision: str = "fp32") -> tuple[int, int]:
    """A lower bound of the memory one training step of ``cfg`` (resolved) needs, in bytes, as
    ``(fixed, per sample)``: the step needs ``fixed + batch_size * per_sample``."""
    channels, side, kept, peak, params = activation_profile(cfg)
    width = 2 if precision in ("bf16", "fp16") else 4  # autocast keeps convolution inputs in 16 bits
    hr = cfg.patch_size * cfg.scale
    targets = 1 + bool(cfg.teacher)  # HR, and the teacher's output
    batch_tensors = channels * (side * side + targets * hr * hr) * 4
    activations = side * side * (kept + peak) * width
    weights = params * 4 * (4 if cfg.optimizer == "adam" else 3)  # weights, gradients, optimiser state
    return int(weights), math.ceil(batch_tensors + activations)


def available_bytes(device: str) -> int | None:
    """Memory a new training process on ``device`` can use now: free GPU memory for CUDA, else
    ``MemAvailable`` of /proc/meminfo (None where neither is known, e.g. macOS or MPS)."""
    if device.startswith("cuda"):
        import torch  # heavy: jobs.check_config imports this module before it knows it needs torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # noqa: BLE001
            return None
    if device != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_step_fits(cfg: TrainConfig) -> None:
    """Refuse a batch whose training step cannot fit in the memory free on the run's device
    (``cfg`` resolved and validated).

    Raises:
        ConfigError: with the estimate, the memory free and the largest batch that might fit.
    """
    from srweb.inference.upscaler import pick_precision  # torch: heavy (see above)

    try:
        device = resolve_device(cfg.device)
    except ValueError:
        return  # an unavailable device is reported by the launcher's device check
    free = available_bytes(device)
    if free is None:
        return
    precision = pick_precision(device, cfg.precision)
    fixed, per_sample = step_bytes(cfg, precision)
    need = fixed + cfg.batch_size * per_sample
    if need <= free:
        return
    largest = max(0, (free - fixed) // per_sample)
    where = "GPU memory free" if device.startswith("cuda") else "memory available"
    raise ConfigError(
        f"batch_size {cfg.batch_size} does not fit in memory: a training step of {cfg.model} x{cfg.scale} at "
        f"patch_size {cfg.patch_size} needs at least {need / GB:.1f} GB (the {precision} activations kept for the "
        f"backward pass), and {device} has {free / GB:.1f} GB {where}; "
        + (
            f"no batch_size above {largest} could fit"
            if largest
            else "not even batch_size 1 fits: use a smaller patch_size"
        )
    )
