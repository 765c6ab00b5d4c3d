"""``srweb train`` and ``srweb jobs``: real subprocesses for the end-to-end runs, ``main()``
in-process for the many bad-input cases (same code path, without a torch import per case)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy.exc import OperationalError

import srweb
from conftest import SET5, child_env, crops, hr_photos, point_at
from srweb.cli import main
from srweb.config import get_settings
from srweb.track.db import dispose_engine, session_scope
from srweb.track.runs import get_run, list_runs, metric_series

SRWEB = [sys.executable, "-m", "srweb.cli"]


def _srweb(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SRWEB, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _summary(out: subprocess.CompletedProcess) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The issue's command (EDSR-baseline, validated on Set5, tracked, exported) on the sample photos
    instead of General-100, which a fresh clone does not have."""
    root = tmp_path_factory.mktemp("cli")
    env = child_env(root)
    args = [
        "train",
        "--model",
        "edsr-baseline",
        "--scale",
        "2",
        "--data",
        str(hr_photos()),
        "--val-data",
        str(SET5),
        "--iterations",
        "20",
        "--patch-size",
        "24",
        "--batch-size",
        "4",
        "--override",
        "num_blocks=2",
        "--val-interval",
        "10",
        "--export",
        str(root / "weights"),
    ]
    started = time.monotonic()
    out = _srweb(args, env, root)
    return {"root": root, "env": env, "out": out, "seconds": time.monotonic() - started}


@pytest.fixture
def state(trained, monkeypatch):
    """This process pointed at the database and folders of the ``trained`` run."""
    point_at(monkeypatch, trained["env"])
    yield trained
    dispose_engine()
    get_settings.cache_clear()


@pytest.mark.slow
def test_train_edsr_baseline_general100_end_to_end(state):
    summary = _summary(state["out"])
    assert (summary["status"], summary["step"], summary["weights"]) == ("finished", 20, "edsr-baseline-x2.custom")
    assert summary["run_id"] == 1 and summary["best_psnr"] > 20
    with session_scope(write=False) as session:
        run = get_run(session, 1)
        series = metric_series(session, 1, wide=True)
    assert (run.status, run.step, run.total_steps, run.error) == ("finished", 20, 20, None)
    assert run.name == "edsr-baseline-x2_f64b2_p24_b4_lr1e-4" and run.weights_name == "edsr-baseline-x2.custom"
    assert run.config["overrides"] == {"num_blocks": 2} and run.config["val_data"].endswith("Set5")
    assert list(series["val_psnr"].dropna().index) == [10, 20] and list(series["loss"].dropna().index) == [10, 20]
    assert run.best_psnr == pytest.approx(series["val_psnr"].max())
    from srweb.train import jobs

    assert "trained in the foreground" in jobs.log_tail(1)  # no log file: its output went to its terminal
    model, card = srweb.load_weights("edsr-baseline-x2.custom")  # in the weights folder, found by name
    assert card.num_params == sum(p.numel() for p in model.parameters())
    assert card.config["num_blocks"] == 2 and card.training["run_id"] == 1
    # The run's training time: the card's (counted up to its export) and a little more, within the run's span.
    assert 0 < card.training["wall_seconds"] <= run.train_seconds <= (run.finished_at - run.started_at).total_seconds()
    (metric,) = card.metrics
    assert metric["dataset"] == "Set5" and metric["protocol"] == {
        "channel": "y",
        "crop_border": 2,
        "degradation": "matlab-bicubic",
        "dataset": "Set5",
    }


@pytest.mark.slow
def test_a_foreground_run_exported_elsewhere_exports_from_the_runs_tab(state, tmp_path):
    from srweb.weights.exports import export_run_weights

    # Its files are in --export (here the weights folder), not run_dir/export: found there, and
    # since that folder already lists them, that entry is the export (no second copy).
    card = export_run_weights(1, weights_dir=tmp_path)
    assert card.name == "edsr-baseline-x2.custom" and card.training["run_id"] == 1
    assert not any(tmp_path.glob("*.safetensors"))


