"""Rate tab handlers: first trial on load, submit & next, rejections as warnings with nothing lost."""

from __future__ import annotations

import gradio as gr
import pytest
from pathlib import Path

from PIL import Image

import srweb
from srweb.rating import pool as rating_pool
from srweb.config import get_settings
from srweb.track.db import dispose_engine
from srweb.ui import rate
from srweb.weights.files import save_weights


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("SRWEB_CACHE_DIR", raising=False)
    monkeypatch.delenv("SRWEB_DATABASE_URL", raising=False)
    monkeypatch.setattr(rating_pool, "MAX_CROPS", 2)
    get_settings.cache_clear()
    save_weights(srweb.create_model("espcn", 2), "espcn-x2.ui")
    rating_pool.build_pool()
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


def test_start_shows_a_trial_with_hidden_names(env):
    token, trial_id, left, right, left_score, right_score, status = rate.start(None)
    assert token and rate.start(token)[0] == token
    side = rating_pool.CROP * rating_pool.ZOOM
    assert isinstance(trial_id, int)
    # Files named only a.png / b.png in a fresh folder: nothing in a name or path tells the method.
    assert (Path(left).name, Path(right).name) == ("a.png", "b.png") and Path(left).parent == Path(right).parent
    assert not left.startswith(str(rating_pool.pool_dir()))
    with Image.open(left) as a, Image.open(right) as b:
        assert a.size == b.size == (side, side)
    assert left_score is None and right_score is None and "Submit" in status


def test_submit_advances_and_counts(env):
    token, trial_id, *_ = rate.start(None)
    next_id, left, right, left_score, right_score, status = rate.submit(token, trial_id, 4, 2)
    assert next_id != trial_id and Path(left).name == "a.png"
    assert left_score is None and right_score is None and "**1** pair" in status
    assert rating_pool.rater_vote_count(token) == 1


def test_rejections_warn_and_keep_or_advance(env):
    token, trial_id, *_ = rate.start(None)
    with pytest.warns(UserWarning, match="Score both images"):
        kept = rate.submit(token, trial_id, None, 3)
    assert all(is_skip(v) for v in kept)  # trial and the score already given stay on screen
    rate.submit(token, trial_id, 4, 3)
    with pytest.warns(UserWarning, match="already rated"):
        moved = rate.submit(token, trial_id, 4, 3)
    assert moved[0] != trial_id and "**1** pair" in moved[-1]
    with pytest.warns(UserWarning, match="still starting"):
        assert all(is_skip(v) for v in rate.submit(None, trial_id, 4, 3))
    assert rating_pool.rater_vote_count(token) == 1


def test_the_same_crop_never_has_the_same_bytes_or_url_twice(tmp_path):
    from srweb.ui.outputs import image_file

    crop = Image.new("RGB", (8, 8), (40, 90, 200))
    (tmp_path / "1").mkdir(), (tmp_path / "2").mkdir()
    first, second = (
        image_file(crop, "a", tmp_path / "1", unique=True),
        image_file(crop, "a", tmp_path / "2", unique=True),
    )
    assert Path(first).read_bytes() != Path(second).read_bytes()  # Gradio's cache URL is a hash of the bytes
    with Image.open(first) as a, Image.open(second) as b:
        assert a.tobytes() == b.tobytes()  # the same pixels


def test_rater_tokens_survive_an_app_restart(tmp_path, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    try:
        key = rate.browser_secret()
        restarted = subprocess.run(
            [sys.executable, "-c", "from srweb.ui.rate import browser_secret; print(browser_secret())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        assert len(key) >= 32 and restarted == key  # the browser's stored token still decrypts
        path = tmp_path / "state" / "db" / "browser-state.key"  # with the rest of the app's state
        assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == key
        with gr.Blocks() as blocks:
            rate.build_tab()
        assert [b.secret for b in blocks.blocks.values() if isinstance(b, gr.BrowserState)] == [key]
        monkeypatch.setenv("SRWEB_BROWSER_SECRET", "shared-by-every-host")  # several hosts, one database
        get_settings.cache_clear()
        assert rate.browser_secret() == "shared-by-every-host"
    finally:
        get_settings.cache_clear()


def test_tab_builds_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    get_settings.cache_clear()
    with gr.Blocks() as blocks:
        rate.build_tab()
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"rate-left", "rate-right", "rate-left-score", "rate-right-score", "rate-submit"} <= ids
    radio = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "rate-left-score")
    labels = [label for label, _ in radio.choices]
    assert labels == ["1 · Bad", "2 · Poor", "3 · Fair", "4 · Good", "5 · Excellent"]
    get_settings.cache_clear()
