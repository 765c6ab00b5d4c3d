"""The rating pool: cached crops built incrementally, trial drawing, vote submission for the UI."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from datetime import timedelta

import pytest
from PIL import Image
from sqlalchemy import select

import srweb
from srweb.rating import pool as rating_pool
from srweb.config import get_settings
from srweb.track.db import dispose_engine, init_db, session_scope, write_transaction
from srweb.track.ratings import create_trial, get_or_create_rater, rating_stats
from srweb.track.schema import Trial, Vote, utcnow
from srweb.weights.files import save_weights


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Temp state, cache and weights folders; Set5 is the built-in copy unless the data root has its own."""
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("SRWEB_CACHE_DIR", raising=False)
    monkeypatch.delenv("SRWEB_DATABASE_URL", raising=False)
    monkeypatch.setattr(rating_pool, "MAX_CROPS", 4)  # keeps builds quick on a shared CPU
    get_settings.cache_clear()
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


def add_weights(name: str, arch: str = "espcn", scale: int = 2) -> None:
    save_weights(srweb.create_model(arch, scale), name)


def pool_files(pool) -> dict[str, int]:
    return {str(p.relative_to(pool.root)): p.stat().st_mtime_ns for p in pool.root.rglob("*.png")}


def test_build_pool_is_cached_idempotent_and_incremental(env):
    add_weights("espcn-x2.a")
    pool = rating_pool.build_pool()
    assert pool.root == get_settings().cache_dir / "rating_pool"
    assert pool.dataset.lower() == "set5" and len(pool.crops) == 4
    assert pool.scales == (2,) and set(pool.entries) == {"espcn-x2.a"}
    index = json.loads((pool.root / "index.json").read_text())
    assert set(index["crops"]) == set(pool.crops)
    for crop_id in pool.crops:
        for what in ("hr", "bicubic", "nearest", "espcn-x2.a"):
            with Image.open(pool.image_path(crop_id, 2, what)) as img:
                assert img.size == (rating_pool.CROP, rating_pool.CROP) and img.mode == "RGB"
    assert rating_pool.is_current(pool)

    before = pool_files(pool)
    again = rating_pool.build_pool()
    assert again == pool and pool_files(again) == before  # nothing recomputed

    add_weights("espcn-x2.b")
    add_weights("espcn-x3.c", scale=3)
    assert not rating_pool.is_current(rating_pool.load_pool())
    grown = rating_pool.build_pool()
    after = pool_files(grown)
    assert {k: after[k] for k in before} == before  # old outputs untouched
    new = set(after) - set(before)
    # b's outputs (clean and JPEG-75 LR) + x3 bicubic, nearest, JPEG-75 bicubic and c's two outputs
    assert len(new) == len(pool.crops) * 7
    assert all(pool.image_path(c, 3, what, "jpeg75").exists() for c in pool.crops for what in ("bicubic", "espcn-x3.c"))
    assert all("espcn-x2.b" in k or "/x3/" in k for k in new)
    assert grown.scales == (2, 3) and set(grown.entries) == {"espcn-x2.a", "espcn-x2.b", "espcn-x3.c"}

    (get_settings().weights_dir / "espcn-x2.b.json").unlink()
    assert set(rating_pool.build_pool().entries) == {"espcn-x2.a", "espcn-x3.c"}


def test_broken_weights_are_skipped_and_not_retried(env):
    add_weights("espcn-x2.a")
    add_weights("espcn-x2.broken")
    (get_settings().weights_dir / "espcn-x2.broken.safetensors").write_bytes(b"not tensors")
    pool = rating_pool.build_pool()
    assert set(pool.entries) == {"espcn-x2.a"} and set(pool.failed) == {"espcn-x2.broken"}
    assert rating_pool.is_current(pool)  # no endless rebuilds for a checkpoint that cannot run


