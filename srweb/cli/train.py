"""``srweb train`` (foreground, tracked) and the training flags ``srweb jobs submit`` shares."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path

from srweb.train.config import TrainConfig
from srweb.weights.files import training_chain

# CLI flag -> TrainConfig field, for every hyperparameter a user sets on the command line.
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_FLAGS = (
    "scale",
    "data",
    "val_data",
    "patch_size",
    "batch_size",
    "iterations",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "lr_step",
    "lr_gamma",
    "min_lr",
    "grad_clip",
    "clip_mode",
    "loss",
    "adv_weight",
    "ema",
    "teacher",
    "teacher_weight",
    "pretrained",
    "vgg_weights",
    "val_interval",
    "ckpt_interval",
    "seed",
    "device",
    "precision",
    "num_workers",
    "tag",
    "name",
    "degradation",
    "val_degradation",
)
_HELP = {
    "data": "training images: a folder, or a name under the data root (default: General-100 when the "
    "data root has it, else the built-in sample set)",
    "val_data": "validation images, as --data (default: Set5; '' for none)",
    "ema": "keep an exponential moving average of the weights with this decay (e.g. 0.999; 0 = off); "
    "validation, the best checkpoint and the export use the average",
    "teacher": "distil from these weights (a name, NAME+ for its self-ensemble, or a card; any scale): "
    "the pixel loss also pulls towards the teacher's output, computed once per training image",
    "teacher_weight": "the teacher's share of the pixel loss, in (0, 1] (default 0.5; HR gets the rest)",
    "degradation": "how training LR is made from HR: bicubic (the classic LR, default), jpeg (photos: half clean, half "
    "JPEG quality 40-95) or realistic (Real-ESRGAN's second-order blur/resize/noise/JPEG)",
    "val_degradation": "the `srweb eval --degradation` validation and the best checkpoint use (default auto: "
    "jpeg75 for --degradation jpeg, realistic for realistic, else the classic LR)",
    "pretrained": "initialise from these weights (a card or .safetensors; shape-matching tensors); "
    "the data still comes from --data",
}


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="architecture (see `srweb models`)")
    p.add_argument("--from-card", help="reproduce the run recorded in a weights card (NAME.json)")
    p.add_argument("--config", help="a TrainConfig JSON file")
    for name in _FLAGS:
        kind = {int: int, float: float}.get(_type_of(name), str)
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None, help=_HELP.get(name))
    p.add_argument(
        "--degradation-config",
        dest="degradation_config",
        metavar="JSON",
        help='overrides of the --degradation preset, e.g. \'{"final": {"jpeg": {"quality": [50, 95]}}}\' '
        "(keys: clean_prob, first, second, final; docs/degradations.md)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture override, e.g. num_blocks=8 (JSON values)",
    )
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None)
    p.add_argument("--scale-augment", dest="scale_augment", action="store_true", default=None)
    p.add_argument(
        "--teacher-unlabelled",
        dest="teacher_unlabelled",
        action="store_true",
        default=None,
        help="with --teacher: also train on the training images as they are, as LR inputs (scale x "
        "the pixels of their LR), with the teacher's output as the only target",
    )
    p.add_argument(
        "--freeze-bn",
        dest="freeze_bn",
        action="store_true",
        default=None,
        help="BatchNorm layers normalise with their running statistics and keep them (training "
        "then optimises the network inference runs; for fine-tuning BatchNorm models such as "
        "SRResNet)",
    )
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=None)


def _type_of(name: str) -> type:
    annotation = str(_FIELDS[name].type)
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a TrainConfig from --from-card / --config and the flags that override it."""
    base: dict = {}
    if args.from_card:
        stages = card_stages(json.loads(Path(args.from_card).read_text()))
        if not stages:
            raise ValueError(f"{args.from_card}: card has no training config to reproduce")
        base = stages[-1]
        if getattr(args, "degradation", None) is not None:
            base["degradation_config"] = {}  # the card's chain is its own preset's, spelled out
    if args.config:
        base.update(json.loads(Path(args.config).read_text()))
    for name in (
        *_FLAGS,
        "augment",
        "scale_augment",
        "teacher_unlabelled",
        "freeze_bn",
        "channels_last",
        "degradation_config",
    ):
        value = getattr(args, name, None)
        if value is not None:
            base[name] = value
    if args.model:
        base["model"] = args.model
    if "model" not in base:
        raise ValueError("--model is required (or --from-card / --config)")
    overrides = dict(base.get("overrides") or {})
    for item in args.override:
        key, _, raw = item.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    base["overrides"] = overrides
    if args.from_card and args.name is None:
        base["name"] = None
    return TrainConfig.from_dict(base)


