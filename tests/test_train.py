"""Training engine: TrainConfig, the Trainer (all model families, resume, SRGAN) and export.

Everything runs on CPU in a few seconds per test: tiny crops of the built-in sample photos / Set5 written
to a temporary folder, small patches and batches, a few dozen iterations.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import srweb
import srweb.train.trainer as trainer_module
from conftest import SET5, crops, hr_photos
from srweb.data.samples import benchmark_path
from srweb.config import get_settings
from srweb.evaluation.evaluate import evaluate
from srweb.models import create_model
from srweb.train.config import ARCH_DEFAULTS, ConfigError, TrainConfig
from srweb.train.jobs import check_config
from srweb.train.trainer import Trainer, lr_factor
from srweb.weights.files import count_params, save_weights
from srweb.weights.table import card_markdown


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``{"train": 4 crops of the sample photos (48 px), "val": 2 crops of Set5 (32 px), "one": one 16 px crop}``."""
    root = tmp_path_factory.mktemp("tiny-data")
    return {
        "train": str(crops(hr_photos(), root / "train", 4, 48)),
        "val": str(crops(SET5, root / "val", 2, 32)),
        "one": str(crops(hr_photos(), root / "one", 1, 16)),
    }


@pytest.fixture
def env(fresh_state):
    return fresh_state


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run several times faster on one thread on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """A MetricLogger keeping every ``(step, values)`` call."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.flushed = 0

    def log(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def flush(self) -> None:
        self.flushed += 1

    def resumed(self, step: int) -> None:
        self.rows = [(s, v) for s, v in self.rows if s <= step]

    def series(self, name: str) -> list[tuple[int, float]]:
        return [(step, values[name]) for step, values in self.rows if name in values]


def _cfg(tiny, model: str, **kw) -> TrainConfig:
    values = dict(
        model=model,
        scale=2,
        data=tiny["train"],
        val_data=tiny["val"],
        patch_size=8,
        batch_size=4,
        iterations=20,
        val_interval=10,
        ckpt_interval=1000,
    )
    values.update(kw)
    return TrainConfig(**values)


# --- TrainConfig -------------------------------------------------------------------------------


def test_config_json_round_trip():
    cfg = TrainConfig(
        model="edsr-baseline",
        scale=3,
        overrides={"num_blocks": 2, "num_features": 16},
        data="General-100",
        val_data=None,
        lr=2e-4,
        schedule="cosine",
        min_lr=1e-6,
        tag="t1",
    )
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg
    resolved = cfg.resolved()
    assert TrainConfig.from_json(resolved.to_json()) == resolved
    assert json.loads(resolved.to_json())["overrides"] == {"num_blocks": 2, "num_features": 16}


@pytest.mark.parametrize("model", sorted(ARCH_DEFAULTS))
def test_resolved_fills_paper_defaults(model):
    cfg = TrainConfig(model=model).resolved()
    for key, value in ARCH_DEFAULTS[model].items():
        assert getattr(cfg, key) == value, key
    assert cfg.optimizer in ("adam", "sgd") and cfg.clip_mode in ("norm", "adjustable")
    assert cfg.name.startswith(f"{model}-x2_") and f"_p{cfg.patch_size}_b16_" in cfg.name
    cfg.validate()


def test_resolved_keeps_explicit_values_and_names_the_run():
    cfg = TrainConfig(model="vdsr", lr=0.01, optimizer="adam", patch_size=20).resolved()
    assert (cfg.lr, cfg.optimizer, cfg.patch_size) == (0.01, "adam", 20)
    assert (cfg.grad_clip, cfg.clip_mode) == (0.4, "adjustable")
    edsr = TrainConfig(model="edsr-baseline").resolved()
    assert edsr.name == "edsr-baseline-x2_f64b16_p48_b16_lr1e-4"  # DESIGN.md's example
    assert (
        TrainConfig(model="edsr-baseline", overrides={"num_blocks": 2})
        .resolved()
        .name.startswith("edsr-baseline-x2_f64b2_")
    )
    assert TrainConfig(model="edsr-baseline", name="mine").resolved().name == "mine"


def test_default_training_data_is_general100_when_present_else_the_sample_set(env, tmp_path, monkeypatch):
    """A run that names no data (e.g. ``srweb train --pretrained W.json``) must not silently train on
    the 8 built-in sample images when General-100 is there; the resolved name is what the card records."""
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()
    assert TrainConfig(model="espcn").resolved().data == "sample"
    crops(hr_photos(), tmp_path / "data" / "General-100", 2, 48)
    assert TrainConfig(model="espcn").resolved().data == "General-100"
    assert TrainConfig(model="espcn", data="sample").resolved().data == "sample"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"scale": 5}, "supports scales"),
        ({"model": "bicubic"}, "baseline"),
        ({"model": "nosuchnet"}, "unknown model"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"loss": "ssim"}, "loss must be one of"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"patch_size": 2}, "patch_size must be >= 4"),
        ({"overrides": {"num_layerz": 3}}, "unknown override"),
        ({"batch_size": "16"}, "batch_size must be an integer"),
        ({"loss": "srgan-mse"}, "srresnet"),
        ({"tag": "../../etc"}, "tag may use"),
        ({"name": "a/b"}, "name may use"),
        ({"ema": 1.0}, r"ema must be in \[0, 1\)"),
        ({"ema": -0.5}, r"ema must be in \[0, 1\)"),
        ({"teacher_weight": 0}, r"teacher_weight must be in \(0, 1\]"),
        ({"teacher_weight": 1.5}, r"teacher_weight must be in \(0, 1\]"),
    ],
)
def test_validation_rejects_impossible_hyperparameters(changes, words):
    cfg = TrainConfig(**{"model": "edsr-baseline", **changes})
    with pytest.raises(ConfigError, match=words):
        cfg.resolved().validate()


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown hyperparameters: colour, learning_rate"):
        TrainConfig.from_dict({"model": "espcn", "learning_rate": 1e-3, "colour": "y"})


def test_check_config_rejects_missing_data_and_patches_too_few_images_hold(env, tiny, monkeypatch):
    with pytest.raises(ConfigError, match="data: .*nowhere.* not found"):
        check_config(TrainConfig(model="espcn", data=str(env / "nowhere"), val_data=None))
    with pytest.raises(ConfigError, match="val_data: "):
        check_config(TrainConfig(model="espcn", data=tiny["train"], val_data="Set99"))
    notes = env / "notes"  # a folder, but of no image: refused before anything is queued
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    (notes / "empty.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"data: .*notes holds no readable image \(nor DIV2K"):
        check_config(TrainConfig(model="espcn", data=str(notes), val_data=None))
    with pytest.raises(ConfigError, match=r"val_data: .*notes holds no readable image$"):
        check_config(TrainConfig(model="espcn", data=tiny["train"], val_data=str(notes)))
    # The crops are 48 px: x2 allows LR patches up to 24; 25 needs 50x50 HR pixels.
    check_config(_cfg(tiny, "espcn", patch_size=24))
    with pytest.raises(ConfigError) as err:
        check_config(_cfg(tiny, "espcn", patch_size=25))
    assert "needs 50x50 HR pixels" in str(err.value) and "48x48" in str(err.value)
    assert "patch_size <= 24" in str(err.value)
    # A dataset named under the data root is measured alike, and the advice names it: x4 and 24 px
    # LR patches need 96 px, which 6 of these 10 images (60 to 150 px) hold.
    from PIL import Image

    named = env / "data" / "General-100"
    named.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (60 + 10 * i, 60 + 10 * i), (i * 20, 90, 160)).save(named / f"im_{i}.png")
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(env / "data"))
    get_settings.cache_clear()
    check_config(TrainConfig(model="edsr-baseline", scale=4, patch_size=15, data="General-100", val_data="Set5"))
    with pytest.raises(ConfigError, match=r"only 6 of the 10 .*im_0.png.*patch_size <= 15"):
        check_config(TrainConfig(model="edsr-baseline", scale=4, patch_size=24, data="General-100", val_data="Set5"))


def test_patch_guard_lets_a_few_small_images_be_skipped(env, tmp_path):
    from PIL import Image

    def folder(name: str, small: int) -> str:
        root = tmp_path / name
        root.mkdir()
        for i in range(10):
            side = 40 + 4 * i if i < small else 96
            Image.new("RGB", (side + 8, side), (i * 20, 90, 160)).save(root / f"im_{i}.png")
        return str(root)

    # One image in ten too small for 48x48 HR at x2 is skipped, the nine others train; two are too many.
    check_config(TrainConfig(model="espcn", patch_size=24, data=folder("one", 1), val_data=None))
    with pytest.raises(ConfigError) as err:
        check_config(TrainConfig(model="espcn", patch_size=24, data=folder("two", 2), val_data=None))
    assert "only 8 of the 10 training images" in str(err.value)
    assert "use patch_size <= 20 to use every image, or <= 22 to use 9 of them" in str(err.value)
    # A small folder may hold one image too small (rounded down: 6 of 7 is enough), and a patch
    # size of 0 is never offered.
    tiny_one = tmp_path / "tiny_one"
    tiny_one.mkdir()
    for i in range(6):
        Image.new("RGB", (64, 64), (i * 30, 90, 160)).save(tiny_one / f"im_{i}.png")
    Image.new("RGB", (1, 1)).save(tiny_one / "dot.png")
    check_config(TrainConfig(model="espcn", patch_size=17, data=str(tiny_one), val_data=None))
    Image.new("RGB", (1, 1)).save(tiny_one / "dot2.png")
    with pytest.raises(ConfigError) as err:
        check_config(TrainConfig(model="espcn", patch_size=17, data=str(tiny_one), val_data=None))
    assert "only 6 of the 8 training images" in str(err.value) and "<= 0" not in str(err.value)
    assert str(err.value).endswith("leave the smallest images out of the folder")


# --- Trainer -----------------------------------------------------------------------------------


def _check_export(result, cfg, export_dir: Path, val_name: str) -> None:
    card = result.card
    assert card is not None and card.name == f"{cfg.model}-x{cfg.scale}.custom"
    assert (export_dir / f"{card.name}.safetensors").is_file() and (export_dir / f"{card.name}.json").is_file()
    model, loaded = srweb.load_weights(str(export_dir / f"{card.name}.safetensors"))
    assert loaded.num_params == card.num_params == count_params(model)
    assert count_params(create_model(cfg.model, cfg.scale, **cfg.overrides)) == card.num_params
    assert loaded.training["iterations"] == cfg.iterations and loaded.training["config"]["model"] == cfg.model
    (metric,) = loaded.metrics
    assert metric["dataset"] == val_name and metric["scale"] == cfg.scale and math.isfinite(metric["psnr"])
    assert metric["protocol"]["channel"] == "y" and metric["protocol"]["crop_border"] == cfg.scale
    assert metric["protocol"]["degradation"] == "matlab-bicubic"


@pytest.mark.parametrize(
    ("model", "overrides", "kind"),
    [
        ("srcnn", {"num_features": [16, 8]}, "y pre-upsampling"),
        ("espcn", {}, "y post-upsampling"),
        ("edsr-baseline", {"num_blocks": 2, "num_features": 16}, "rgb post-upsampling"),
    ],
)
def test_trainer_runs_validates_and_exports(env, tiny, model, overrides, kind):
    cfg = _cfg(tiny, model, overrides=overrides)
    log = Recorder()
    result = Trainer(cfg, env / "run", logger=log, progress=False).train()
    assert (result.status, result.step) == ("finished", 20)
    losses = [v for _, v in log.series("loss")]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert [s for s, _ in log.series("val_psnr")] == [10, 20]
    assert result.best_psnr == max(v for _, v in log.series("val_psnr"))
    # The card says which validation step its weights come from (the best one), of how many.
    best_step = max(log.series("val_psnr"), key=lambda sv: sv[1])[0]
    assert (result.card.training["weights_step"], result.card.training["iterations"]) == (best_step, 20)
    assert {"lr", "it_per_s", "loader_wait", "val_ssim"} <= {k for _, row in log.rows for k in row}
    assert log.flushed >= 1
    assert (env / "run" / "last.pt").is_file() and (env / "run" / "best.safetensors").is_file()
    _check_export(result, cfg.resolved(), env / "run" / "export", "val")


def test_loss_decreases_on_a_fixed_batch(env, tiny):
    # One 16 px image, 8 px LR patches at x2, no augmentation: every batch is the same image.
    cfg = _cfg(tiny, "espcn", data=tiny["one"], val_data=None, augment=False, iterations=40, precision="fp32")
    log = Recorder()
    result = Trainer(cfg, env / "run", logger=log, progress=False).train()
    losses = [v for _, v in log.series("loss")]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.best_psnr is None and result.card.metrics == []  # no validation set: no metrics claimed


def test_drcn_recursive_supervision(env, tiny, monkeypatch):
    from srweb.models.drcn import DRCN

    calls = []
    original = DRCN.forward_with_supervision

    def spy(self, x):
        out, preds = original(self, x)
        if self.training:
            calls.append(len(preds))
        return out, preds

    monkeypatch.setattr(DRCN, "forward_with_supervision", spy)
    cfg = _cfg(tiny, "drcn", overrides={"num_features": 8, "num_recursions": 3}, iterations=10, val_interval=10)
    log = Recorder()
    result = Trainer(cfg, env / "run", logger=log, progress=False).train()
    assert result.status == "finished" and calls == [3] * 10  # every step supervised all 3 recursions
    assert all(math.isfinite(v) for _, v in log.series("loss"))
    _check_export(result, cfg.resolved(), env / "run" / "export", "val")


def test_vdsr_adjustable_gradient_clipping(env, tiny, monkeypatch):
    bounds = []
    clip = torch.nn.utils.clip_grad_value_

    def spy(parameters, clip_value, *args, **kwargs):
        bounds.append(clip_value)
        return clip(parameters, clip_value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", spy)
    cfg = _cfg(
        tiny,
        "vdsr",
        overrides={"num_features": 8, "num_layers": 4},
        iterations=10,
        schedule="step",
        lr_step=5,
        lr_gamma=0.1,
        val_data=None,
    )
    resolved = cfg.resolved()
    assert (resolved.optimizer, resolved.clip_mode, resolved.grad_clip, resolved.lr) == ("sgd", "adjustable", 0.4, 0.1)
    log = Recorder()
    result = Trainer(cfg, env / "run", logger=log, progress=False).train()
    assert result.status == "finished"
    # theta / lr: 0.4 / 0.1 for steps 0-4, then 0.4 / 0.01 once the lr dropped.
    assert bounds == pytest.approx([4.0] * 5 + [40.0] * 5)
    assert all(math.isfinite(v) for _, v in log.series("loss"))


# --- resume --------------------------------------------------------------------------------------


def _stop_after(k: int):
    calls = {"n": 0}

    def should_stop() -> bool:  # polled once before every step: call k+1 comes before step k+1
        calls["n"] += 1
        return calls["n"] > k

    return should_stop


def test_cancel_then_resume_continues_the_run(env, tiny):
    cfg = _cfg(tiny, "espcn", iterations=30, schedule="cosine", min_lr=1e-5, precision="fp32")
    run_dir = env / "run"
    first, second = Recorder(), Recorder()
    part1 = Trainer(cfg, run_dir, logger=first, should_stop=_stop_after(17), progress=False).train()
    assert (part1.status, part1.step, part1.card) == ("cancelled", 17, None)
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["step"] == 17 and state["best_psnr"] == part1.best_psnr and state["best_step"] == 10
    assert not (run_dir / "export").exists()  # a cancelled run exports nothing

    part2 = Trainer(cfg, run_dir, logger=second, progress=False).train()
    assert (part2.status, part2.step) == ("finished", 30)
    steps = [s for s, _ in first.series("loss") + second.series("loss")]
    assert steps == [10, 20, 30]  # one curve, no restart from 0
    assert all(s > 17 for s, _ in second.rows)
    resolved = cfg.resolved()
    lrs = dict(first.series("lr") + second.series("lr"))
    for step, lr in lrs.items():  # the cosine schedule continued where it stopped
        assert lr == pytest.approx(resolved.lr * lr_factor(resolved, step)), step
    assert lrs[30] == pytest.approx(1e-5)
    assert part2.best_psnr >= part1.best_psnr
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 30
    # The card's wall time covers both sessions, not only the one that finished the run.
    assert state["wall_seconds"] > 0 and part2.card.training["wall_seconds"] >= round(state["wall_seconds"], 1)
    assert part2.wall_seconds >= state["wall_seconds"]


def test_a_killed_session_is_trained_again_from_its_checkpoint_and_logged_once(env, tiny):
    cfg = _cfg(tiny, "espcn", iterations=30, val_data=None, ckpt_interval=10, precision="fp32")
    log, calls = Recorder(), {"n": 0}

    def killed_at_step_25() -> bool:
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt  # no checkpoint: the process dies between two intervals
        return False

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, env / "run", logger=log, should_stop=killed_at_step_25, progress=False).train()
    assert [s for s, _ in log.series("loss")] == [10, 20]
    log.rows.append((25, {"loss": 1.0}))  # what a logger had recorded past the checkpoint
    Trainer(cfg, env / "run", logger=log, progress=False).train()
    assert [s for s, _ in log.series("loss")] == [10, 20, 30]


def test_run_logger_forgets_metrics_past_the_checkpoint_it_resumes_from(fresh_state):
    from srweb.track.db import init_db, session_scope, write_transaction
    from srweb.track.runs import create_run, metric_series
    from srweb.train.session import RunLogger

    init_db()
    run_id = write_transaction(lambda s: create_run(s, name="r", arch="espcn", scale=2, config={}).id)
    logger = RunLogger(run_id)
    for step in (10, 20, 30, 40):
        logger.log(step, {"loss": step / 100})
    logger.resumed(20)
    logger.log(30, {"loss": 0.5})
    logger.flush()
    with session_scope(write=False) as session:
        frame = metric_series(session, run_id)
    assert list(frame["step"]) == [10, 20, 30] and frame["value"].iloc[-1] == 0.5


def test_step_batches_depend_on_the_step_alone():
    from srweb.data.sampling import StepBatches

    whole = list(StepBatches(100, 8, 50, seed=3))
    assert len(whole) == 50 and all(len(b) == 8 and 0 <= min(b) and max(b) < 100 for b in whole)
    assert list(StepBatches(100, 8, 50, seed=3, start=37)) == whole[37:]  # resume continues the sequence
    assert list(StepBatches(100, 8, 50, seed=3, rank=1)) != whole  # each torchrun process draws its own
    assert list(StepBatches(100, 8, 50, seed=4)) != whole
    assert len({i for b in whole for i in b}) > 90  # uniform with replacement: nearly every sample in 400 draws


def test_resume_restores_optimizer_and_rng_exactly(env, tiny):
    # Batches are a function of the step, crops and flips come from the restored Python RNG:
    # an interrupted run ends bit-identical to an uninterrupted one.
    cfg = _cfg(tiny, "espcn", val_data=None, iterations=12, precision="fp32", channels_last=False)
    Trainer(cfg, env / "straight", progress=False).train()
    Trainer(cfg, env / "split", should_stop=_stop_after(5), progress=False).train()
    Trainer(cfg, env / "split", progress=False).train()
    a = torch.load(env / "straight" / "last.pt", weights_only=True)
    b = torch.load(env / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key


def test_finished_run_resumed_again_does_not_train_further(env, tiny):
    cfg = _cfg(tiny, "espcn", iterations=10, val_data=None)
    Trainer(cfg, env / "run", progress=False).train()
    log = Recorder()
    result = Trainer(cfg, env / "run", logger=log, progress=False).train()
    assert (result.status, result.step) == ("finished", 10) and log.series("loss") == []


def test_ema_averages_the_weights_resumes_exactly_and_is_what_ships(env, tiny):
    # One image, no validation: the exported weights are the moving average, not the last step.
    cfg = _cfg(tiny, "espcn", data=tiny["one"], val_data=None, precision="fp32", channels_last=False, ema=0.75)
    assert "ema0.75" in cfg.resolved().name
    Trainer(TrainConfig(**{**cfg.to_dict(), "iterations": 1}), env / "one", progress=False).train()
    two = Trainer(TrainConfig(**{**cfg.to_dict(), "iterations": 2}), env / "two", progress=False).train()
    first = torch.load(env / "one" / "last.pt", weights_only=True)
    second = torch.load(env / "two" / "last.pt", weights_only=True)
    for key, theta1 in first["model"].items():
        # Step 1 copies the weights; step 2 keeps 0.75 of them and takes 0.25 of the new ones.
        assert torch.equal(first["ema"][f"module.{key}"], theta1), key
        expected = 0.75 * theta1 + 0.25 * second["model"][key]
        assert torch.allclose(second["ema"][f"module.{key}"], expected, atol=1e-7), key
    shipped = load_file(str(env / "two" / "export" / f"{two.card.name}.safetensors"))
    assert all(torch.equal(shipped[k], second["ema"][f"module.{k}"]) for k in shipped)
    assert any(not torch.equal(shipped[k], second["model"][k]) for k in shipped)

    # Stopped and resumed, the average continues where it was: bit-identical to one straight run.
    cfg = TrainConfig(**{**cfg.to_dict(), "iterations": 12})
    Trainer(cfg, env / "straight", progress=False).train()
    Trainer(cfg, env / "split", should_stop=_stop_after(5), progress=False).train()
    Trainer(cfg, env / "split", progress=False).train()
    a = torch.load(env / "straight" / "last.pt", weights_only=True)["ema"]
    b = torch.load(env / "split" / "last.pt", weights_only=True)["ema"]
    assert int(a["n_averaged"]) == int(b["n_averaged"]) == 12
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_with_validation_ships_the_best_average_and_its_card_measures_that_file(env, tiny):
    cfg = _cfg(tiny, "espcn", ema=0.9, precision="fp32")
    result = Trainer(cfg, env / "run", progress=False).train()
    shipped = env / "run" / "export" / f"{result.card.name}.safetensors"
    scored = evaluate(srweb.Upscaler(str(shipped), precision="fp32").upscale, tiny["val"], 2)
    assert result.card.metrics[0]["psnr"] == pytest.approx(scored.psnr, abs=1e-3)
    assert result.card.metrics[0]["psnr"] == pytest.approx(result.best_psnr, abs=1e-3)


# --- distillation ---------------------------------------------------------------------------------


def test_distillation_shares_the_pixel_loss_with_a_teacher_of_another_scale_and_records_it(env, tiny):
    teacher = save_weights(create_model("espcn", 4), "espcn-x4.teacher", training={"note": "untrained test teacher"})
    cfg = _cfg(
        tiny, "espcn", teacher="espcn-x4.teacher", teacher_weight=0.25, iterations=3, val_interval=2, precision="fp32"
    )
    assert cfg.resolved().name.endswith("_kd0.25")
    log = Recorder()
    trainer = Trainer(cfg, env / "run", logger=log, progress=False)
    result = trainer.train()
    assert result.status == "finished" and log.series("hr_loss")
    assert result.card.training["teacher"] == {
        "name": "espcn-x4.teacher",
        "sha256": teacher.sha256,
        "scale": 4,
        "metrics": [],
    }
    assert result.card.training["config"]["teacher"] == "espcn-x4.teacher"  # --from-card distils again

    # The x4 teacher's output, resized to x2, is a second target beside HR, weighted 0.25.
    batch = torch.utils.data.default_collate([trainer.train_set[i] for i in range(4)])
    assert batch["teacher"].shape == batch["hr"].shape == (4, 1, 16, 16)
    lr_img, hr_img, teacher_img = batch["lr"], batch["hr"], batch["teacher"]
    with torch.no_grad():
        sr = trainer.model(lr_img)
    mse = torch.nn.MSELoss()
    expected = 0.75 * mse(sr, hr_img) + 0.25 * mse(sr, teacher_img)
    out = trainer._step(trainer.model, lr_img, hr_img, mse, trainer.scaler, False, 0, teacher_img)
    assert out["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert out["hr_loss"] == pytest.approx(float(mse(sr, hr_img)), rel=1e-5)


def test_distillation_on_unlabelled_images_doubles_the_patches_and_is_recorded(env, tiny):
    save_weights(create_model("espcn", 2), "espcn-x2.teacher", training={"note": "untrained test teacher"})
    cfg = _cfg(
        tiny,
        "espcn",
        teacher="espcn-x2.teacher",
        teacher_unlabelled=True,
        iterations=2,
        val_data=None,
        precision="fp32",
    )
    assert cfg.resolved().name.endswith("_kd0.5u")
    trainer = Trainer(cfg, env / "run", progress=False)
    result = trainer.train()
    labelled = Trainer(
        _cfg(tiny, "espcn", teacher="espcn-x2.teacher", iterations=1, val_data=None), env / "other", progress=False
    )
    labelled.train()
    assert len(trainer.train_set.entries) == 2 * len(labelled.train_set.entries)
    assert result.card.training["config"]["teacher_unlabelled"] is True  # --from-card does it again
    assert "also labelling the images as LR inputs" in card_markdown(result.card)
    with pytest.raises(ConfigError, match="teacher_unlabelled needs a teacher"):
        _cfg(tiny, "espcn", teacher_unlabelled=True).validate()


def test_a_cancel_during_the_teacher_pass_stops_before_the_next_image_and_keeps_the_checkpoint(env, tiny, monkeypatch):
    save_weights(create_model("espcn", 2), "espcn-x2.teacher", training={"note": "untrained test teacher"})
    cfg = _cfg(tiny, "espcn", teacher="espcn-x2.teacher", iterations=6, val_data=None, precision="fp32")
    steps = _stop_after(3)
    first = Trainer(cfg, env / "run", should_stop=lambda: first.train_set is not None and steps(), progress=False)
    part1 = first.train()  # the stop comes after 3 steps, not during the teacher pass
    assert (part1.status, part1.step, part1.card) == ("cancelled", 3, None)

    cached = list((get_settings().cache_dir / "patches").glob("*.teacher-*.npy"))
    assert cached  # the teacher's outputs are kept on disk; without them the next start runs the teacher again
    for path in cached:
        path.unlink()
    teacher_calls = []
    cancel_now = Trainer(cfg, env / "run", should_stop=lambda: True, progress=False)
    real_load = trainer_module.load_teacher

    def counting_teacher(*args):
        teacher = real_load(*args)
        teacher.upscale = lambda lr, f=teacher.upscale: teacher_calls.append(1) or f(lr)
        return teacher

    monkeypatch.setattr(trainer_module, "load_teacher", counting_teacher)
    part2 = cancel_now.train()
    # Stopped at the first teacher call, not after the whole pass; the resumed state is saved as it was.
    assert teacher_calls == [] and (part2.status, part2.step) == ("cancelled", 3)
    state = torch.load(env / "run" / "last.pt", weights_only=True)
    assert state["step"] == 3
    for key, tensor in first.model.state_dict().items():
        assert torch.equal(state["model"][key], tensor)

    assert Trainer(cfg, env / "run", progress=False).train().step == 6


@pytest.mark.parametrize(
    ("teacher", "words"),
    [
        ("no-such-weights", "teacher 'no-such-weights'"),
        ("bicubic", "is an architecture, not trained weights"),
        ("espcn", "is an architecture"),
    ],
)
def test_a_teacher_that_is_not_trained_weights_is_a_clear_config_error(env, tiny, teacher, words):
    cfg = _cfg(tiny, "espcn", teacher=teacher, val_data=None)
    with pytest.raises(ConfigError, match=words):
        check_config(cfg)  # before a job is queued
    with pytest.raises(ConfigError, match=words):
        Trainer(cfg, env / "run", progress=False).train()


# --- SRGAN ---------------------------------------------------------------------------------------


@pytest.fixture
def tiny_srresnet(env):
    model = create_model("srresnet", 2, num_blocks=1, num_features=8)
    save_weights(model, "srresnet-x2.tiny", training={"note": "untrained test generator"})
    return "srresnet-x2.tiny"


def test_freeze_bn_trains_the_weights_and_keeps_the_batchnorm_statistics(env, tiny, tiny_srresnet):
    # Fine-tuning with frozen BatchNorm: the network trained is the one inference runs (running stats).
    cfg = _cfg(
        tiny,
        "srresnet",
        pretrained=tiny_srresnet,
        batch_size=2,
        iterations=3,
        val_interval=2,
        overrides={"num_blocks": 1, "num_features": 8},
        precision="fp32",
        freeze_bn=True,
    )
    assert cfg.resolved().name.endswith("_frozenbn")
    trainer = Trainer(cfg, env / "run", progress=False)
    assert trainer.train().status == "finished"
    start = load_file(str(env / "weights" / "srresnet-x2.tiny.safetensors"))
    end = torch.load(env / "run" / "last.pt", weights_only=True)["model"]
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(start[k], end[k]) for k in stats)
    assert int(end[stats[0].rsplit(".", 1)[0] + ".num_batches_tracked"]) == 0
    convs = [f"{name}.weight" for name, m in trainer.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(not torch.equal(start[k], end[k]) for k in convs)  # the convolutions still learn
    trainer.validate()  # returns the model to training mode, with its BatchNorm layers still frozen
    bns = [m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and trainer.model.training

    with pytest.raises(ConfigError, match="freeze_bn must be true or false"):
        TrainConfig(model="srresnet", freeze_bn="yes").validate()
    with pytest.raises(ConfigError, match="augment must be true or false"):
        TrainConfig(model="srresnet", augment="no").validate()


def test_freeze_bn_warns_when_the_model_has_no_batchnorm(env, tiny):
    trainer = Trainer(_cfg(tiny, "espcn", iterations=1, val_data=None, freeze_bn=True), env / "run", progress=False)
    with pytest.warns(UserWarning, match="espcn has no BatchNorm layer, so it changes nothing"):
        assert trainer.train().status == "finished"


@pytest.mark.slow
def test_srgan_mse_trains_generator_and_discriminator(env, tiny, tiny_srresnet):
    cfg = _cfg(
        tiny,
        "srresnet",
        loss="srgan-mse",
        pretrained=tiny_srresnet,
        batch_size=2,
        iterations=3,
        val_interval=1,
        overrides={"num_blocks": 1, "num_features": 8},
    )
    log = Recorder()
    trainer = Trainer(cfg, env / "run", logger=log, progress=False)
    result = trainer.train()
    assert result.status == "finished" and trainer.disc is not None
    ((step, row),) = [(s, r) for s, r in log.rows if "loss" in r]
    assert step == 3 and {"loss", "content", "adv", "d_loss"} <= set(row)
    assert all(math.isfinite(row[k]) for k in ("loss", "content", "adv", "d_loss"))
    state = torch.load(env / "run" / "last.pt", weights_only=True)
    assert "disc" in state and "disc_optimizer" in state
    # Validated every step, yet it ships its last weights: the best PSNR is the least adversarial one.
    assert not (env / "run" / "best.safetensors").exists() and result.card.metrics
    exported = load_file(env / "run" / "export" / f"{result.card.name}.safetensors")
    assert all(torch.equal(exported[k], state["model"][k].contiguous()) for k in exported)
    assert result.card.num_params == count_params(create_model("srresnet", 2, num_blocks=1, num_features=8))


def test_pretrained_must_be_the_same_architecture(env, tiny, tiny_srresnet):
    cfg = _cfg(tiny, "edsr-baseline", pretrained=tiny_srresnet, val_data=None)
    with pytest.raises(ConfigError, match="is srresnet, not edsr-baseline"):
        Trainer(cfg, env / "run", progress=False).train()


@pytest.mark.slow
def test_srgan_vgg54_with_random_vgg(env, tiny, tiny_srresnet):
    cfg = _cfg(
        tiny,
        "srresnet",
        loss="srgan-vgg54",
        vgg_weights="random",
        pretrained=tiny_srresnet,
        batch_size=2,
        iterations=3,
        val_data=None,
    )
    trainer = Trainer(cfg, env / "run", progress=False)
    result = trainer.train()
    assert (result.status, result.step) == ("finished", 3) and trainer.vgg is not None
    assert not any(p.requires_grad for p in trainer.vgg.parameters())  # VGG is a fixed feature extractor


@pytest.mark.slow
def test_srgan_vgg54_offline_is_a_clear_config_error(env, tiny, tiny_srresnet, monkeypatch):
    import torchvision.models._api as tv_api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    cfg = _cfg(
        tiny, "srresnet", loss="srgan-vgg54", pretrained=tiny_srresnet, batch_size=2, iterations=3, val_data=None
    )
    with pytest.raises(ConfigError) as err:
        Trainer(cfg, env / "run", progress=False).train()
    message = str(err.value)
    assert "VGG19 ImageNet weights are not available (URLError)" in message
    assert "vgg19-dcbb9e9d.pth" in message and "srgan-mse" in message


# --- run folders: a checkpoint is continued only with its own settings ------------------------------


def test_a_run_folder_is_continued_only_with_its_own_settings(env, tiny):
    import dataclasses
    import shutil

    cfg = _cfg(tiny, "espcn", iterations=20, val_data=None, precision="fp32", channels_last=False)
    run = env / "run"
    assert Trainer(cfg, run, should_stop=_stop_after(8), progress=False).train().step == 8
    with pytest.raises(ConfigError, match=r"batch_size 4 -> 8, lr 0.001 -> 0.0005; pass a new --run-dir"):
        Trainer(dataclasses.replace(cfg, lr=5e-4, batch_size=8), run, progress=False).train()
    with pytest.raises(ConfigError, match="already trained for 8 steps, more than iterations 5"):
        Trainer(dataclasses.replace(cfg, iterations=5), run, progress=False).train()
    # More iterations at a constant lr (and another checkpoint interval): the run is exactly the start of
    # a run of the new length.
    longer = dataclasses.replace(cfg, iterations=30, ckpt_interval=7)
    result = Trainer(longer, run, progress=False).train()
    assert (result.status, result.step, result.card.training["config"]["iterations"]) == ("finished", 30, 30)
    Trainer(longer, env / "straight", progress=False).train()
    a, b = (load_file(folder / "export" / "espcn-x2.custom.safetensors") for folder in (run, env / "straight"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Finished: the same settings export the same weights again; it is not trained further in its folder.
    card = json.loads((run / "export" / "espcn-x2.custom.json").read_text())
    again = Trainer(longer, run, progress=False).train()
    assert (again.step, again.card.sha256, again.card.training["config"]) == (
        30,
        card["sha256"],
        card["training"]["config"],
    )
    with pytest.raises(ConfigError, match=r"finished \(30 of 30 steps\).*iterations 30 -> 40.*copy the"):
        Trainer(dataclasses.replace(longer, iterations=40), run, progress=False).train()
    shutil.copytree(run, env / "copy")  # a copy may go on
    assert Trainer(dataclasses.replace(longer, iterations=40), env / "copy", progress=False).train().step == 40


def test_iterations_cannot_change_when_the_steps_depend_on_them(env, tiny):
    import dataclasses

    cfg = _cfg(tiny, "espcn", iterations=20, val_data=None, schedule="cosine")
    Trainer(cfg, env / "run", should_stop=_stop_after(5), progress=False).train()
    with pytest.raises(ConfigError, match="run of 20 iterations .*cannot become one of 30: its cosine"):
        Trainer(dataclasses.replace(cfg, iterations=30), env / "run", progress=False).train()


def test_a_fresh_start_drops_best_weights_no_checkpoint_belongs_to(env, tiny):
    run = env / "run"
    run.mkdir()
    (run / "best.safetensors").write_bytes(b"left by a run killed before its first checkpoint")
    result = Trainer(_cfg(tiny, "espcn", iterations=3, val_data=None), run, progress=False).train()
    assert result.card.training["weights_step"] == 3


# --- memory: a batch that cannot fit is refused before anything runs --------------------------------


def test_a_batch_too_large_for_the_free_memory_is_refused_with_the_estimate(env, tiny, monkeypatch):
    from srweb.train import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 8 * memory.GB)
    cfg = _cfg(tiny, "espcn", scale=3, patch_size=16, precision="fp32", device="cpu")
    fixed, per_sample = memory.step_bytes(cfg.resolved(), "fp32")
    # ESPCN keeps its input and two feature maps (1 + 64 + 32 values per LR pixel) for the backward pass,
    # which also holds the gradient of its widest layer (64): (97 + 64) x 4 bytes per LR pixel, and the patches.
    assert per_sample == 161 * 4 * 16 * 16 + (16 * 16 + 48 * 48) * 4
    check_config(cfg)  # batch 4
    largest = (8 * memory.GB - fixed) // per_sample
    check_config(_cfg(tiny, "espcn", scale=3, patch_size=16, precision="fp32", batch_size=largest))
    with pytest.raises(ConfigError, match=rf"batch_size 100000 does not fit.*16.3 GB .*above {largest} could"):
        check_config(_cfg(tiny, "espcn", scale=3, patch_size=16, precision="fp32", batch_size=100_000))
    # bf16 autocast keeps 16-bit activations: about twice the batch fits.
    fixed16, per16 = memory.step_bytes(cfg.resolved(), "bf16")
    assert 0.5 < per16 / per_sample < 0.6


def test_a_fine_tuned_export_keeps_its_starting_cards_speed_on_the_same_path(env, tiny):
    # The speed `srweb bench --store` wrote is the network's, not its weights': a stage fine-tuned
    # from a card keeps it when its fast-path verdict is the one that was timed.
    verdicts = {}
    for fast in (True, False):
        speed = {"ms_per_mpix": 33.5, "fast_path": fast, "device": "cpu", "host": "Bench CPU"}
        save_weights(create_model("espcn", 2), f"espcn-x2.start{fast:d}", inference={"speed": speed})
        cfg = _cfg(
            tiny,
            "espcn",
            pretrained=f"espcn-x2.start{fast:d}",
            iterations=2,
            val_interval=2,
            tag=f"stage{fast:d}",
            precision="fp32",
        )
        card = Trainer(cfg, env / f"run{fast:d}", progress=False).train().card
        verdicts[fast] = card.inference.get("speed")
        assert verdicts[fast] in (None, speed) and ("speed" in card.inference) == (
            card.inference["fast_path_ok"] == fast
        )
    assert sum(v is not None for v in verdicts.values()) == 1


def test_resume_compares_folders_not_their_spelling(env, tiny):
    from srweb.train.resume import differences

    set5 = benchmark_path("Set5")  # the built-in copy, or the data root's own
    base = _cfg(tiny, "espcn").to_dict()
    assert not differences({**base, "val_data": "Set5"}, {**base, "val_data": str(set5.resolve())})
    relative = os.path.relpath(tiny["train"])
    assert not differences({**base, "data": relative}, {**base, "data": str(Path(tiny["train"]).resolve())})
    assert differences({**base, "data": tiny["train"]}, {**base, "data": tiny["val"]}) == [
        f"data {tiny['train']!r} -> {tiny['val']!r}"
    ]