@pytest.mark.slow
def test_from_card_reproduces_the_cards_config(state, tmp_path):
    card_path = state["root"] / "weights" / "edsr-baseline-x2.custom.json"
    training = json.loads(card_path.read_text())["training"]
    env = child_env(state["root"], SRWEB_MAX_PARALLEL_JOBS="0")  # queue it, do not train it again
    out = _srweb(["train", "--from-card", str(card_path), "--background"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("queued run 2 (edsr-baseline-x2_f64b2_p24_b4_lr1e-4)")
    with session_scope(write=False) as session:
        queued = get_run(session, 2)
    # Every hyperparameter, the name too; precision 'auto' pinned to what it resolved to (fp32 or bf16 here).
    assert training["config"]["precision"] == "auto" and training["precision"] in ("fp32", "bf16")
    assert queued.status == "queued" and queued.config == {**training["config"], "precision": training["precision"]}
    assert main(["jobs", "cancel", "2"]) == 0


@pytest.mark.slow
def test_from_card_retrains_bit_identically(tmp_path):
    # Same config, same seed, one CPU thread: training again from the card gives the same tensors.
    train = crops(hr_photos(), tmp_path / "train", 4, 48)
    env = child_env(tmp_path)
    first = _summary(
        _srweb(
            [
                "train",
                "--model",
                "espcn",
                "--data",
                str(train),
                "--val-data",
                "",
                "--patch-size",
                "8",
                "--batch-size",
                "4",
                "--iterations",
                "15",
                "--tag",
                "a",
                "--no-track",
                "--run-dir",
                str(tmp_path / "a"),
                "--export",
                str(tmp_path / "w1"),
            ],
            env,
            tmp_path,
        )
    )
    card_a = json.loads((tmp_path / "w1" / "espcn-x2.a.json").read_text())
    second = _summary(
        _srweb(
            [
                "train",
                "--from-card",
                str(tmp_path / "w1" / "espcn-x2.a.json"),
                "--no-track",
                "--run-dir",
                str(tmp_path / "b"),
                "--export",
                str(tmp_path / "w2"),
            ],
            env,
            tmp_path,
        )
    )
    card_b = json.loads((tmp_path / "w2" / "espcn-x2.a.json").read_text())
    assert first["step"] == second["step"] == 15
    # The same config, with 'auto' pinned to the precision the first run resolved it to.
    assert card_b["training"]["config"] == {
        **card_a["training"]["config"],
        "precision": card_a["training"]["precision"],
    }
    # Equal tensors (the files' sha256 may differ: safetensors writes its header keys in any order).
    a = load_file(tmp_path / "w1" / "espcn-x2.a.safetensors")
    b = load_file(tmp_path / "w2" / "espcn-x2.a.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_from_card_replays_the_runs_a_fine_tuned_card_started_from(tmp_path):
    # x2 from scratch, then x3 initialised from it (the shared layers): the x3 card records its parent,
    # and --from-card retrains both stages and lands on the same tensors.
    train = crops(hr_photos(), tmp_path / "train", 4, 48)
    env = child_env(tmp_path)
    common = [
        "--model",
        "espcn",
        "--data",
        str(train),
        "--val-data",
        "",
        "--patch-size",
        "8",
        "--batch-size",
        "4",
        "--tag",
        "a",
        "--no-track",
    ]
    _summary(
        _srweb(
            [
                "train",
                *common,
                "--iterations",
                "10",
                "--run-dir",
                str(tmp_path / "x2"),
                "--export",
                str(tmp_path / "w1"),
            ],
            env,
            tmp_path,
        )
    )
    parent_card = json.loads((tmp_path / "w1" / "espcn-x2.a.json").read_text())
    _summary(
        _srweb(
            [
                "train",
                *common,
                "--scale",
                "3",
                "--iterations",
                "12",
                "--pretrained",
                str(tmp_path / "w1" / "espcn-x2.a.json"),
                "--run-dir",
                str(tmp_path / "x3"),
                "--export",
                str(tmp_path / "w2"),
            ],
            env,
            tmp_path,
        )
    )
    card = json.loads((tmp_path / "w2" / "espcn-x3.a.json").read_text())
    assert card["training"]["parent"]["name"] == "espcn-x2.a"
    assert card["training"]["parent"]["sha256"] == parent_card["sha256"]
    assert card["training"]["parent"]["training"]["config"] == parent_card["training"]["config"]
    first = load_file(tmp_path / "w2" / "espcn-x3.a.safetensors")
    # The shared layers start from the x2 weights; the scale-specific last layer cannot and starts fresh.
    from srweb.train.config import TrainConfig
    from srweb.train.trainer import Trainer

    init = Trainer(
        TrainConfig(
            model="espcn", scale=3, data=str(train), val_data="", pretrained=str(tmp_path / "w1" / "espcn-x2.a.json")
        ),
        tmp_path / "probe",
    )._build_model()
    parent = load_file(tmp_path / "w1" / "espcn-x2.a.safetensors")
    assert torch.equal(init.head[0].weight, parent["head.0.weight"])
    assert init.upsample[0].weight.shape[0] == 9 != parent["upsample.0.weight"].shape[0]

    out = _srweb(
        [
            "train",
            "--from-card",
            str(tmp_path / "w2" / "espcn-x3.a.json"),
            "--no-track",
            "--run-dir",
            str(tmp_path / "again"),
            "--export",
            str(tmp_path / "w3"),
        ],
        env,
        tmp_path,
    )
    assert _summary(out)["step"] == 12 and "stage 1/2" in out.stdout
    again = load_file(tmp_path / "w3" / "espcn-x3.a.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_from_card_pins_each_stage_to_the_precision_it_ran_in(tmp_path, monkeypatch, capsys):
    from srweb.cli import train as cli

    def stage(precision, ran_in, parent=None):
        config = {"model": "espcn", "scale": 3, "precision": precision, "iterations": 10}
        return {"config": config, "precision": ran_in, **({"parent": {"training": parent}} if parent else {})}

    card = {"training": stage("auto", "fp32", parent=stage("auto", "bf16", parent=stage("fp32", "fp32")))}
    assert [s["precision"] for s in cli.card_stages(card)] == ["fp32", "bf16", "fp32"]
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card))
    args = cli.argparse.Namespace(
        from_card=str(path),
        config=None,
        model=None,
        override=[],
        name=None,
        **{f: None for f in (*cli._FLAGS, "augment", "scale_augment", "freeze_bn", "channels_last") if f != "name"},
    )
    assert cli.config_from_args(args).precision == "fp32"
    args.precision = "auto"  # the user's flag wins
    assert cli.config_from_args(args).precision == "auto"
    # A bf16 stage replayed on a CPU without bf16: the user hears it will be slow, and how to avoid it.
    monkeypatch.setattr("srweb.inference.upscaler.cpu_supports_bf16", lambda: False)
    stages = cli.card_stages(card)
    cli.warn_slow_replay(str(path), stages, cli.config_from_args(args), None)
    assert "trained in bf16, which this CPU emulates" in capsys.readouterr().err
    cli.warn_slow_replay(str(path), stages, cli.config_from_args(args), "fp32")
    monkeypatch.setattr("srweb.inference.upscaler.cpu_supports_bf16", lambda: True)
    cli.warn_slow_replay(str(path), stages, cli.config_from_args(args), None)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "espcn", "--lr", "-0.1"], "lr must be > 0, got -0.1"),
        (["--model", "espcn", "--batch-size", "0"], "batch_size must be >= 1"),
        (["--model", "espcn", "--iterations", "0"], "iterations must be >= 1"),
        (["--model", "espcn", "--scale", "5"], "espcn supports scales (2, 3, 4), not 5"),
        (["--model", "bicubic"], "bicubic is a baseline without parameters"),
        (["--model", "nosuchnet"], "unknown model 'nosuchnet'"),
        (["--model", "espcn", "--optimizer", "rmsprop"], "optimizer must be one of"),
        (["--model", "espcn", "--loss", "ssim"], "loss must be one of"),
        (["--model", "espcn", "--override", "num_blocks=4"], "unknown override(s) num_blocks for espcn"),
        (["--model", "espcn", "--data", "/no/such/folder"], "data: dataset '/no/such/folder' not found"),
        (["--model", "espcn", "--data", "sample", "--patch-size", "160"], "only 6 of the 8 training images in sample"),
        (["--model", "espcn", "--val-data", "Set99"], "val_data: dataset 'Set99' not found"),
        (["--model", "espcn", "--teacher", "edsr-x4.nowhere"], "teacher 'edsr-x4.nowhere'"),
        (["--model", "espcn", "--teacher", "edsr-baseline"], "is an architecture, not trained weights"),
        (["--model", "espcn", "--teacher-weight", "2"], "teacher_weight must be in (0, 1]"),
        (["--model", "espcn", "--teacher-unlabelled"], "teacher_unlabelled needs a teacher"),
        (["--from-card", "/no/such/card.json"], "No such file or directory"),
        ([], "--model is required"),
    ],
)
def test_bad_hyperparameters_exit_2_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))  # the built-in sample set lands here
    get_settings.cache_clear()
    try:
        code = main(["train", *args])
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("srweb: error: ") and message in err, err
    assert not (tmp_path / "state" / "db").exists()  # rejected before anything was recorded


