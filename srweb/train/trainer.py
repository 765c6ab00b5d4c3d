"""The training loop: mixed precision, channels_last, resume, validation, export, DDP.

One command runs single-process or under ``torchrun`` (DistributedDataParallel with a
DistributedSampler; gloo on CPU, nccl on CUDA). Only rank 0 validates, logs and saves.
"""

from __future__ import annotations

import copy
import math
import os
import random
import socket
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from srweb.config import resolve_device
from srweb.data.samples import benchmark_path
from srweb.data.sampling import StepBatches
from srweb.imaging.fileio import atomic_write
from srweb.inference.upscaler import Upscaler, guard_verdict, pick_precision
from srweb.models import create_discriminator, create_model
from srweb.train.config import ConfigError, TrainConfig
from srweb.train.losses import VGGPerceptualLoss, adversarial_loss, pixel_loss
from srweb.train.resume import check_resume, read_saved_run, refuse_finished
from srweb.train.teacher import Teacher, load_teacher
from srweb.weights.files import WeightsCard, count_params, load_weights, save_weights
from srweb.data.pairs import PatchPairs
from srweb.evaluation.evaluate import evaluate

LOG_INTERVAL = 10


class MetricLogger(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...
    def flush(self) -> None: ...
    def resumed(self, step: int) -> None: ...  # the run continues from its checkpoint at ``step``


@dataclass
class TrainResult:
    status: str  # finished | cancelled
    step: int
    best_psnr: float | None
    wall_seconds: float
    last_metrics: dict[str, float] = field(default_factory=dict)
    card: WeightsCard | None = None


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _sweep_temp_files(run_dir: Path) -> None:
    """Remove half-written checkpoints of a killed worker (``.last.pt.*.tmp``, ...) before resuming."""
    for name in ("last.pt", "best.safetensors"):
        for stale in run_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def card_metric(result) -> dict[str, Any]:
    """The summary of an :class:`~srweb.evaluation.evaluate.EvalResult` stored in a weights card."""
    return {
        "dataset": result.dataset,
        "scale": result.scale,
        "psnr": round(result.psnr, 4),
        "ssim": round(result.ssim, 5),
        "protocol": result.protocol,
    }


def quality_guard(
    model: nn.Module, exact, val_dir, device: str, tolerance_db: float = 0.01, degradation: str = ""
) -> dict[str, Any]:
    """Compare the fast inference path with fp32 on the validation set (LR made as ``exact``'s, by
    ``degradation``); the card keeps the verdict."""
    fast = Upscaler(model, device=device, precision="auto")
    if fast.precision == "fp32":
        return {"fast_precision": "fp32", "fast_path_ok": True}
    try:
        delta = evaluate(fast.upscale, val_dir, exact.scale, degradation=degradation).psnr - exact.psnr
    finally:
        model.to(memory_format=torch.contiguous_format)
    return guard_verdict(fast.precision, delta, exact.dataset, device, tolerance_db)


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of the base learning rate at ``step`` for the configured schedule."""
    if cfg.schedule == "step":
        return cfg.lr_gamma ** (step // (cfg.lr_step or max(1, cfg.iterations // 2)))
    if cfg.schedule == "cosine":
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, cfg.iterations) / cfg.iterations))
    return 1.0


def distributed_env() -> tuple[int, int, int]:
    """``(RANK, LOCAL_RANK, WORLD_SIZE)`` as torchrun sets them; ``(0, 0, 1)`` for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


class PreparationStopped(Exception):
    """A stop request arrived while the training patches were being prepared."""


def build_datasets(
    cfg: TrainConfig, model: nn.Module, teacher: Teacher | None = None, should_stop: Callable[[], bool] | None = None
):
    """Training patches (with the teacher's outputs, if given) and the validation folder for ``model``
    (channels and pre-upsampling). ``should_stop`` is polled before each teacher pass (minutes on a CPU
    for a self-ensemble): when it returns True, :class:`PreparationStopped` is raised."""

    def teach(lr: np.ndarray) -> np.ndarray:
        if should_stop is not None and should_stop():
            raise PreparationStopped
        return teacher.upscale(lr)

    channels = "y" if model.in_channels == 1 else "rgb"
    train_set = PatchPairs(
        benchmark_path(cfg.data),
        cfg.scale,
        cfg.patch_size,
        channels=channels,
        pre_upsample=model.upsampling == "pre",
        augment=cfg.augment,
        scales_aug=(1.0, 0.9, 0.8, 0.7, 0.6) if cfg.scale_augment else None,
        teacher=teach if teacher else None,
        teacher_id=teacher.cache_id if teacher else "teacher",
        unlabelled=cfg.teacher_unlabelled,
        degradation=cfg.degradation_config,
    )
    val_dir = benchmark_path(cfg.val_data) if cfg.val_data else None
    return train_set, val_dir


class _MetricWindow:
    """Losses averaged over the steps since the last log line, with speed and loader wait."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps, self.wait, self.started = 0, 0.0, time.perf_counter()

    def reset(self) -> None:
        self.sums, self.steps, self.wait, self.started = {}, 0, 0.0, time.perf_counter()

    def add(self, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1

    def close(self, **extra: float) -> dict[str, float]:
        """The window's averages (plus ``extra``), and a new window starts."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        metrics = {key: value / self.steps for key, value in self.sums.items()}
        metrics.update(extra, it_per_s=self.steps / elapsed, loader_wait=self.wait / elapsed)
        self.reset()
        return metrics


class Trainer:
    """Train one run of ``config`` in ``run_dir`` (checkpoints ``last.pt``, ``best.safetensors``).

    Args:
        config: the run's hyperparameters (defaults are resolved and validated here).
        run_dir: folder for checkpoints and exports; reused by :meth:`train` to resume.
        logger: receives metrics (loss, lr, val_psnr, ...); e.g. the tracker's buffer.
        should_stop: polled every step; when it returns True the trainer saves and stops.
        export_dir: where final weights + card go (default: ``run_dir/export``).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | os.PathLike,
        *,
        logger: MetricLogger | None = None,
        should_stop: Callable[[], bool] | None = None,
        export_dir: str | os.PathLike | None = None,
        run_id: int | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = config.resolved().validate()
        self.run_dir = Path(run_dir)
        self.wall_before, self._started = 0.0, time.perf_counter()  # training time of earlier (resumed) sessions
        self.export_dir = Path(export_dir) if export_dir else self.run_dir / "export"
        self.logger = logger
        self.should_stop = should_stop or (lambda: False)
        self.run_id = run_id
        self.progress = progress
        self.rank, self.local_rank, self.world = distributed_env()
        self.device = resolve_device(self.cfg.device)
        if self.device == "cuda" and self.world > 1:
            self.device = f"cuda:{self.local_rank}"
        self.precision = pick_precision(self.device, self.cfg.precision)
        self.parent: dict[str, Any] | None = None
        self.parent_speed: dict[str, Any] | None = None  # a same-architecture starting card's bench speed
        self.best_step: int | None = None  # step of best.safetensors
        # Built by setup() (train() runs it); validate() builds the model itself when called first.
        self.model: nn.Module | None = None
        self.ema: AveragedModel | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.disc: nn.Module | None = None  # SRGAN's discriminator, its optimizer and the VGG loss
        self.disc_optimizer: torch.optim.Optimizer | None = None
        self.vgg: VGGPerceptualLoss | None = None
        self.scaler = torch.amp.GradScaler(enabled=self.precision == "fp16" and self.device.startswith("cuda"))
        self.teacher: Teacher | None = None
        self.train_set = None
        self.val_dir: Path | None = None
        self.last_eval = None  # the EvalResult of the latest validate()

    # ---- setup -------------------------------------------------------------------------
    def _seed(self) -> None:
        seed = self.cfg.seed + self.rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _build_model(self) -> nn.Module:
        cfg = self.cfg
        if cfg.pretrained:
            source, card = load_weights(cfg.pretrained)
            # The card records its starting point, so the chain of runs stays reproducible.
            self.parent = {"name": card.name, "sha256": card.sha256, "metrics": card.metrics, "training": card.training}
            if card.arch != cfg.model:
                raise ConfigError(f"pretrained {card.name} is {card.arch}, not {cfg.model}")
            if card.scale == cfg.scale:
                model = source
                self.parent_speed = card.inference.get("speed")
            else:
                # The papers' transfer between scales (FSRCNN's shared convolutions, EDSR's x2
                # pre-training): every tensor whose shape fits; the scale-specific ones start fresh.
                model = create_model(cfg.model, cfg.scale, **{**card.config, **cfg.overrides})
                target = model.state_dict()
                fitting = {k: v for k, v in source.state_dict().items() if k in target and target[k].shape == v.shape}
                if not fitting:
                    raise ConfigError(f"pretrained {card.name} shares no tensor with {cfg.model} x{cfg.scale}")
                model.load_state_dict(fitting, strict=False)
        else:
            model = create_model(cfg.model, cfg.scale, **cfg.overrides)
        model = model.to(self.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.freeze_bn and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            warnings.warn(f"freeze_bn: {cfg.model} has no BatchNorm layer, so it changes nothing", stacklevel=3)
        return model

    def _optimizer(self, params) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that validation and export judge: the moving average when the run keeps one."""
        return self.ema.module if self.ema is not None else self.model

    def _stopping(self) -> bool:
        """``should_stop()``, agreed by all torchrun processes: when one stops, all stop at the same step."""
        stop = bool(self.should_stop())
        if self.world > 1:
            flag = torch.tensor([int(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _train_mode(self) -> None:
        """Put the model in training mode; with ``freeze_bn`` its BatchNorm layers stay in eval mode."""
        self.model.train()
        if self.cfg.freeze_bn:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _autocast(self):
        if self.precision == "fp32" or self.device == "mps":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    # ---- checkpoints ---------------------------------------------------------------------
    def _state(self, step: int, best: float | None) -> dict[str, Any]:
        np_state = np.random.get_state()
        state = {
            "step": step,
            "best_psnr": best,
            "best_step": self.best_step,
            "config": self.cfg.to_dict(),
            "wall_seconds": self.wall_seconds(),
            "run_dir": str(self.run_dir.resolve()),
            "exported": False,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_python": random.getstate(),
            "rng_numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        if self.scaler.is_enabled():  # fp16 on CUDA: the loss scale carries over a resume
            state["scaler"] = self.scaler.state_dict()
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def wall_seconds(self) -> float:
        """Training wall time of the run so far, over every session that resumed it."""
        return self.wall_before + time.perf_counter() - self._started

    def save_checkpoint(self, step: int, best: float | None) -> Path:
        path = self.run_dir / "last.pt"
        _atomic_torch_save(self._state(step, best), path)
        return path

    def _restore(self) -> tuple[int, float | None]:
        path = self.run_dir / "last.pt"
        if not path.exists():
            return 0, None
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        if self.disc is not None and "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        torch.set_rng_state(state["rng_torch"].cpu())
        random.setstate(state["rng_python"])
        kind, key, *rest = state["rng_numpy"]
        np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        self.wall_before = float(state.get("wall_seconds", 0.0))
        self.best_step = state.get("best_step")
        return int(state["step"]), state["best_psnr"]

    # ---- validation ----------------------------------------------------------------------
    def validate(self, model: nn.Module | None = None) -> dict[str, float]:
        """PSNR/SSIM of ``model`` (default: :attr:`eval_model`) on the validation folder under the SR protocol."""
        if self.val_dir is None and self.cfg.val_data:
            self.val_dir = benchmark_path(self.cfg.val_data)
        if self.val_dir is None:
            return {}
        if model is None and self.model is None:
            self.model = self._build_model()  # before train(): the starting (or pretrained) model
        judged = model if model is not None else self.eval_model
        upscaler = Upscaler(judged, device=self.device, precision="fp32", channels_last=self.cfg.channels_last)
        try:
            result = evaluate(
                upscaler.upscale,
                self.val_dir,
                self.cfg.scale,
                name=Path(self.val_dir).name,
                degradation=self.cfg.eval_degradation,
            )
        finally:
            self._train_mode()
        self.last_eval = result
        return {"val_psnr": result.psnr, "val_ssim": result.ssim}

    # ---- the loop ------------------------------------------------------------------------
    def _log(self, step: int, values: dict[str, float]) -> None:
        if self.logger is not None and self.rank == 0:
            self.logger.log(step, values)

    def train(self) -> TrainResult:
        """Run (or resume) until ``iterations`` or a stop request; export weights when finished.

        A checkpoint in the run folder is continued only with the same settings (see
        :mod:`srweb.train.resume`); a run that finished there is exported again, not trained further.

        Raises:
            ConfigError: the folder holds a run this config may not continue.
        """
        start_step, best = self.setup()
        try:
            # Polled locally: torchrun processes agree on stopping in the loop, not here.
            self.train_set, self.val_dir = build_datasets(
                self.cfg, self.model, self.teacher, self.should_stop if self.world == 1 else None
            )
        except PreparationStopped:  # cancelled during the teacher pass: nothing trained, the checkpoint stands
            self._started = time.perf_counter()
            self.save_checkpoint(start_step, best)
            if self.logger is not None:
                self.logger.flush()
            return TrainResult("cancelled", start_step, best, self.wall_seconds(), {}, None)
        status, step, best, metrics = self.loop(start_step, best)
        return self.finish(status, step, best, metrics)

    def setup(self) -> tuple[int, float | None]:
        """Check the run folder, join the process group, build the model, optimizers and teacher, and
        restore the checkpoint; returns (step to start from, best PSNR so far)."""
        cfg = self.cfg
        saved = read_saved_run(self.run_dir)
        if saved is not None:
            check_resume(saved, cfg, self.run_dir)
            if cfg.iterations != saved.iterations:
                refuse_finished(saved, self.run_dir, cfg)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.startswith("cuda") else "gloo")
        self._seed()
        self.model = self._build_model()
        # Polyak/EMA averaging (BasicSR's ema_decay): BatchNorm statistics are averaged too.
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
        )
        self.optimizer = self._optimizer(self.model.parameters())
        if cfg.loss.startswith("srgan"):
            self.disc = create_discriminator().to(self.device)
            self.disc_optimizer = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
            if cfg.loss == "srgan-vgg54":
                self.vgg = VGGPerceptualLoss(cfg.vgg_weights).to(self.device)
        if self.rank == 0:
            _sweep_temp_files(self.run_dir)
        start_step, best = self._restore()
        if not start_step and self.rank == 0:  # a killed run's best weights belong to no checkpoint
            (self.run_dir / "best.safetensors").unlink(missing_ok=True)
        if start_step and self.logger is not None and self.rank == 0:
            self.logger.resumed(start_step)
        self.teacher = load_teacher(cfg, self.device) if cfg.teacher else None
        return start_step, best

    def _loader(self, start_step: int) -> DataLoader:
        cfg = self.cfg
        batches = StepBatches(
            len(self.train_set), cfg.batch_size, cfg.iterations, seed=cfg.seed, rank=self.rank, start=start_step
        )
        # The loader's own generator (not the global RNG, restored on resume) seeds its workers.
        return DataLoader(
            self.train_set,
            batch_sampler=batches,
            num_workers=cfg.num_workers,
            pin_memory=self.device.startswith("cuda"),
            persistent_workers=cfg.num_workers > 0,
            generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + start_step),
        )

    def _network(self) -> nn.Module:
        """The module the loop calls: the model, wrapped in DDP under torchrun."""
        if self.world == 1:
            return self.model
        if self.disc is not None:
            # DDP syncs the generator only; the discriminator (seeded per rank) must start as rank 0's.
            for tensor in self.disc.state_dict().values():
                dist.broadcast(tensor, 0)
        device_ids = [self.local_rank] if self.device.startswith("cuda") else None
        return nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)

    def _batch(self, data_iter) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        batch = next(data_iter)
        lr_img = batch["lr"].to(self.device, non_blocking=True)
        hr_img = batch["hr"].to(self.device, non_blocking=True)
        teacher_img = batch["teacher"].to(self.device, non_blocking=True) if "teacher" in batch else None
        if self.cfg.channels_last:
            lr_img = lr_img.contiguous(memory_format=torch.channels_last)
        return lr_img, hr_img, teacher_img

    def loop(self, start_step: int, best: float | None) -> tuple[str, int, float | None, dict[str, float]]:
        """Train from ``start_step`` until ``iterations`` or a stop request, validating and checkpointing
        on their intervals; returns (status, step reached, best PSNR, the last metrics logged)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", cfg.lr)
        # A resumed run continues its lr curve at start_step (no replay, no optimizer-order warning).
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(cfg, s), last_epoch=start_step - 1
        )
        net, data_iter = self._network(), iter(self._loader(start_step))
        criterion = pixel_loss("l2" if cfg.loss.startswith("srgan") else cfg.loss)
        supervised = hasattr(self.model, "forward_with_supervision")
        step, self._started = start_step, time.perf_counter()
        window = _MetricWindow()
        bar = tqdm(
            total=cfg.iterations,
            initial=step,
            desc=cfg.name,
            disable=not self.progress or self.rank != 0,
            dynamic_ncols=True,
        )
        status, metrics = "finished", {}
        self._train_mode()
        while step < cfg.iterations:
            if self._stopping():
                status = "cancelled"
                break
            t0 = time.perf_counter()
            lr_img, hr_img, teacher_img = self._batch(data_iter)
            window.wait += time.perf_counter() - t0
            losses = self._step(net, lr_img, hr_img, criterion, self.scaler, supervised, step, teacher_img)
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            scheduler.step()
            step += 1
            window.add(losses)
            if step % LOG_INTERVAL == 0 or step == cfg.iterations:
                metrics = window.close(lr=self.optimizer.param_groups[0]["lr"])
                self._log(step, metrics)
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", psnr=f"{best or 0:.2f}")
            bar.update(1)
            if self.rank == 0 and (step % cfg.val_interval == 0 or step == cfg.iterations):
                best = self._validate_at(step, best, metrics, bar)
            if self.rank == 0 and step % cfg.ckpt_interval == 0:
                self.save_checkpoint(step, best)
        bar.close()
        return status, step, best, metrics

    def _validate_at(self, step: int, best: float | None, metrics: dict[str, float], bar) -> float | None:
        """Validate, log, keep ``best.safetensors`` when PSNR improved; returns the best PSNR."""
        val = self.validate()
        if not val:
            return best
        self._log(step, val)
        metrics.update(val)
        if best is None or val["val_psnr"] > best:
            best = val["val_psnr"]
            if self.disc is None:  # a GAN is judged by perception: it ships its last weights
                self._save_best()
                self.best_step = step
        bar.set_postfix(loss=f"{metrics.get('loss', 0):.4g}", psnr=f"{best:.2f}")
        return best

    def finish(self, status: str, step: int, best: float | None, metrics: dict[str, float]) -> TrainResult:
        """Save the last checkpoint, export the weights of a finished run, flush the logger and leave
        the process group."""
        card = None
        if self.rank == 0:
            state = self._state(step, best)
            _atomic_torch_save(state, self.run_dir / "last.pt")
            if status == "finished":
                card = self.export(step, best, self.wall_seconds())
                _atomic_torch_save({**state, "exported": True}, self.run_dir / "last.pt")  # the run is done here
        if self.logger is not None:
            self.logger.flush()
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        return TrainResult(status, step, best, self.wall_seconds(), metrics, card)

    def _step(
        self,
        net,
        lr_img,
        hr_img,
        criterion,
        scaler,
        supervised: bool,
        step: int,
        teacher_img: torch.Tensor | None = None,
    ) -> dict[str, float]:
        cfg = self.cfg
        out: dict[str, float] = {}
        w = cfg.teacher_weight

        def pixel(sr: torch.Tensor) -> torch.Tensor:  # distillation shares the pixel loss between HR and teacher
            loss = criterion(sr.float(), hr_img)
            if teacher_img is None:
                return loss
            out["hr_loss"] = float(loss.detach())  # the last call is the final output's
            return (1 - w) * loss + w * criterion(sr.float(), teacher_img)

        with self._autocast():
            if supervised and self.world == 1:
                sr, intermediates = self.model.forward_with_supervision(lr_img)
                alpha = cfg.recursive_alpha * max(0.0, 1.0 - step / (0.5 * cfg.iterations))
                inter = torch.stack([pixel(i) for i in intermediates]).mean()
                loss = alpha * inter + (1 - alpha) * pixel(sr)
            else:
                sr = net(lr_img)
                loss = pixel(sr)
            if self.disc is not None:
                out["content"] = float(loss.detach())
                if self.vgg is not None:
                    loss = self.vgg(sr.float(), hr_img)
                adv = adversarial_loss(self.disc(sr), real=True)
                loss = loss + cfg.adv_weight * adv
                out["adv"] = float(adv.detach())
        self.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(self.optimizer)
            if cfg.clip_mode == "adjustable":  # VDSR: clip to theta / current lr
                bound = cfg.grad_clip / self.optimizer.param_groups[0]["lr"]
                torch.nn.utils.clip_grad_value_(self.model.parameters(), bound)
            else:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        scaler.step(self.optimizer)
        scaler.update()
        out["loss"] = float(loss.detach())
        if self.disc is not None:
            with self._autocast():
                d_loss = adversarial_loss(self.disc(hr_img), True) + adversarial_loss(self.disc(sr.detach()), False)
            self.disc_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            if self.world > 1:  # one discriminator for all processes: average its gradients as DDP would
                for p in self.disc.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad.div_(self.world)
            self.disc_optimizer.step()
            out["d_loss"] = float(d_loss.detach())
        return out

    def _evaluate_clean(self, model: nn.Module):
        upscaler = Upscaler(model, device=self.device, precision="fp32", channels_last=self.cfg.channels_last)
        return evaluate(upscaler.upscale, self.val_dir, self.cfg.scale, name=Path(self.val_dir).name)

    def _save_best(self) -> None:
        atomic_write(self.run_dir / "best.safetensors", lambda tmp: save_model(self.eval_model, tmp))

    def export(self, step: int, best: float | None, wall: float) -> WeightsCard:
        """Write the final weights (the best validation checkpoint, if any: never for GANs, whose
        best PSNR is the one least changed by the adversarial loss; else the moving average, if
        the run keeps one) with a complete card."""
        cfg = self.cfg
        weights_step = step
        model = copy.deepcopy(self.model)  # the checkpoint keeps the last weights, to train on from
        if (self.run_dir / "best.safetensors").exists():
            load_model(model, str(self.run_dir / "best.safetensors"))
            weights_step = self.best_step
        elif self.ema is not None:
            model.load_state_dict(self.ema.module.state_dict())
        model.eval()
        val = self.validate(model) if self.val_dir is not None else {}
        metrics = [card_metric(self.last_eval)] if val else []
        inference = (
            quality_guard(model, self.last_eval, self.val_dir, self.device, degradation=cfg.eval_degradation)
            if val
            else {}
        )
        if val and cfg.eval_degradation:  # judged on degraded LR: the classic score too, for the card's table
            metrics.insert(0, card_metric(self._evaluate_clean(model)))
        speed = self.parent_speed
        if inference and speed and speed.get("fast_path") == inference.get("fast_path_ok"):
            inference["speed"] = speed  # the same network timed on the same path (srweb bench --store)
        training = {
            "config": cfg.to_dict(),
            "iterations": step,
            "weights_step": weights_step,
            "wall_seconds": round(wall, 1),
            "device": self.device,
            "precision": self.precision,
            "host": socket.gethostname(),
            "run_id": self.run_id,
            "run_name": cfg.name,
            "data": cfg.data,
            "val_data": cfg.val_data,
            "torch": torch.__version__,
            "num_params": count_params(model),
        }
        if self.parent is not None:
            training["parent"] = self.parent
        if self.teacher is not None:
            training["teacher"] = self.teacher.record
        # SRGAN is the srresnet generator trained adversarially: named as the papers name it.
        prefix = "srgan" if cfg.loss.startswith("srgan") else cfg.model
        return save_weights(
            model,
            f"{prefix}-x{cfg.scale}.{cfg.tag}",
            weights_dir=self.export_dir,
            training=training,
            metrics=metrics,
            inference=inference,
        )