def card_stages(card: dict) -> list[dict]:
    """The training configs that made a card, oldest first (a fine-tuned card records its parent's),
    each pinned to the precision it ran in: ``auto`` would pick another on a host with or without bf16."""
    stages = []
    for stage in training_chain(card):
        config = dict(stage["config"])
        if config.get("precision", "auto") == "auto" and stage.get("precision"):
            config["precision"] = stage["precision"]
        stages.append(config)
    return stages


def replay_parents(card_path: str, run_dir: Path, precision: str | None = None) -> Path | None:
    """Retrain the runs a fine-tuned card started from (each from the one before), in ``run_dir/stage-N``,
    each in the precision it ran in, or in ``precision`` when given (the user's ``--precision``).

    Returns the last parent's exported card, the ``pretrained`` of the card's own run (None when the
    card was trained from scratch).
    """
    from srweb.train.trainer import Trainer

    parents, pretrained = card_stages(json.loads(Path(card_path).read_text()))[:-1], None
    for i, stage in enumerate(parents):
        cfg = TrainConfig.from_dict(
            {
                **stage,
                "name": None,
                "precision": precision or stage.get("precision", "auto"),
                "pretrained": str(pretrained) if pretrained else stage.get("pretrained"),
            }
        )
        stage_dir = run_dir / f"stage-{i + 1}"
        print(f"stage {i + 1}/{len(parents) + 1}: {cfg.resolved().name}")
        card = Trainer(cfg, stage_dir).train().card
        if card is None:
            raise RuntimeError(f"stage {i + 1} did not finish")
        pretrained = stage_dir / "export" / f"{card.name}.json"
    return pretrained


def warn_slow_replay(card_path: str, stages: list[dict], cfg: TrainConfig, precision: str | None) -> None:
    """Tell the user when a card's bf16 stages (:func:`card_stages`) will replay on a CPU without native
    bf16 (emulated: many times slower) and how to replay them in fp32 instead."""
    from srweb.config import resolve_device
    from srweb.inference.upscaler import cpu_supports_bf16

    pinned = precision or ("bf16" if any(s.get("precision") == "bf16" for s in stages) else None)
    if pinned == "bf16" and resolve_device(cfg.device) == "cpu" and not cpu_supports_bf16():
        print(
            f"note: {card_path} was trained in bf16, which this CPU emulates (slow); "
            f"--precision fp32 replays it in fp32 instead",
            file=sys.stderr,
        )


def default_run_dir(cfg: TrainConfig) -> Path:
    """The folder of a run without ``--run-dir`` that is not tracked (or runs under torchrun):
    ``runs/NAME_itN``. The name spells the main hyperparameters and the suffix the length, so the same
    command continues its run while a longer one starts its own (other settings that share the name
    are refused there, see :mod:`srweb.train.resume`)."""
    return Path("runs") / f"{cfg.name}_it{cfg.iterations}"


def check_run_dir(cfg: TrainConfig, run_dir: Path, hint: str = "") -> None:
    """Refuse a folder whose checkpoint ``cfg`` may not continue: a run that finished there, or a
    run with other settings (:mod:`srweb.train.resume`). Raises ConfigError."""
    from srweb.train.resume import check_resume, read_saved_run, refuse_finished

    saved = read_saved_run(run_dir)
    if saved is not None:
        refuse_finished(saved, run_dir, cfg)
        check_resume(saved, cfg, run_dir, hint)


