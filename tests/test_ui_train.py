"""Train/Runs tab handlers without a browser: validation, duplicate launches, cancel, export, views."""

from __future__ import annotations

import html
import threading
import warnings

import gradio as gr
import pytest
from PIL import Image

from srweb.config import get_settings
from srweb.weights.exports import ExportError, export_run_weights, unique_weights_name
from srweb.models import create_model
from srweb.track import views
from srweb.track.db import dispose_engine, init_db, session_scope, write_transaction
from srweb.track.runs import create_run, get_run, log_metrics, set_status
from srweb.track.schema import Evaluation
from srweb.train import jobs, launch
from srweb.train.config import TrainConfig
from srweb.ui import charts, runs, train
from srweb.weights.files import list_weights, load_weights, save_weights


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fresh state/weights folders and database; workers are never spawned (dispatch is a no-op)."""
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "weights"))
    for name in ("SRWEB_DATABASE_URL", "SRWEB_RUNS_DIR", "SRWEB_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    init_db()
    monkeypatch.setattr(jobs, "dispatch", lambda: [])
    data = tmp_path / "tiny"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 36), (40 * i, 90, 200)).save(data / f"img{i}.png")
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


def form(**changes):
    """Form values in train.FIELDS order: a tiny valid espcn x2 job on the tiny folder."""
    values = dict(
        model="espcn",
        scale=2,
        data="sample",
        data_path="",
        val_data="none",
        patch_size=8,
        batch_size=2,
        iterations=20,
        lr=1e-3,
        optimizer="adam",
        schedule="constant",
        loss="l2",
        precision="auto",
        device="auto",
        val_interval=10,
        pretrained="none",
        freeze_bn=False,
        ema=0.0,
        teacher="none",
        teacher_weight=0.5,
        teacher_unlabelled=False,
        degradation="bicubic",
        degradation_config="",
    )
    values.update(changes)
    return [values[name] for name in train.FIELDS]


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": None}, "lr is required"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"iterations": 2.5}, "iterations must be a whole number"),
        ({"patch_size": 24}, "patch_size 24 at x2 needs 48x48 HR pixels"),
        ({"scale": 8}, "espcn supports scales (2, 3, 4), not 8"),
        ({"data_path": "/no/such/folder"}, "data: dataset '/no/such/folder' not found"),
        ({"val_data": "NoSuchSet"}, "val_data: dataset 'NoSuchSet' not found"),
        ({"device": "cuda:7"}, "device 'cuda:7' is not available"),
        ({"pretrained": "srcnn-x2.general100"}, "'srcnn-x2.general100' is not a checkpoint of espcn"),
        ({"teacher": "/etc/passwd"}, "'/etc/passwd' is not a trained model to distil from"),
        ({"teacher_weight": 0}, "teacher_weight must be in (0, 1]"),
        ({"teacher_unlabelled": True}, "teacher_unlabelled needs a teacher"),
        ({"ema": None}, "ema is required"),
        ({"ema": 1}, "ema must be in [0, 1)"),
        (
            {"degradation": "jpeg", "degradation_config": '{"final": {"jpeg": {"quality": [0, 90]}}}'},
            "final.jpeg.quality must be within 1-100",
        ),
        (
            {"degradation": "realistic", "degradation_config": '{"first": {"noise": {"sigma": [-3, 5]}}}'},
            "first.noise.sigma must be within 0-255",
        ),
        ({"degradation": "realistic"}, "21x21 kernel is larger than the 16x16 HR patch"),
        ({"degradation": "jpeg", "degradation_config": "{not json"}, "degradation config is not valid JSON"),
    ],
)
def test_launch_rejects_bad_hyperparameters_with_the_reason(env, changes, reason):
    values = form(data_path=str(env / "tiny"), **changes) if "data_path" not in changes else form(**changes)
    with pytest.raises(gr.Error) as caught:
        train.launch_job(*values)
    assert reason in html.unescape(caught.value.message)  # messages are HTML-escaped for the toast
    assert views.runs_frame().empty  # nothing queued


def test_launch_queues_a_run_and_selects_it(env):
    message, picker, timer = train.launch_job(*form(data_path=str(env / "tiny")))
    frame = views.runs_frame()
    assert list(frame["status"]) == ["queued"] and message == f"Queued run #{frame['id'][0]}."
    assert picker.value == frame["id"][0] and timer.active is True
    details = views.run_details(frame["id"][0])
    assert details["config"]["data"] == str(env / "tiny") and details["config"]["val_data"] is None


def test_fresh_install_form_defaults_are_offered_and_launch(env, monkeypatch):
    """An empty data root (a fresh clone): the form starts on ``sample`` / ``Set5``, both among the
    dropdowns' choices (Gradio warns at start-up, and refuses an API call, for a value it does not
    list), and those defaults queue a run validated on the built-in Set5."""
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(env / "empty-data"))
    get_settings.cache_clear()
    defaults, choices = train.form_defaults("espcn"), train.dataset_choices()
    assert (defaults["data"], defaults["val_data"]) == ("sample", "Set5")
    assert choices == ["sample", "Set5"]
    train.launch_job(*form(data=defaults["data"], val_data=defaults["val_data"], patch_size=17))
    config = views.run_details(views.runs_frame()["id"][0])["config"]
    assert (config["data"], config["val_data"]) == ("sample", "Set5")
    # A user's own folders join the list once each; their Set5 replaces the built-in one by name.
    for name in ("General-100", "set5"):
        (env / "empty-data" / name).mkdir(parents=True)
    assert train.dataset_choices() == ["sample", "General-100", "set5"]
    assert train.form_defaults("espcn")["val_data"] == "set5"  # the value offered, as spelt there


def test_launch_fine_tunes_from_a_checkpoint_of_the_model(env):
    save_weights(create_model("espcn", 3), "espcn-x3.mine", weights_dir=get_settings().weights_dir)
    assert train.start_choices("espcn") == ["none", "espcn-x3.mine"] and train.start_choices("srcnn") == ["none"]
    train.launch_job(*form(data_path=str(env / "tiny"), pretrained="espcn-x3.mine", freeze_bn=True))
    config = views.run_details(views.runs_frame()["id"][0])["config"]
    assert config["pretrained"] == "espcn-x3.mine" and config["freeze_bn"] is True


def test_launch_averages_and_distils_from_any_trained_model(env):
    save_weights(create_model("srcnn", 4), "srcnn-x4.mine", weights_dir=get_settings().weights_dir)
    assert train.teacher_choices() == ["none", "srcnn-x4.mine"]
    train.launch_job(
        *form(
            data_path=str(env / "tiny"), ema=0.99, teacher="srcnn-x4.mine", teacher_weight=0.3, teacher_unlabelled=True
        )
    )
    config = views.run_details(views.runs_frame()["id"][0])["config"]
    assert (config["ema"], config["teacher"], config["teacher_weight"], config["teacher_unlabelled"]) == (
        0.99,
        "srcnn-x4.mine",
        0.3,
        True,
    )


def test_double_launch_queues_one_run(env):
    values = form(data_path=str(env / "tiny"))
    train.launch_job(*values)
    with pytest.warns(UserWarning, match="identical run"):
        message, picker, _ = train.launch_job(*values)
    assert "already queued" in message
    assert len(views.runs_frame()) == 1
    train.launch_job(*form(data_path=str(env / "tiny"), iterations=21))  # a different config is fine
    assert len(views.runs_frame()) == 2


def test_concurrent_identical_submissions_queue_one_run(env):
    cfg = TrainConfig(
        model="espcn", scale=2, data=str(env / "tiny"), val_data=None, patch_size=8, batch_size=2, iterations=20
    )
    outcomes = []

    def submit():
        try:
            outcomes.append(launch.submit_once(cfg))
        except launch.DuplicateLaunch as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, int) for o in outcomes) == 1 and len(views.runs_frame()) == 1
    assert launch.submit_once(cfg, window=0.0) != outcomes[0]  # once the window has passed it is allowed


def _finished_run(env, *, export: bool = True, name: str = "espcn-x2.custom") -> int:
    run_dir = env / "state" / "runs" / "r1"

    def make(session):
        run = create_run(
            session,
            name="espcn-x2_p8_b2_lr1e-3_l2",
            arch="espcn",
            scale=2,
            config={"model": "espcn", "scale": 2, "device": "cpu"},
            total_steps=20,
        )
        run.run_dir = str(run_dir)
        set_status(session, run.id, "running")
        log_metrics(session, run.id, 10, {"loss": 0.05, "val_psnr": 20.5})
        log_metrics(session, run.id, 20, {"loss": 0.03, "val_psnr": 21.0})
        run.step, run.best_psnr = 20, 21.0
        if export:
            run.weights_name = name
        set_status(session, run.id, "finished")
        return run.id

    if export:
        save_weights(
            create_model("espcn", 2),
            name,
            weights_dir=run_dir / "export",
            metrics=[{"dataset": "Set5", "psnr": 21.0, "ssim": 0.6}],
        )
    return write_transaction(make)


def test_cancel_finished_run_warns_and_changes_nothing(env):
    run_id = _finished_run(env, export=False)
    with pytest.warns(UserWarning, match="already finished"):
        assert train.cancel_job(run_id) == (gr.skip(), gr.skip())
    with pytest.warns(UserWarning, match="only failed or cancelled"):
        train.resume_job(run_id)
    assert views.run_details(run_id)["status"] == "finished"


def test_cancel_queued_run(env):
    train.launch_job(*form(data_path=str(env / "tiny")))
    run_id = int(views.runs_frame()["id"][0])
    message, _ = train.cancel_job(run_id)
    assert message == f"Run #{run_id}: cancelled." and views.run_details(run_id)["status"] == "cancelled"


def test_delete_asks_for_a_selection_and_a_yes_and_refuses_live_runs(env):
    with pytest.warns(UserWarning, match="Select a run first"):
        assert runs.delete_run(None, False) == (gr.skip(), gr.skip())
    run_id = _finished_run(env, export=False)
    assert runs.delete_run(run_id, False) == (gr.skip(), gr.skip())  # "Cancel" in the browser's dialog
    assert views.run_details(run_id)["status"] == "finished"
    message, detail = runs.delete_run(run_id, True)
    assert message.startswith(f"Run {run_id} deleted") and detail is None
    with pytest.raises(KeyError):
        views.run_details(run_id)
    train.launch_job(*form(data_path=str(env / "tiny")))
    queued = int(views.runs_frame()["id"][0])
    with pytest.warns(UserWarning, match="is queued; cancel it first"):
        assert runs.delete_run(queued, True) == (gr.skip(), gr.skip())


def test_export_copies_weights_under_a_unique_name(env):
    run_id = _finished_run(env)
    settings = get_settings()
    card = export_run_weights(run_id)
    assert card.name == "espcn-x2.custom" and card.training["run_id"] == run_id
    model, loaded = load_weights(card.name)  # sha256 of the copy matches its card
    assert loaded.num_params == sum(p.numel() for p in model.parameters())
    assert export_run_weights(run_id).name == card.name  # exporting again: the same entry, no copy
    folders = [settings.weights_dir, settings.user_weights_dir]
    assert unique_weights_name("espcn-x2.custom", folders, run_id) == f"espcn-x2.custom-run{run_id}"
    assert {c.name for c in list_weights()} == {"espcn-x2.custom"}
    other = _finished_run(env)  # another run of the same name: its own entry
    assert export_run_weights(other).name == f"espcn-x2.custom-run{other}"
    with session_scope(write=False) as session:  # the card's Set5 result reaches the leaderboard
        names = {e.weights_name for e in session.query(Evaluation).filter(Evaluation.source == "card")}
    assert names == {"espcn-x2.custom", f"espcn-x2.custom-run{other}"}
    # Exports land beside the state, never among the shipped weights.
    assert {c.name for c in list_weights(settings.user_weights_dir)} == {c.name for c in list_weights()}
    assert not settings.weights_dir.exists() or not any(settings.weights_dir.iterdir())


def test_an_export_never_takes_a_shipped_name(env):
    run_id = _finished_run(env)
    settings = get_settings()
    shipped = save_weights(create_model("espcn", 2), "espcn-x2.custom", weights_dir=settings.weights_dir)
    card = export_run_weights(run_id)
    assert card.name == f"espcn-x2.custom-run{run_id}"
    assert load_weights("espcn-x2.custom")[1].sha256 == shipped.sha256
    assert {c.name for c in list_weights()} == {"espcn-x2.custom", card.name}


def test_export_to_an_unwritable_folder_says_so_and_keeps_the_run(env, monkeypatch):
    run_id = _finished_run(env)
    blocker = env / "not-a-folder"
    blocker.write_text("a file where the user weights folder should be")
    monkeypatch.setenv("SRWEB_USER_WEIGHTS_DIR", str(blocker / "weights"))
    get_settings.cache_clear()
    with pytest.raises(ExportError, match=f"run {run_id}: cannot write to the weights .*not-a-folder"):
        export_run_weights(run_id)
    assert list_weights() == [] and blocker.read_text().startswith("a file")
    monkeypatch.delenv("SRWEB_USER_WEIGHTS_DIR")
    get_settings.cache_clear()
    assert export_run_weights(run_id).name == "espcn-x2.custom"  # the run's export was left intact


def test_export_handler_refreshes_upscale_choices(env):
    run_id = _finished_run(env)
    message, dropdown = runs.export_weights(run_id)
    assert "espcn-x2.custom" in message
    assert "espcn-x2.custom" in [value for _, value in dropdown.choices]


def test_export_refuses_unfinished_missing_or_altered_weights(env):
    run_id = _finished_run(env)
    export_dir = env / "state" / "runs" / "r1" / "export"
    (export_dir / "espcn-x2.custom.safetensors").write_bytes(b"tampered")
    with pytest.raises(ExportError, match="differs from its card"):
        export_run_weights(run_id)
    (export_dir / "espcn-x2.custom.json").unlink()
    with pytest.raises(ExportError, match="missing"):
        export_run_weights(run_id)
    train.launch_job(*form(data_path=str(env / "tiny")))
    queued = int(views.runs_frame(status="queued")["id"][0])
    with pytest.raises(ExportError, match="is queued"):
        export_run_weights(queued)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert runs.export_weights(queued) == (gr.skip(), gr.skip())
    assert any("is queued" in str(w.message) for w in caught)
    assert list_weights() == []


def test_runs_table_filters_sorts_and_overlays(env):
    finished = _finished_run(env, export=False)
    train.launch_job(*form(data_path=str(env / "tiny")))
    train.launch_job(*form(data_path=str(env / "tiny"), model="fsrcnn", scale=3, patch_size=6, lr=1e-3))
    table, compare, detail = runs.load_runs("any", "any", "any", "", "created", True)
    assert list(table.columns) == list(views.RUN_COLUMNS) and len(table) == 3
    assert len(compare.choices) == 3 and detail.choices == compare.choices
    assert list(runs.load_runs("finished", "any", "any", "", "created", True)[0]["id"]) == [finished]
    assert list(runs.load_runs("any", "fsrcnn", "any", "", "created", True)[0]["scale"]) == [3]
    assert len(runs.load_runs("any", "any", 2, "", "created", True)[0]) == 2
    assert len(runs.load_runs("any", "any", "any", "FSRCNN-x3", "created", True)[0]) == 1
    by_psnr = runs.load_runs("any", "any", "any", "", "best PSNR", True)[0]
    assert by_psnr["id"][0] == finished and by_psnr["best PSNR"][0] == 21.0
    row = by_psnr.iloc[0]
    assert (row["steps"], row["device"], row["status"]) == ("20/20", "cpu", "finished")

    frame = views.curves_frame([finished, finished + 1], ["loss", "val_psnr"])
    assert set(frame["run_id"]) == {finished} and len(frame) == 4
    figure = runs.overlay([finished], ["loss", "val_psnr"])
    assert [len(t.x) for t in figure.data] == [2, 2]  # one trace per run per metric
    assert runs.show_config(finished)["config"]["device"] == "cpu"


def test_curves_figure_one_trace_per_run_per_metric():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "run": ["#1 a"] * 3 + ["#2 b"] * 2,
            "step": [10, 20, 10, 10, 20],
            "name": ["loss", "loss", "val_psnr", "loss", "loss"],
            "value": [0.5, 0.3, 20, 0.6, 0.4],
        }
    )
    figure = charts.curves_figure(frame)
    assert [(t.name, len(t.x)) for t in figure.data] == [("#1 a", 2), ("#1 a", 1), ("#2 b", 2)]
    assert sum(t.showlegend for t in figure.data) == 2
    assert "no metrics yet" in [a.text for a in charts.curves_figure(frame.iloc[:0]).layout.annotations]


def test_model_change_loads_paper_defaults():
    scale, patch, lr, optimizer, loss, start = train.on_model_change("vdsr", 3)
    assert scale.value == 3 and (patch, lr, optimizer, loss) == (14, 0.1, "sgd", "l2")
    assert start.value == "none" and start.choices[0][0] == "none"
    assert train.form_defaults("edsr-baseline")["patch_size"] == 48
    assert train.dataset_choices()[0] == "sample"


def test_refresh_skips_unchanged_outputs(env):
    _finished_run(env, export=False)
    state = {}
    table, picker, plot, log, timer, state = train.refresh(None, state)
    assert len(table) == 1 and picker.value == 1 and timer.active is False
    assert len(plot.data) == 2  # loss and val PSNR of run 1
    again = train.refresh(1, state)
    assert again[0] == gr.skip() and again[1] == gr.skip() and again[2] == gr.skip()
    with session_scope(write=False) as session:
        assert get_run(session, 1).status == "finished"


def test_run_picker_values_parse_as_ids():
    assert [train.as_run_id(v) for v in (3, "3", "#12 espcn-x2_p17 (running)", " 7 ", None, "", "abc", True)] == [
        3,
        3,
        12,
        7,
        None,
        None,
        None,
        None,
    ]


def test_launch_with_a_degradation_records_its_whole_chain(env):
    train.launch_job(
        *form(
            data_path=str(env / "tiny"),
            degradation="jpeg",
            degradation_config='{"final": {"jpeg": {"quality": [60, 90]}}}',
        )
    )
    config = views.run_details(views.runs_frame()["id"][0])["config"]
    assert config["degradation"] == "jpeg" and config["degradation_config"]["final"]["jpeg"]["quality"] == [60, 90]
    assert config["degradation_config"]["clean_prob"] == 0.5  # the preset's, spelled out