def test_bad_hyperparameters_in_a_real_process(tmp_path):
    out = _srweb(["train", "--model", "edsr-baseline", "--lr", "-1", "--no-track"], child_env(tmp_path), tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "srweb: error: lr must be > 0, got -1.0\n"


@pytest.mark.slow
def test_jobs_submit_list_logs_cancel(tmp_path, monkeypatch, capsys):
    train = crops(hr_photos(), tmp_path / "train", 4, 48)
    env = child_env(tmp_path)
    out = _srweb(
        [
            "jobs",
            "submit",
            "--model",
            "espcn",
            "--data",
            str(train),
            "--val-data",
            "",
            "--patch-size",
            "8",
            "--batch-size",
            "4",
            "--iterations",
            "20",
            "--precision",
            "fp32",
        ],
        env,
        tmp_path,
    )
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    point_at(monkeypatch, env)
    try:
        deadline = time.monotonic() + 180
        while True:  # the worker outlives the CLI process that started it
            with session_scope(write=False) as session:
                status = list_runs(session)[0].status
            if status not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == "finished"
        capsys.readouterr()
        assert main(["jobs", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["id", "status", "step", "best", "PSNR", "name"]
        assert lines[1].split() == ["1", "finished", "20/20", "-", "espcn-x2_f64-32_p8_b4_lr1e-3_l2"]
        assert main(["jobs", "logs", "1", "--lines", "5"]) == 0
        log = capsys.readouterr().out
        assert log.strip().endswith("run 1 finished at step 20") and len(log.strip().splitlines()) <= 5
        assert main(["jobs", "cancel", "1"]) == 2
        assert capsys.readouterr().err == "srweb: error: run 1 is already finished; nothing to cancel\n"
        assert main(["jobs", "logs"]) == 2
        assert capsys.readouterr().err == "srweb: error: jobs logs needs a RUN_ID\n"
        assert main(["jobs", "resume", "7"]) == 2
        assert capsys.readouterr().err == "srweb: error: no run with id 7\n"
        with session_scope(write=False) as session:
            folder = Path(list_runs(session)[0].run_dir)
        assert (folder / "last.pt").is_file()
        assert main(["jobs", "delete", "1"]) == 0
        assert capsys.readouterr().out == "run 1 deleted with its folder\n" and not folder.exists()
        assert main(["jobs", "list"]) == 0 and len(capsys.readouterr().out.splitlines()) == 1  # the header only
    finally:
        dispose_engine()
        get_settings.cache_clear()


def _checkpoint(folder: Path, cfg, step: int, exported: bool = False, saved_in: Path | None = None) -> None:
    """A ``last.pt`` with what the folder checks read (no weights)."""
    torch.save(
        {"step": step, "config": cfg.to_dict(), "run_dir": str((saved_in or folder).resolve()), "exported": exported},
        folder / "last.pt",
    )


def test_training_in_a_used_folder_continues_its_run_or_records_where_it_started(tmp_path, monkeypatch):
    from srweb.track.db import init_db, write_transaction
    from srweb.track.runs import set_status
    from srweb.cli.train import start_tracked_run
    from srweb.train.config import TrainConfig

    point_at(monkeypatch, child_env(tmp_path))
    cfg, folder = TrainConfig(model="espcn", scale=2, iterations=50).resolved(), tmp_path / "run"
    start = lambda config, where=folder: write_transaction(lambda s: start_tracked_run(s, config, where))  # noqa: E731
    try:
        init_db()
        first, where = start(cfg)
        assert where == folder.resolve()
        with pytest.raises(ValueError, match=f"belongs to run {first}, which is running; wait"):
            start(cfg)  # two trainings in one folder would overwrite each other's checkpoints
        write_transaction(lambda s: set_status(s, first, "cancelled"))
        folder.mkdir()
        _checkpoint(folder, cfg, step=30)
        # Cancelled (or failed) with the same config: the same run continues, one row, one curve.
        assert start(cfg)[0] == first
        write_transaction(lambda s: set_status(s, first, "failed"))
        # Another config: a new run that says which run and checkpoint it came from.
        longer = TrainConfig(model="espcn", scale=2, iterations=80).resolved()
        second, _ = start(longer)
        with session_scope(write=False) as session:
            run = get_run(session, second)
            assert (run.status, run.parent_id, run.resumed_from) == (
                "running",
                first,
                str(folder.resolve() / "last.pt"),
            )
            assert run.log_path is None  # its output goes to its terminal; `srweb jobs resume` logs to the folder
        # A dead worker's run is marked failed first, so rerunning its command continues it.
        write_transaction(lambda s: setattr(get_run(s, second), "pid", 2**22 + 12345))
        assert start(longer)[0] == second
        write_transaction(lambda s: set_status(s, second, "finished"))
        with pytest.raises(ValueError, match=f"holds run {second}, which finished; .* copy"):
            start(longer)  # its checkpoint and exported weights stay its own
        assert start(cfg, tmp_path / "fresh")[0] == second + 1
    finally:
        dispose_engine()
        get_settings.cache_clear()


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_finishes_the_same_run(tmp_path, monkeypatch):
    import signal

    train = crops(hr_photos(), tmp_path / "train", 4, 48)
    env = child_env(tmp_path)
    args = [
        "train",
        "--model",
        "espcn",
        "--data",
        str(train),
        "--val-data",
        "",
        "--patch-size",
        "8",
        "--batch-size",
        "4",
        "--iterations",
        "4000",
        "--precision",
        "fp32",
        "--ckpt-interval",
        "100000",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    proc = subprocess.Popen(
        [*SRWEB, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    point_at(monkeypatch, env)
    try:
        deadline, step = time.monotonic() + 120, 0
        while not step and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                with session_scope(write=False) as session:
                    runs = list_runs(session)
            except OperationalError:  # the child has not created the database yet
                continue
            step = runs[0].step if runs else 0
        assert step, "the run never reported a step"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err[-2000:]
        stopped = json.loads(out.strip().splitlines()[-1])
        assert stopped["status"] == "cancelled" and 0 < stopped["step"] < 4000
        assert "saving a checkpoint to resume from" in err and "Traceback" not in err
        assert (tmp_path / "run" / "last.pt").exists()  # saved at the interrupt, not at an interval

        finished = _summary(_srweb(args, env, tmp_path))
        assert (finished["run_id"], finished["status"], finished["step"]) == (stopped["run_id"], "finished", 4000)
        with session_scope(write=False) as session:
            (run,) = list_runs(session)
            steps = metric_series(session, run.id, ["loss"], wide=True).index
            assert (run.status, run.step, run.error, run.parent_id) == ("finished", 4000, None, None)
            assert steps.min() < stopped["step"] < steps.max() == 4000  # one curve across both sessions
    finally:
        if proc.poll() is None:
            proc.kill()
        dispose_engine()
        get_settings.cache_clear()


def test_a_finished_folder_is_refused_with_other_settings_tracked_or_not(tmp_path, monkeypatch, capsys):
    """The issue: a run trained in a folder, then the same command with another lr in that folder. It used to
    report "finished" without training and export a card saying lr 5e-4 over the lr 1e-3 weights (untracked),
    or record a "finished 60/50" run named lr5e-4 (tracked)."""
    from srweb.cli import train as cli
    from srweb.cli.train import default_run_dir
    from srweb.train.config import TrainConfig

    train = crops(hr_photos(), tmp_path / "train", 4, 48)
    point_at(monkeypatch, child_env(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.signal, "signal", lambda *_: None)  # pytest keeps its own Ctrl-C
    torch.set_num_threads(1)
    common = [
        "train",
        "--model",
        "espcn",
        "--scale",
        "3",
        "--data",
        str(train),
        "--val-data",
        "",
        "--patch-size",
        "8",
        "--batch-size",
        "4",
        "--iterations",
        "12",
        "--precision",
        "fp32",
    ]
    folder = tmp_path / "fresh"
    try:
        assert main([*common, "--no-track", "--run-dir", str(folder)]) == 0
        card = json.loads((folder / "export" / "espcn-x3.custom.json").read_text())
        capsys.readouterr()
        for extra in (["--no-track"], []):  # untracked, and a tracked run pointed at the folder
            assert main([*common, *extra, "--run-dir", str(folder), "--lr", "0.0005"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(
                f"srweb: error: {folder} holds a run that finished (12 of 12 steps) with other settings (lr 0.001 -> "
                f"0.0005); to train it further, copy the folder"
            ), err
            assert main([*common, *extra, "--run-dir", str(folder)]) == 2  # the same settings: its files stay its own
            assert "holds a run that finished (12 of 12 steps); to train it further" in capsys.readouterr().err
        assert json.loads((folder / "export" / "espcn-x3.custom.json").read_text()) == card
        from srweb.track.db import init_db

        init_db()  # refused before the database was even opened
        with session_scope(write=False) as session:
            assert list_runs(session) == []  # nothing recorded
        # Without --run-dir an untracked run trains in runs/NAME_itN: a longer run does not continue this one.
        assert main([*common, "--no-track"]) == 0
        assert main([*common[:-4], "--iterations", "14", "--precision", "fp32", "--no-track"]) == 0
        capsys.readouterr()
        name = "espcn-x3_f64-32_p8_b4_lr1e-3_l2"
        cfg = TrainConfig(model="espcn", scale=3, patch_size=8, batch_size=4, iterations=14).resolved()
        assert default_run_dir(cfg) == Path("runs") / f"{name}_it14"
        for n in (12, 14):
            assert torch.load(tmp_path / "runs" / f"{name}_it{n}" / "last.pt", weights_only=True)["step"] == n
    finally:
        dispose_engine()
        get_settings.cache_clear()


def test_a_tracked_run_in_a_cancelled_runs_folder_needs_its_settings(tmp_path, monkeypatch):
    from srweb.track.db import init_db, write_transaction
    from srweb.track.runs import set_status
    from srweb.cli.train import start_tracked_run
    from srweb.train.config import ConfigError, TrainConfig

    point_at(monkeypatch, child_env(tmp_path))
    cfg, folder = TrainConfig(model="espcn", scale=3, iterations=60).resolved(), tmp_path / "run"
    start = lambda config, where=folder: write_transaction(lambda s: start_tracked_run(s, config, where))  # noqa: E731
    try:
        init_db()
        first, _ = start(cfg)
        write_transaction(lambda s: set_status(s, first, "cancelled"))
        folder.mkdir()
        _checkpoint(folder, cfg, step=30)
        other = TrainConfig(model="espcn", scale=3, iterations=60, lr=5e-4).resolved()
        with pytest.raises(ConfigError, match=rf"lr 0.001 -> 0.0005; pass a new --run-dir.*jobs resume {first}`"):
            start(other)
        with session_scope(write=False) as session:
            assert [r.id for r in list_runs(session)] == [first]  # no run recorded for the refused one
        # `jobs resume` refuses a run whose folder now holds a checkpoint of other settings.
        from srweb.train.jobs import JobError, resume

        _checkpoint(folder, other, step=40)
        with pytest.raises(JobError, match=rf"run {first} cannot resume: .*lr 0.0005 -> 0.001"):
            resume(first)
        # A folder an untracked run finished in (no record of it) is refused; a copy of it may be extended.
        done = tmp_path / "done"
        done.mkdir()
        _checkpoint(done, cfg, step=60, exported=True)
        with pytest.raises(ConfigError, match="finished \\(60 of 60 steps\\) with other settings \\(lr 0.001"):
            start(other, done)
        with pytest.raises(ConfigError, match="finished \\(60 of 60 steps\\); to train it further"):
            start(cfg, done)
        copy = tmp_path / "copy"
        copy.mkdir()
        _checkpoint(copy, cfg, step=60, exported=True, saved_in=done)
        run_id, _ = start(TrainConfig(model="espcn", scale=3, iterations=90).resolved(), copy)
        with session_scope(write=False) as session:
            assert get_run(session, run_id).resumed_from == str(copy.resolve() / "last.pt")
    finally:
        dispose_engine()
        get_settings.cache_clear()