def start_tracked_run(session, cfg: TrainConfig, run_dir: Path | None) -> tuple[int, Path]:
    """The run row a foreground training records into, marked running; returns (id, run folder).

    In a folder another run trained in, the folder's last run continues when it failed or was
    cancelled with this same config (one run, one curve). A config that may continue its checkpoint
    without being the same (more iterations, or other :data:`~srweb.train.resume.OPERATIONAL`
    settings) starts a new run from it that records which run and checkpoint that was.

    Raises:
        ValueError: the folder's last run is queued, running or finished (its files stay its own), or
            its checkpoint holds a run of other settings.
    """
    from srweb.track.runs import latest_run_in, mark_orphans, reopen_run, set_status
    from srweb.train import jobs
    from srweb.train.resume import check_resume, differences, read_saved_run, refuse_finished

    folder = run_dir.resolve() if run_dir is not None else None
    previous = None
    if folder is not None:
        mark_orphans(session)  # a run killed with its terminal is not taken for a live one
        previous = latest_run_in(session, str(folder))
    if previous is not None and previous.status in ("queued", "running"):
        raise ValueError(
            f"{run_dir} belongs to run {previous.id}, which is {previous.status}; "
            f"wait for it or cancel it (srweb jobs cancel {previous.id})"
        )
    if previous is not None and previous.status == "finished":
        raise ValueError(
            f"{run_dir} holds run {previous.id}, which finished; to train it further, copy the "
            f"folder and pass the copy as --run-dir, or start from its weights with --pretrained; "
            f"to train anew, pass a new --run-dir"
        )
    saved = read_saved_run(folder) if folder is not None else None
    if saved is not None:
        refuse_finished(saved, run_dir, cfg)  # finished without a record here (untracked, or a deleted run)
        hint = ""
        if (
            previous is not None
            and not differences(saved.config, previous.config)
            and (previous.config.get("iterations") == saved.iterations)
        ):  # the checkpoint is that run's
            hint = f"continue run {previous.id} as it was with `srweb jobs resume {previous.id}`"
        check_resume(saved, cfg, run_dir, hint)
    if previous is not None and previous.config == json.loads(json.dumps(cfg.to_dict())):
        run = reopen_run(session, previous.id)
    else:
        run = jobs.create_tracked_run(session, cfg)
        run.log_path = None  # its output goes to the terminal running it, not to a log file
        if folder is not None:
            run.run_dir = str(folder)
            if (folder / "last.pt").exists():
                run.resumed_from = str(folder / "last.pt")
                run.parent_id = previous.id if previous is not None else None
    set_status(session, run.id, "running")
    return run.id, Path(run.run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    from srweb.train import jobs

    cfg = jobs.check_config(config_from_args(args))
    stages = card_stages(json.loads(Path(args.from_card).read_text())) if args.from_card else []
    if stages:
        warn_slow_replay(args.from_card, stages, cfg, args.precision)
    replay = len(stages) > 1
    # A finished folder is refused before replaying a card's earlier stages (a replay changes pretrained)
    # and before a tracked run is recorded; an untracked single stage gets every rule below.
    if not args.background and ((args.run_dir and not args.no_track) or (args.no_track and replay)):
        from srweb.train.resume import read_saved_run, refuse_finished

        folder = Path(args.run_dir or default_run_dir(cfg))
        refuse_finished(read_saved_run(folder), folder, None if replay else cfg)
    if replay:
        if args.background:
            raise ValueError(f"{args.from_card} was fine-tuned from other runs; reproduce it in the foreground")
        parent = replay_parents(args.from_card, Path(args.run_dir or default_run_dir(cfg)), args.precision)
        cfg = dataclasses.replace(cfg, pretrained=str(parent))
    if args.background:
        run_id = jobs.submit(cfg)
        print(f"queued run {run_id} ({cfg.name}); follow it with `srweb jobs logs {run_id}`")
        return 0
    result, run_id, run_dir = _train_in_foreground(cfg, args)
    summary = {
        "run_id": run_id,
        "status": result.status,
        "step": result.step,
        "best_psnr": result.best_psnr,
        "wall_seconds": round(result.wall_seconds, 1),
        "weights": result.card.name if result.card else None,
        "run_dir": str(run_dir),
    }
    print(json.dumps(summary))
    return 0 if result.status == "finished" else 3


def _stop_on_signals() -> threading.Event:
    """An event SIGTERM and a first Ctrl-C set (the trainer saves a checkpoint and stops); a second
    Ctrl-C quits at once. Installed before the run row exists, so it is never left 'running'."""
    stop = threading.Event()

    def interrupt(*_) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping: saving a checkpoint to resume from (Ctrl-C again to quit at once)", file=sys.stderr)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, interrupt)
    return stop


def _train_in_foreground(cfg: TrainConfig, args: argparse.Namespace):
    """Train here, tracked (rank 0 records one run row) unless --no-track; returns (result, run id, folder)."""
    from srweb.track.db import init_db, write_transaction
    from srweb.train.session import train_tracked
    from srweb.train.trainer import Trainer, distributed_env

    stop = _stop_on_signals()
    run_id, run_dir = None, Path(args.run_dir) if args.run_dir else None
    rank, _, world = distributed_env()
    if world > 1:  # under torchrun every process must resume from and save to the same folder
        run_dir = run_dir or default_run_dir(cfg)
    if not args.no_track and rank == 0:  # one run row per training, not one per process
        init_db()
        run_id, run_dir = write_transaction(lambda s: start_tracked_run(s, cfg, run_dir))
        return train_tracked(cfg, run_dir, run_id, should_stop=stop.is_set, export_dir=args.export), run_id, run_dir
    run_dir = run_dir or default_run_dir(cfg)  # the same rules without a database: the checkpoint says
    check_run_dir(cfg, run_dir)  # which run the folder holds
    return Trainer(cfg, run_dir, should_stop=stop.is_set, export_dir=args.export).train(), None, run_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (foreground, tracked in the database)")
    add_config_flags(p)
    p.add_argument("--export", help="folder for the final weights + card (default: the run folder)")
    p.add_argument("--run-dir", help="folder for checkpoints (reuse one to resume)")
    p.add_argument("--background", action="store_true", help="queue as a background job instead")
    p.add_argument("--no-track", action="store_true", help="do not record the run in the database")
    p.set_defaults(func=cmd_train)