def test_anchors_ready_before_models_and_sample_fallback(env, monkeypatch):
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(env / "empty"))  # a fresh install: Set5 is the built-in copy
    get_settings.cache_clear()
    add_weights("espcn-x2.a")
    assert rating_pool.build_pool(models=False).dataset == "Set5"
    shutil.rmtree(get_settings().cache_dir / "rating_pool")
    pool = rating_pool.build_pool(models=False, dataset="Set99")  # a benchmark that is nowhere: the sample set
    assert pool.dataset == "sample" and pool.entries == {} and pool.scales == (2,)
    init_db()
    with session_scope() as session:
        get_or_create_rater(session, "rater-0001")
        views = [rating_pool.draw_trial(session, "rater-0001", random.Random(i)) for i in range(6)]
        kinds = {t.kind for t in session.scalars(select(Trial))}
    assert kinds <= {"hr", "nearest"} and all(v.left.exists() and v.right.exists() for v in views)


def test_draw_trial_balances_entries_and_mixes_anchors(env):
    add_weights("espcn-x2.a")
    add_weights("espcn-x2.b")
    pool = rating_pool.build_pool()
    init_db()
    rng = random.Random(7)
    with session_scope() as session:
        get_or_create_rater(session, "rater-0001")
        views = [rating_pool.draw_trial(session, "rater-0001", rng) for _ in range(200)]
        trials = {t.id: t for t in session.scalars(select(Trial))}
    kinds = Counter(t.kind for t in trials.values())
    assert 0.1 < (kinds["hr"] + kinds["nearest"]) / 200 < 0.3 and kinds["hr"] and kinds["nearest"]
    per_entry = Counter(t.weights_name for t in trials.values() if t.kind == "model")
    assert set(per_entry) == {"espcn-x2.a", "espcn-x2.b"}
    shas = {card.name: card.sha256 for card in srweb.list_weights()}
    # Each trial records the checkpoint its images came from: a later one under the name starts afresh.
    assert all(t.weights_sha256 == shas[t.weights_name] for t in trials.values() if t.kind == "model")
    assert all(t.weights_sha256 is None for t in trials.values() if t.kind != "model")
    assert abs(per_entry["espcn-x2.a"] - per_entry["espcn-x2.b"]) <= 1
    per_crop = Counter(t.image_id.split("@")[0] for t in trials.values() if t.weights_name == "espcn-x2.a")
    assert set(per_crop) == set(pool.crops) and max(per_crop.values()) - min(per_crop.values()) <= 1
    left_share = sum(t.left_is_sr for t in trials.values()) / 200
    assert 0.35 < left_share < 0.65
    for view in views:
        trial = trials[view.trial_id]
        candidate, reference = (view.left, view.right) if trial.left_is_sr else (view.right, view.left)
        assert reference.name == "bicubic.png" and trial.rater_id == "rater-0001"
        expected = {"model": f"{trial.weights_name}.png", "hr": "hr.png", "nearest": "nearest.png"}[trial.kind]
        assert candidate.name == expected
        from_jpeg = trial.image_id.endswith("@jpeg75")  # both sides upscaled from the JPEG-75 LR, or neither
        assert ("jpeg75" in candidate.parts) == ("jpeg75" in reference.parts) == from_jpeg
        assert not hasattr(view, "weights_name") and not hasattr(view, "kind")  # names stay hidden
    jpeg_share = sum(t.image_id.endswith("@jpeg75") for t in trials.values() if t.kind == "model") / sum(
        per_entry.values()
    )
    assert 0.15 < jpeg_share < 0.45
    assert not any(t.image_id.endswith("@jpeg75") for t in trials.values() if t.kind != "model")


def _votes(token: str) -> list[Vote]:
    with session_scope(write=False) as session:
        return list(session.scalars(select(Vote).where(Vote.rater_id == token)))


