"""Leaderboard tab: table from a seeded database, filters, CSV export, charts and background evaluation."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import srweb
from srweb.config import get_settings
from srweb.services import prepare_database
from srweb.track.db import dispose_engine, write_transaction
from srweb.track.evals import record_evaluation, record_speed
from srweb.track.ratings import create_trial, get_or_create_rater, submit_vote
from srweb.ui import leaderboard as lb
from srweb.ui.outputs import output_dir
from srweb.ui.leaderboard_charts import perception_distortion_figure, psnr_params_figure
from srweb.weights.files import save_weights

NAME = "espcn-x2.lb"
SET5 = {"dataset": "Set5", "psnr": 36.5, "ssim": 0.95}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("SRWEB_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    save_weights(
        srweb.create_model("espcn", 2),
        NAME,
        metrics=[SET5],
        inference={"speed": {"ms_per_mpix": 31.5, "fast_path": True, "device": "cpu", "host": "Card CPU"}},
    )
    prepare_database()  # what the app does at start: schema + card seeding
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


def seed_ratings() -> None:
    """Three raters: the model usually beats bicubic (MOS 4, one rater's mean apart from the next:
    raters are the clusters of the intervals), HR always does, nearest never does."""

    def seed(session):
        for r, (a, b) in enumerate([(4, 4), (4, 5), (5, 5)]):
            rater = get_or_create_rater(session, f"rater-{r:04d}").id
            votes = [("model", a, 3), ("model", b, 3), ("model", 3, 3), ("hr", 5, 3), ("nearest", 2, 3)]
            for i, (kind, sr, ref) in enumerate(votes):
                trial = create_trial(
                    session,
                    image_id=f"crop{i}",
                    scale=2,
                    kind=kind,
                    weights_name=NAME if kind == "model" else None,
                    rater_id=rater,
                )
                preferred = "sr" if sr > ref else "bicubic" if sr < ref else "tie"
                submit_vote(
                    session,
                    trial_id=trial.id,
                    rater_id=rater,
                    score_sr=sr,
                    score_ref=ref,
                    preferred=preferred,
                    rate_limit=None,
                )
        record_evaluation(
            session,
            weights_name="bicubic",
            scale=2,
            dataset="Set5",
            psnr=33.66,
            ssim=0.9299,
            protocol={"channel": "y", "crop_border": 2, "degradation": "matlab-bicubic"},
        )
        record_speed(session, weights_name=NAME, device="cpu", ms_per_mpix=123.4)

    write_transaction(seed)


def test_fresh_database_is_filled_from_the_cards(env):
    save_weights(srweb.create_model("espcn", 3), "espcn-x3.bare")  # no metrics on its card
    shown, note, *_, bench = lb.refresh()
    table = shown.data
    bare = table.set_index("weights").loc["espcn-x3.bare"]
    assert bare["scale"] == 3 and bare["params (K)"] > 0 and bare["PSNR Set5"] is None and bare["ratings"] == 0
    assert list(lb.refresh(2)[0].data["weights"]) == [NAME]
    row = table.set_index("weights").loc[NAME]
    assert row["PSNR Set5"] == 36.5 and row["SSIM Set5"] == 0.95 and row["scale"] == 2
    assert row["paper PSNR Set5"] is None  # ESPCN's paper reports no x2
    assert bare["paper PSNR Set5"] == 33.00  # ESPCN x3 (Shi et al.)
    assert row["params (K)"] == pytest.approx(srweb.load_weights(NAME)[1].num_params / 1000, abs=0.05)
    assert row["MOS"] is None and row["ratings"] == 0
    assert row["ms/MP"] == 31.5 and row["speed on"] == "cpu"  # the card's speed, until a bench runs here
    assert bare["ms/MP"] is None
    # Shown at each column's decimals: the paper's 33.00 must not read "33", an empty cell reads "".
    cells = gr.Dataframe(interactive=False).postprocess(shown)
    display = dict(zip(cells.headers, cells.metadata["display_value"][list(table["weights"]).index("espcn-x3.bare")]))
    assert (
        display["paper PSNR Set5"] == "33.00" and display["PSNR Set5"] == "" and display["weights"] == "espcn-x3.bare"
    )
    assert "Set5**: Y, crop 2, matlab-bicubic" in note
    assert [value for _, value in bench.choices] == [lb.ALL, "Set5"]


def test_table_columns_rows_and_filters(env):
    seed_ratings()
    table, note, pd_fig, params_fig, csv_path, _ = lb.refresh(lb.ALL, lb.ALL)
    table = table.data
    assert list(table.columns) == [
        "weights",
        "type",
        "arch",
        "scale",
        "params (K)",
        "PSNR Set5",
        "JPEG-75 Set5",
        "SSIM Set5",
        "paper PSNR Set5",
        "ms/MP",
        "speed on",
        "MOS",
        "MOS 95% CI",
        "MOS clean",
        "MOS JPEG-75",
        "ratings",
        "raters",
        "win % vs bicubic",
        "win 95% CI",
        "BT",
        "BT 95% CI",
    ]
    rows = table.set_index("weights")
    assert set(rows.index) == {NAME, "bicubic", "hr", "nearest"}
    model = rows.loc[NAME]
    assert model["MOS"] == 4.0 and model["ratings"] == 9 and model["raters"] == 3 and model["ms/MP"] == 123.4
    assert model["speed on"] == "cpu"
    lo, hi = (float(v) for v in model["MOS 95% CI"].strip("[]").split(","))
    assert lo < 4.0 < hi
    assert model["win % vs bicubic"] == pytest.approx(100 * (6 + 0.5 * 3) / 9, abs=0.05) and model["BT"] > 0
    assert model["win 95% CI"] and model["BT 95% CI"]
    assert rows.loc["bicubic", "type"] == "reference" and rows.loc["bicubic", "PSNR Set5"] == 33.66
    assert rows.loc["hr", "MOS"] == 5.0 and rows.loc["hr", "PSNR Set5"] is None
    assert "Wilson" in note and "Bradley" in note

    assert lb.refresh(3, lb.ALL)[0].data.empty
    only = lb.refresh(2, "Set5")[0].data
    assert NAME in set(only["weights"]) and [c for c in only.columns if c.startswith("PSNR")] == ["PSNR Set5"]


def test_csv_export_holds_the_full_frame(env):
    seed_ratings()
    frame, _ = lb.load_board()
    csv = pd.read_csv(lb.refresh()[4])
    assert list(csv.columns) == list(frame.columns)
    row = csv.set_index("weights").loc[NAME]
    assert row["psnr_Set5"] == 36.5 and row["protocol_Set5"] == "Y, crop 2, matlab-bicubic"
    assert row["mos"] == pytest.approx(4.0) and row["n_ratings"] == 9 and row["mos_lo"] < 4.0 < row["mos_hi"]
    path = lb.write_csv(frame, 2, "Set5")
    assert path.name == "leaderboard_x2_Set5.csv"
    assert path.parent.parent == output_dir().parent  # a request folder the hourly sweep removes


def test_charts_show_entries_with_intervals(env):
    seed_ratings()
    frame, _ = lb.load_board()
    fig = perception_distortion_figure(frame, "Set5")
    points = {name: (x, y) for trace in fig.data for name, x, y in zip(trace.text, trace.x, trace.y)}
    assert points[NAME] == (36.5, 4.0) and points["bicubic"] == (33.66, pytest.approx(3.0, abs=0.5))
    model_trace = next(t for t in fig.data if NAME in t.text)
    assert model_trace.error_y.array[0] > 0 and model_trace.error_y.arrayminus[0] > 0
    diamonds = next(t for t in fig.data if "bicubic" in t.text)
    assert diamonds.marker.symbol == "diamond"
    lines = [a.text for a in fig.layout.annotations]
    assert any(text.startswith("HR (ground truth) x2: MOS 5.00") for text in lines)

    params = psnr_params_figure(frame, "Set5")
    assert params.layout.xaxis.type == "log"
    assert [(t.text[0], t.y[0]) for t in params.data] == [(NAME, 36.5)]
    assert any("bicubic x2: 33.66 dB" in a.text for a in params.layout.annotations)
    x7 = frame[frame["weights"] == "bicubic"].assign(scale=7, **{"psnr_Set5": 25.05})  # no x7 model
    lines = [a.text for a in psnr_params_figure(pd.concat([frame, x7]), "Set5").layout.annotations]
    assert any("bicubic x2" in text for text in lines) and not any("x7" in text for text in lines)

    empty = perception_distortion_figure(frame.iloc[0:0], "Set5")
    assert not empty.data and "no rated entry" in empty.layout.annotations[0].text


def test_evaluate_runs_in_background_one_at_a_time(env, tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    runner = lb.EvalRunner()
    steps = lb.run_evaluation(runner, "bicubic-x2", str(folder), lb.ALL, lb.ALL, poll=0.2)
    assert "Evaluating bicubic x2" in next(steps)[0]
    with pytest.warns(UserWarning, match="already running"):
        busy = next(lb.run_evaluation(runner, NAME, "Set5", lb.ALL, lb.ALL))
    assert busy[0].startswith("Busy")
    status, table, *_ = list(steps)[-1]
    assert status.startswith("Done: bicubic x2 on tiny") and "recorded" in status
    assert table.data.set_index("weights").loc["bicubic", "PSNR tiny"] > 0

    failing = lb.run_evaluation(runner, "bicubic-x2", str(tmp_path / "missing"), lb.ALL, lb.ALL, poll=0.2)
    assert "failed" in list(failing)[-1][0]
    with pytest.warns(UserWarning, match="Pick weights"):
        next(lb.run_evaluation(runner, None, "Set5", lb.ALL, lb.ALL))
    assert lb.eval_target(NAME) == (NAME, 2) and lb.eval_target("bicubic-x4") == ("bicubic", 4)

    status, table, *_ = list(lb.run_evaluation(runner, NAME, str(folder), lb.ALL, lb.ALL, True, poll=0.2))[-1]
    assert status.startswith(f"Done: {NAME}+ x2 on tiny") and "recorded" in status
    assert table.data.set_index("weights").loc[NAME + "+", "PSNR tiny"] > 0
    refused = list(lb.run_evaluation(runner, "bicubic-x2", str(folder), lb.ALL, lb.ALL, True, poll=0.2))[-1][0]
    assert "failed" in refused and "needs a model" in refused
    assert lb.eval_datasets()[:2] == ["Set5", "sample"]


def test_self_ensemble_results_are_their_own_rows_of_the_served_checkpoint(env):
    sha = srweb.load_weights(NAME)[1].sha256
    protocol = {"channel": "y", "crop_border": 2, "degradation": "matlab-bicubic", "self_ensemble": True}

    def seed(session):
        for psnr, checkpoint in ((36.62, sha), (36.9, "0" * 64)):  # the second: an older checkpoint's result
            record_evaluation(
                session,
                weights_name=NAME + "+",
                scale=2,
                dataset="Set5",
                psnr=psnr,
                ssim=0.951,
                protocol=protocol,
                weights_sha256=checkpoint,
            )

    write_transaction(seed)
    table, note, *_ = lb.refresh(2, lb.ALL)
    rows = table.data.set_index("weights")
    assert rows.loc[NAME + "+", "PSNR Set5"] == 36.62 and rows.loc[NAME, "PSNR Set5"] == 36.5
    assert rows.loc[NAME + "+", "arch"] == "espcn" and rows.loc[NAME + "+", "scale"] == 2
    assert "Y, crop 2, matlab-bicubic, x8 self-ensemble" in note


def test_evaluate_list_offers_weights_exported_since_start(env):
    before = lb.refresh_targets(NAME)
    assert before.value == NAME and "espcn-x3.later" not in [v for _, v in before.choices]
    save_weights(srweb.create_model("espcn", 3), "espcn-x3.later")  # e.g. a run exported from the Runs tab
    after = lb.refresh_targets(NAME)
    assert after.value == NAME and "espcn-x3.later" in [v for _, v in after.choices]
    assert lb.refresh_targets("gone-x2.deleted").value == after.choices[0][1]


def test_lists_start_on_shipped_weights_not_on_an_export_that_sorts_first(env, monkeypatch):
    from srweb.ui.common import default_choice, weights_choices

    # NAME (espcn-x2.*) is in the weights folder; an export of another name sorts before it
    save_weights(srweb.create_model("espcn", 2), "espcn-x2.aaa", weights_dir=get_settings().user_weights_dir)
    choices = weights_choices()
    assert choices[0][1] == "espcn-x2.aaa" and default_choice(choices) == NAME
