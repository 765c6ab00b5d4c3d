"""Which run folders a training may continue in.

A run folder holds one run: its checkpoint ``last.pt`` records the config it trains, the step it
reached, the folder it was saved in and whether the run finished (exported its weights). Training
into a folder with a checkpoint continues that run, so the requested config must be the saved one
in everything that shapes the weights (:data:`OPERATIONAL` settings may differ). ``iterations``
may change while the run has not finished, to a total no smaller than the steps already trained,
when the steps trained so far do not depend on it (a constant learning rate, or a step schedule
with an explicit ``lr_step``; not DRCN's decaying recursive supervision): the run is then exactly
the start of a run of the new length. A run that finished in its folder is never trained further
there (:func:`refuse_finished`): its checkpoint and exported weights stay its own; a copy of the
folder may be extended.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srweb.train.config import ConfigError, TrainConfig
from srweb.data.samples import benchmark_path

OPERATIONAL = ("ckpt_interval", "num_workers", "device", "channels_last", "name", "tag")
"""Settings that change how a run is carried out or named, not the weights it trains."""

_PATHS = ("data", "val_data", "pretrained")


@dataclass
class SavedRun:
    """What a run folder's ``last.pt`` says about the run in it."""

    step: int
    config: dict[str, Any]
    folder: str | None  # where it was saved (absolute); None in checkpoints older than this field
    exported: bool  # the run finished and exported its weights (older checkpoints: step >= iterations)

    @property
    def iterations(self) -> int:
        return int(self.config.get("iterations", 0))

    def finished_in(self, folder: str | Path) -> bool:
        """The run finished here (not in a folder this one was copied from)."""
        return self.exported and (self.folder is None or self.folder == str(Path(folder).resolve()))


def read_saved_run(run_dir: str | Path) -> SavedRun | None:
    """The run recorded by ``run_dir/last.pt``, or None without one. Memory-mapped: cheap for large models."""
    import torch  # heavy: reading which run a folder holds must stay quick for the CLI

    path = Path(run_dir) / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say so, do not train over it
        raise ConfigError(f"{path}: unreadable checkpoint ({type(exc).__name__}); pass a new --run-dir") from None
    step, config = int(state.get("step", 0)), dict(state.get("config") or {})
    exported = state.get("exported")
    if exported is None:  # before checkpoints recorded it: a run that reached its end had exported
        exported = step >= int(config.get("iterations", step + 1))
    return SavedRun(step=step, config=config, folder=state.get("run_dir"), exported=bool(exported))


def _normal(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with every field (defaults for ones an older checkpoint lacks), JSON-normalised."""
    defaults = {
        f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        for f in dataclasses.fields(TrainConfig)
    }
    return json.loads(json.dumps({**defaults, **config}, default=str))


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key in _PATHS and isinstance(a, str) and isinstance(b, str) and a and b:
        return (
            _where(key, a) == _where(key, b) is not None
        )  # one folder: a name under the data root, relative, absolute
    return False


def _where(key: str, value: str) -> Path | None:
    """The file or folder a path setting names (data folders as training resolves them), or None."""
    from srweb.weights.files import WeightsError, resolve_weights  # torch: heavy (see read_saved_run)

    try:
        if key == "pretrained":  # a weights name or a path to its card or tensors (never fetched from the Hub here)
            return None if value.startswith("hf://") else resolve_weights(value)[0].resolve()
        return benchmark_path(value).resolve()
    except (ValueError, OSError, WeightsError):
        return None


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """``key: saved -> wanted`` for each setting (not operational, not iterations) that differs."""
    saved, wanted = _normal(saved), _normal(wanted)
    return [
        f"{key} {saved.get(key)!r} -> {wanted.get(key)!r}"
        for key in sorted(set(saved) | set(wanted))
        if key not in (*OPERATIONAL, "iterations") and not _same(key, saved.get(key), wanted.get(key))
    ]


def _depends_on_iterations(cfg: TrainConfig) -> str | None:
    """Why the steps of ``cfg`` change with its total ``iterations`` (None when they do not)."""
    if cfg.schedule == "cosine":
        return "its cosine learning rate is spread over the iterations"
    if cfg.schedule == "step" and not cfg.lr_step:
        return "its step schedule decays at half the iterations (no lr_step)"
    if cfg.recursive_alpha:
        import torch  # heavy: reading which run a folder holds must stay quick for the CLI

        from srweb.models import create_model  # torch: heavy (see read_saved_run)

        with torch.device("meta"):
            supervised = hasattr(create_model(cfg.model, cfg.scale, **cfg.overrides), "forward_with_supervision")
        if supervised:
            return f"{cfg.model}'s recursive supervision decays over the iterations"
    return None


def check_resume(saved: SavedRun, cfg: TrainConfig, run_dir: str | Path, hint: str = "") -> None:
    """Raise :class:`ConfigError` unless a training of ``cfg`` may continue the run ``saved`` in ``run_dir``.

    ``hint`` ends the message when the run can be continued as it was (e.g. ``srweb jobs resume 3``).
    """
    advice = f"pass a new --run-dir to train these settings{f', or {hint}' if hint else ''}"
    changed = differences(saved.config, cfg.to_dict())
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run (step {saved.step} of {saved.iterations}) with other settings: "
            f"{', '.join(changed)}; {advice}"
        )
    if cfg.iterations == saved.iterations:
        return
    if cfg.iterations < saved.step:
        raise ConfigError(
            f"{run_dir} holds a run already trained for {saved.step} steps, more than iterations "
            f"{cfg.iterations}; {advice}"
        )
    reason = _depends_on_iterations(cfg)
    if reason:
        raise ConfigError(
            f"{run_dir} holds a run of {saved.iterations} iterations (at step {saved.step}); it cannot "
            f"become one of {cfg.iterations}: {reason}; {advice}"
        )


def refuse_finished(saved: SavedRun | None, run_dir: str | Path, cfg: TrainConfig | None = None) -> None:
    """Raise :class:`ConfigError` when ``saved`` finished in ``run_dir``: its files stay its own. The
    message names the settings ``cfg`` differs in, if any."""
    if saved is None or not saved.finished_in(run_dir):
        return
    changed = differences(saved.config, cfg.to_dict()) if cfg is not None else []
    if cfg is not None and cfg.iterations != saved.iterations:
        changed.append(f"iterations {saved.iterations} -> {cfg.iterations}")
    other = f" with other settings ({', '.join(changed)})" if changed else ""
    raise ConfigError(
        f"{run_dir} holds a run that finished ({saved.step} of {saved.iterations} steps){other}; to "
        f"train it further, copy the folder and pass the copy as --run-dir, or start from its weights "
        f"with --pretrained; to train anew, pass a new --run-dir"
    )
