"""Scores on degraded (JPEG-75) inputs in the tracker: their own rows, never mixed with the classic
protocol, and the Leaderboard's JPEG-75 column beside the clean PSNR."""

from __future__ import annotations

import math

import pytest

from srweb.track import evals
from srweb.track.db import dispose_engine, init_db, session_scope
from srweb.track.leaderboard import JPEG75, leaderboard

CLEAN = {"channel": "y", "crop_border": 2, "degradation": "matlab-bicubic"}
JPEG = {**CLEAN, "degradation": JPEG75}


@pytest.fixture
def url(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'db' / 'track.sqlite'}"
    init_db(database_url)
    yield database_url
    dispose_engine(database_url)


def test_a_card_with_clean_and_jpeg_scores_seeds_both_rows(url):
    card = {
        "name": "edsr-baseline-x2.real",
        "arch": "edsr-baseline",
        "scale": 2,
        "num_params": 1_369_859,
        "metrics": [
            {"dataset": "Set5", "psnr": 37.1, "ssim": 0.95, "protocol": CLEAN},
            {"dataset": "Set5", "psnr": 33.3, "ssim": 0.89, "protocol": JPEG},
        ],
    }
    with session_scope(url) as session:
        assert evals.seed_from_cards(session, [card]) == 2
        assert evals.seed_from_cards(session, [card]) == 0  # idempotent, one row per degradation
    with session_scope(url, write=False) as session:
        clean = evals.best_evaluations(session)
        jpeg = evals.best_evaluations(session, degradation=JPEG75)
    assert [(e.psnr, e.protocol["degradation"]) for e in clean] == [(37.1, "matlab-bicubic")]
    assert [(e.psnr, e.protocol["degradation"]) for e in jpeg] == [(33.3, JPEG75)]


def test_a_higher_degraded_score_never_stands_for_the_classic_one(url):
    with session_scope(url) as session:
        evals.record_evaluation(
            session,
            weights_name="bicubic",
            arch="bicubic",
            scale=2,
            dataset="Set5",
            psnr=33.65,
            ssim=0.93,
            protocol=CLEAN,
        )
        # a made-up degraded score above the clean one: it must stay in its own column
        evals.record_evaluation(
            session,
            weights_name="bicubic",
            arch="bicubic",
            scale=2,
            dataset="Set5",
            psnr=40.0,
            ssim=0.99,
            protocol=JPEG,
        )
        evals.record_evaluation(
            session,
            weights_name="espcn-x2.g100",
            arch="espcn",
            scale=2,
            dataset="Set5",
            psnr=36.5,
            ssim=0.95,
            protocol=CLEAN,
        )
    with session_scope(url, write=False) as session:
        frame = leaderboard(session)
    rows = frame.set_index("weights")
    assert rows.loc["bicubic", "psnr_Set5"] == 33.65 and rows.loc["bicubic", "jpeg75_Set5"] == 40.0
    assert math.isnan(rows.loc["espcn-x2.g100", "jpeg75_Set5"])  # not measured: empty, not the clean figure
    columns = list(frame.columns)
    assert columns.index("jpeg75_Set5") == columns.index("psnr_Set5") + 1


def test_the_shown_board_has_a_jpeg75_column_beside_psnr(url):
    from srweb.ui.leaderboard import column_digits, display_frame

    with session_scope(url) as session:
        for name, clean, jpeg in (("bicubic", 33.652, 31.87), ("edsr-baseline-x2.real", 37.2, 33.3)):
            evals.record_evaluation(
                session,
                weights_name=name,
                arch=name.split("-x")[0],
                scale=2,
                dataset="Set5",
                psnr=clean,
                ssim=0.9,
                protocol=CLEAN,
            )
            evals.record_evaluation(
                session,
                weights_name=name,
                arch=name.split("-x")[0],
                scale=2,
                dataset="Set5",
                psnr=jpeg,
                ssim=0.8,
                protocol=JPEG,
            )
    with session_scope(url, write=False) as session:
        frame = leaderboard(session)
    for column in ("mos", "mos_lo", "mos_hi", "win_rate", "win_lo", "win_hi", "bt", "bt_lo", "bt_hi"):
        frame[column] = frame.get(column)
    frame["paper_psnr_Set5"] = float("nan")
    shown = display_frame(frame)
    columns = list(shown.columns)
    assert columns[columns.index("PSNR Set5") + 1] == "JPEG-75 Set5" and column_digits("JPEG-75 Set5") == 2
    assert shown.set_index("weights").loc["edsr-baseline-x2.real", "JPEG-75 Set5"] == 33.3


def test_cards_of_photo_models_say_so_with_their_jpeg_score():
    from srweb.weights.files import WeightsCard
    from srweb.weights.table import card_markdown, markdown_table

    config = {
        "data": "General-100",
        "loss": "l1",
        "iterations": 10,
        "degradation": "jpeg",
        "degradation_config": {"clean_prob": 0.5},
    }
    card = WeightsCard(
        name="edsr-baseline-x2.real",
        arch="edsr-baseline",
        scale=2,
        config={},
        input_kind="rgb",
        upsampling="post",
        num_params=1,
        training={"config": config, "iterations": 10, "data": "General-100", "wall_seconds": 60},
        metrics=[
            {"dataset": "Set5", "psnr": 37.1, "ssim": 0.95, "protocol": CLEAN},
            {"dataset": "Set5", "psnr": 33.3, "ssim": 0.89, "protocol": JPEG},
        ],
    )
    assert card.for_photos and card.metric("Set5")["psnr"] == 37.1 and card.metric("Set5", JPEG75)["psnr"] == 33.3
    row = markdown_table([card], {2: 33.65}, {2: 31.87}).splitlines()[2]
    assert row == (
        "| edsr-baseline-x2.real | photos/JPEG | 10 General-100 (jpeg LR) | 1 min | 37.10 / 0.9500 | 33.30 | - "
        "| 33.65 / 31.87 |"
    )
    text = card_markdown(card)
    assert "JPEG-75 LR" in text and "33.30 dB" in text and "jpeg preset" in text and "paper" not in text