def test_submit_rating_maps_sides_and_reports_rejections(env):
    add_weights("espcn-x2.a")
    rating_pool.build_pool()
    token = rating_pool.start_rater(None)
    assert rating_pool.start_rater(token) == token
    assert rating_pool.start_rater("bad token!") != "bad token!"

    view = rating_pool.next_trial(token, random.Random(1))
    ok = rating_pool.submit_rating(token, view.trial_id, 5, 2)
    assert ok.accepted and ok.advance and ok.count == 1 and not ok.flagged
    (vote,) = _votes(token)
    with session_scope(write=False) as session:
        left_is_sr = session.get(Trial, view.trial_id).left_is_sr
    assert (vote.score_sr, vote.score_ref) == ((5, 2) if left_is_sr else (2, 5))
    assert vote.preferred == ("sr" if left_is_sr else "bicubic")

    duplicate = rating_pool.submit_rating(token, view.trial_id, 3, 3)
    assert (duplicate.accepted, duplicate.reason, duplicate.advance) == (False, "duplicate", True)
    assert len(_votes(token)) == 1  # counted once

    fresh = rating_pool.next_trial(token)
    for left, right in ((0, 3), (3, 6), (None, 3), (2.5, 3), ("x", 1)):
        rejected = rating_pool.submit_rating(token, fresh.trial_id, left, right)
        assert (rejected.reason, rejected.advance) == ("invalid", False) and "1 (Bad)" in rejected.message
    tie = rating_pool.submit_rating(token, fresh.trial_id, "3", "3")
    assert tie.accepted and tie.count == 2 and _votes(token)[-1].preferred == "tie"

    assert rating_pool.submit_rating(token, 10_000, 3, 3).reason == "unknown trial"
    assert rating_pool.submit_rating(token, "not a number", 3, 3).reason == "unknown trial"
    old = write_transaction(
        lambda s: (
            create_trial(
                s,
                image_id=next(iter(rating_pool.load_pool().crops)),
                scale=2,
                kind="hr",
                rater_id=token,
                now=utcnow() - timedelta(hours=3),
            ).id
        )
    )
    stale = rating_pool.submit_rating(token, old, 4, 3)
    assert (stale.reason, stale.advance) == ("stale trial", True)
    other = rating_pool.start_rater(None)
    theirs = rating_pool.next_trial(other)
    assert rating_pool.submit_rating(token, theirs.trial_id, 4, 3).reason == "wrong rater"
    assert rating_pool.submit_rating("nobody-at-all", fresh.trial_id, 4, 3).reason == "unknown rater"
    assert len(_votes(token)) == 2 and rating_pool.rater_vote_count(token) == 2


def test_rate_limit_keeps_the_trial(env):
    add_weights("espcn-x2.a")
    rating_pool.build_pool()
    token = rating_pool.start_rater(None)
    for _ in range(10):
        assert rating_pool.submit_rating(token, rating_pool.next_trial(token).trial_id, 4, 3).accepted
    limited = rating_pool.submit_rating(token, rating_pool.next_trial(token).trial_id, 4, 3)
    assert (limited.accepted, limited.reason, limited.advance) == (False, "rate limited", False)
    assert rating_pool.rater_vote_count(token) == 10


def test_contradicting_anchor_flags_the_rater(env):
    add_weights("espcn-x2.a")
    pool = rating_pool.build_pool()
    token = rating_pool.start_rater(None)
    model = rating_pool.next_trial(token, random.Random(3))
    rating_pool.submit_rating(token, model.trial_id, 4, 2)
    anchor = write_transaction(
        lambda s: (
            create_trial(s, image_id=next(iter(pool.crops)), scale=2, kind="hr", left_is_sr=True, rater_id=token).id
        )
    )
    outcome = rating_pool.submit_rating(token, anchor, 1, 5)  # HR scored far below bicubic
    assert outcome.accepted and outcome.flagged
    with session_scope(write=False) as session:
        assert rating_stats(session, n_boot=0).empty  # flagged votes are kept but not scored
        assert len(rating_stats(session, include_flagged=True, n_boot=0)) > 0


def test_view_image_zooms_by_pixel_replication(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 3), (10, 20, 30)).save(path)
    view = rating_pool.view_image(path, zoom=3)
    assert view.size == (12, 9) and view.getpixel((11, 8)) == (10, 20, 30)