def _photo_weights(folder):
    """Two tiny x2 entries in the weights folder: a clean-trained one and a photo (JPEG) one."""
    import srweb
    from srweb.weights.files import save_weights

    jpeg_stage = {
        "config": {"data": "General-100", "degradation": "jpeg", "degradation_config": {"clean_prob": 0.5}},
        "iterations": 10,
        "data": "General-100",
        "wall_seconds": 6,
    }
    model = srweb.create_model("espcn", 2)
    save_weights(
        model,
        "espcn-x2.clean",
        weights_dir=folder,
        metrics=[{"dataset": "Set5", "scale": 2, "psnr": 36.0, "ssim": 0.95, "protocol": CLEAN}],
    )
    save_weights(
        model,
        "espcn-x2.real",
        weights_dir=folder,
        training=jpeg_stage,
        metrics=[
            {"dataset": "Set5", "scale": 2, "psnr": 35.5, "ssim": 0.95, "protocol": CLEAN},
            {"dataset": "Set5", "scale": 2, "psnr": 32.9, "ssim": 0.89, "protocol": JPEG},
        ],
    )


def test_upscale_picker_marks_photo_models_and_a_jpeg_upload_suggests_one(fresh_state, tmp_path):
    import numpy as np
    from PIL import Image

    from srweb.config import get_settings
    from srweb.ui import common, upscale

    _photo_weights(get_settings().weights_dir)
    labels = {value: label for label, value in upscale.weights_choices()}
    assert "for photos/JPEG · JPEG-75 32.90 dB" in labels["espcn-x2.real"]
    assert "paper setting (clean LR)" in labels["espcn-x2.clean"]
    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", quality=80)
    Image.fromarray(pixels).save(tmp_path / "scan.png")
    (tmp_path / "renamed.png").write_bytes((tmp_path / "phone.jpg").read_bytes())  # a JPEG by content
    assert upscale.photo_model_for("espcn-x2.clean") == "espcn-x2.real"
    assert upscale.photo_model_for("bicubic-x2") == "espcn-x2.real"
    note, button = upscale.suggest_for_upload(str(tmp_path / "phone.jpg"), "espcn-x2.clean")
    assert note["visible"] and "espcn-x2.real" in note["value"] and button["visible"]
    assert upscale.suggest_for_upload(str(tmp_path / "renamed.png"), "espcn-x2.clean")[1]["visible"]
    assert not upscale.suggest_for_upload(str(tmp_path / "scan.png"), "espcn-x2.clean")[0]["visible"]
    note, button = upscale.suggest_for_upload(str(tmp_path / "phone.jpg"), "espcn-x2.real")
    assert note["visible"] and "made for JPEG photos" in note["value"] and not button["visible"]
    # Gradio hands the tab a PNG copy of the upload: the tab remembers that it came as a JPEG
    copy = tmp_path / "gradio-copy.png"
    Image.fromarray(pixels).save(copy)
    common._remember_jpeg(str(tmp_path / "phone.jpg"), str(copy))
    assert common.is_jpeg_upload(str(copy)) and not common.is_jpeg_upload(str(tmp_path / "scan.png"))


def test_leaderboard_shows_mos_per_trial_kind(url):
    from srweb.track.ratings import create_trial, get_or_create_rater, submit_vote, trial_image_id, trial_input_of

    assert trial_image_id("baby-0-0", "jpeg75") == "baby-0-0@jpeg75" and trial_input_of("baby-0-0@jpeg75") == "jpeg75"
    assert trial_input_of("baby-0-0") == "clean" and trial_input_of("odd@name") == "clean"
    with session_scope(url) as session:
        for r in range(3):
            rater = get_or_create_rater(session, f"rater-{r:04d}").id
            for crop, trial_input, score in (
                ("a", "clean", 4),
                ("b", "clean", 4),
                ("a", "jpeg75", 2),
                ("b", "jpeg75", 3),
            ):
                trial = create_trial(
                    session,
                    image_id=trial_image_id(crop, trial_input),
                    scale=2,
                    weights_name="espcn-x2.g100",
                    left_is_sr=True,
                    rater_id=rater,
                )
                submit_vote(
                    session,
                    trial_id=trial.id,
                    rater_id=rater,
                    score_sr=score,
                    score_ref=3,
                    preferred="sr" if score > 3 else "tie" if score == 3 else "bicubic",
                    rate_limit=None,
                )
    with session_scope(url, write=False) as session:
        frame = leaderboard(session, n_boot=10)
    model = frame.set_index("weights").loc["espcn-x2.g100"]
    assert model["mos"] == pytest.approx(3.25) and model["n_ratings"] == 12
    assert model["mos_clean"] == 4.0 and model["n_clean"] == 6
    assert model["mos_jpeg75"] == pytest.approx(2.5) and model["n_jpeg75"] == 6
