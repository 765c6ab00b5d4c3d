"""Blind rating trials served from a pool of precomputed benchmark crops.

The pool lives under ``settings.cache_dir / "rating_pool"``::

    index.json                          crops, scales, and entries (weights name -> scale, sha256)
    crops/<crop>/region.png             HR crop plus a context margin (the models' input area)
    crops/<crop>/hr.png                 the HR crop, CROP x CROP
    crops/<crop>/x<s>/bicubic.png       MATLAB-bicubic upscale of the LR (the reference side)
    crops/<crop>/x<s>/nearest.png       nearest-neighbour upscale (a low anchor)
    crops/<crop>/x<s>/sr/<weights>.png  a weights entry's output
    crops/<crop>/x<s>/jpeg75/...        the same (bicubic.png, sr/<weights>.png) from the LR saved as JPEG-75

Crops come from Set5 (the built-in sample set when Set5 is missing): the most textured
CROP-pixel squares of each image. LR is MATLAB ``imresize(region, 1/s, 'bicubic')`` of the
region, so each crop is degraded as in the SR protocol and the models' zero padding stays in the
margin. Building is idempotent and incremental: a new or changed weights entry (by sha256) adds
only its own outputs, and the index is rewritten after each entry so trials use it at once.

A trial is drawn by reading the index and two PNG paths: no model runs while a rater waits.
As in the SRGAN MOS study (Ledig et al. 2017), a share of trials are hidden anchors: the HR crop
(``kind="hr"``) or the nearest-neighbour upscale (``kind="nearest"``) beside bicubic.

A share (``JPEG_SHARE``) of model trials show both sides upscaled from the LR saved as a JPEG of
quality 75 (Pillow, as photos are saved), so that crowd scores speak for photos too; the trial's
``image_id`` then reads ``<crop>@jpeg75`` (:func:`srweb.track.ratings.trial_image_id`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from srweb.config import get_settings
from srweb.imaging.fileio import atomic_save_png, atomic_write_bytes
from srweb.track.db import init_db, session_scope, write_transaction
from srweb.track.ratings import (
    ANCHOR_KINDS,
    INPUT_SEPARATOR,
    VoteRejected,
    trial_image_id,
    assess_rater,
    create_trial,
    get_or_create_rater,
    get_trial,
    is_flagged,
    new_rater_token,
    submit_vote,
    trials_shown,
    vote_count,
)
from srweb.data.degradations import jpeg
from srweb.data.folders import list_images, make_lr, mod_crop, read_rgb8
from srweb.data.samples import benchmark_path
from srweb.imaging.resize import imresize_np
from srweb.inference.upscaler import Upscaler
from srweb.weights.files import WeightsError, list_weights, resolve_weights

log = logging.getLogger(__name__)

CROP = 144
"""HR crop side in pixels (a multiple of ALIGN)."""
MARGIN = 24
"""Context pixels around a crop given to the models and cut away afterwards."""
ALIGN = 24
"""Crop positions and sizes are multiples of this, so LR sizes are exact at every scale dividing it."""
CROPS_PER_IMAGE = 2
MAX_CROPS = 12
ANCHOR_SHARE = 0.2
"""Fraction of trials that are hidden anchors (half HR, half nearest-neighbour)."""
DEFAULT_SCALES = (2, 3, 4)
"""Scales prepared for anchors when no weights entry exists yet."""
ZOOM = 3
"""Display magnification (pixel replication, so no resampler blurs the comparison)."""
INDEX_VERSION = 1
JPEG_SHARE = 0.3
"""Fraction of model trials upscaled from the JPEG-75 LR instead of the clean one."""
JPEG_INPUT = "jpeg75"


class PoolUnavailable(RuntimeError):
    """No crops could be prepared (no benchmark images)."""


@dataclass(frozen=True)
class Pool:
    """A read-only view of ``index.json``.

    Attributes:
        root: the pool folder.
        dataset: where the crops come from (``"Set5"`` or ``"sample"``).
        crops: crop id -> ``{"source", "box": [x, y], "region": [x0, y0, x1, y1]}``.
        scales: scales whose bicubic / nearest images exist.
        entries: weights name -> ``{"scale", "sha256", "arch"}`` with outputs for every crop.
        failed: weights name -> fingerprint of a checkpoint that could not run (not retried).
        jpeg_scales: scales whose JPEG-75 bicubic images exist.
    """

    root: Path
    dataset: str
    crops: dict[str, dict[str, Any]]
    scales: tuple[int, ...]
    entries: dict[str, dict[str, Any]]
    failed: dict[str, str]
    jpeg_scales: tuple[int, ...] = ()

    def image_path(self, crop_id: str, scale: int, what: str, trial_input: str = "clean") -> Path:
        """``what``: ``"hr"``, ``"bicubic"``, ``"nearest"`` or a weights name; ``trial_input``
        ``"jpeg75"``: the image upscaled from the JPEG-75 LR (bicubic or a weights entry)."""
        base = self.root / "crops" / crop_id
        if what == "hr":
            return base / "hr.png"
        folder = base / f"x{scale}" / (JPEG_INPUT if trial_input == JPEG_INPUT else "")
        if what in ("bicubic", "nearest"):
            return folder / f"{what}.png"
        return folder / "sr" / f"{what}.png"

    def has_jpeg(self, name: str) -> bool:
        """The entry's JPEG-75 outputs exist (and bicubic's at its scale)."""
        entry = self.entries.get(name) or {}
        return JPEG_INPUT in entry.get("inputs", ()) and int(entry.get("scale", 0)) in self.jpeg_scales

    def anchor_scales(self) -> tuple[int, ...]:
        """Scales anchors are drawn at: those of the entries, else every prepared scale."""
        used = {int(e["scale"]) for e in self.entries.values()} & set(self.scales)
        return tuple(sorted(used)) or self.scales


@dataclass(frozen=True)
class TrialView:
    """What a rater sees: two images of the same crop, candidate and bicubic in random order.

    Model names and the trial kind are left out on purpose.
    """

    trial_id: int
    left: Path
    right: Path
    scale: int


@dataclass(frozen=True)
class VoteOutcome:
    """The result of :func:`submit_rating`.

    Attributes:
        accepted: the vote was stored.
        reason: the rejection code of :class:`srweb.track.ratings.VoteRejected`, or None.
        message: one sentence for the rater.
        advance: show the next trial (False: keep the current one so the scores are not lost).
        count: votes this rater has stored (None after a rejection).
        flagged: the rater is flagged after this vote (their votes are left out of scores).
    """

    accepted: bool
    reason: str | None
    message: str
    advance: bool
    count: int | None = None
    flagged: bool = False


REJECTION_MESSAGES = {
    "invalid": ("Score both images from 1 (Bad) to 5 (Excellent).", False),
    "rate limited": (
        "Slow down a little (at most 10 ratings per 10 seconds); your scores are kept, submit again in a moment.",
        False,
    ),
    "duplicate": ("You already rated this pair; here is the next one.", True),
    "stale trial": ("This pair expired; here is a fresh one.", True),
    "unknown trial": ("This pair is no longer available; here is a fresh one.", True),
    "wrong rater": ("This pair was shown to someone else; here is one for you.", True),
    "unknown rater": ("Your rating session was not recognised; reload the page.", False),
}


def pool_dir() -> Path:
    return get_settings().cache_dir / "rating_pool"


# --- building ---------------------------------------------------------------------------------


def _write_index(root: Path, index: dict[str, Any]) -> None:
    atomic_write_bytes(root / "index.json", json.dumps(index, indent=1, sort_keys=True).encode())


def _read_index(root: Path) -> dict[str, Any] | None:
    path = root / "index.json"
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return index if index.get("version") == INDEX_VERSION and index.get("crops") else None


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """One builder at a time across threads and processes (flock where the OS has it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        try:
            import fcntl  # Unix only: elsewhere the build runs without the lock
        except ImportError:  # Windows: no cross-process lock; atomic writes keep files whole
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _texture_boxes(hr: np.ndarray, count: int) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` most textured CROP squares, overlapping less than a quarter."""
    gray = hr.astype(np.float32).mean(axis=2)
    grad = np.zeros_like(gray)
    grad[:, 1:] += np.abs(np.diff(gray, axis=1))
    grad[1:, :] += np.abs(np.diff(gray, axis=0))
    integral = np.pad(grad.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = gray.shape
    scored = []
    for y in range(0, h - CROP + 1, ALIGN):
        for x in range(0, w - CROP + 1, ALIGN):
            total = integral[y + CROP, x + CROP] - integral[y, x + CROP] - integral[y + CROP, x] + integral[y, x]
            scored.append((float(total), x, y))
    chosen: list[tuple[int, int]] = []
    for _, x, y in sorted(scored, reverse=True):
        overlap = [max(0, CROP - abs(x - cx)) * max(0, CROP - abs(y - cy)) for cx, cy in chosen]
        if all(area < CROP * CROP / 4 for area in overlap):
            chosen.append((x, y))
        if len(chosen) == count:
            break
    return chosen


def _benchmark_images(dataset: str) -> tuple[str, list[Path]]:
    for name in (dataset, "sample"):
        try:
            return name, list_images(benchmark_path(name))
        except ValueError as exc:
            log.info("rating pool: %s unavailable (%s)", name, exc)
    raise PoolUnavailable(f"no benchmark images for the rating pool ({dataset} or the sample set)")


def _make_crops(root: Path, dataset: str) -> dict[str, Any]:
    """Choose crops, save each region and HR crop; return a fresh index."""
    name, paths = _benchmark_images(dataset)
    crops: dict[str, dict[str, Any]] = {}
    for path in paths:
        if len(crops) >= MAX_CROPS:
            break
        hr = mod_crop(read_rgb8(path), ALIGN)
        if min(hr.shape[:2]) < CROP:
            continue
        for x, y in _texture_boxes(hr, min(CROPS_PER_IMAGE, MAX_CROPS - len(crops))):
            crop_id = f"{path.stem}-{x}-{y}"
            region = [
                max(0, x - MARGIN),
                max(0, y - MARGIN),
                min(hr.shape[1], x + CROP + MARGIN),
                min(hr.shape[0], y + CROP + MARGIN),
            ]
            folder = root / "crops" / crop_id
            atomic_save_png(hr[region[1] : region[3], region[0] : region[2]], folder / "region.png")
            atomic_save_png(hr[y : y + CROP, x : x + CROP], folder / "hr.png")
            crops[crop_id] = {"source": path.name, "box": [x, y], "region": region}
    if not crops:
        raise PoolUnavailable(f"no image in {name} is at least {CROP}x{CROP} pixels")
    return {"version": INDEX_VERSION, "dataset": name, "crop": CROP, "crops": crops, "scales": [], "entries": {}}


def _inner(img: np.ndarray, crop: dict[str, Any]) -> np.ndarray:
    """Cut the crop out of an image covering its region."""
    x, y = crop["box"]
    ox, oy = x - crop["region"][0], y - crop["region"][1]
    return img[oy : oy + CROP, ox : ox + CROP]


def _region_lr(
    root: Path, crop_id: str, scale: int, cache: dict[tuple, np.ndarray], trial_input: str = "clean"
) -> np.ndarray:
    """The LR model input of a crop's region, or that LR saved as JPEG-75 (memoised for one build)."""
    key = (crop_id, scale, trial_input)
    if key not in cache:
        if trial_input == JPEG_INPUT:
            cache[key] = jpeg(_region_lr(root, crop_id, scale, cache), 75)
        else:
            with Image.open(root / "crops" / crop_id / "region.png") as region:
                cache[key] = make_lr(np.asarray(region.convert("RGB")), scale)
    return cache[key]


def _add_scale(pool: Pool, index: dict[str, Any], scale: int, lrs: dict) -> None:
    for crop_id, crop in index["crops"].items():
        lr = _region_lr(pool.root, crop_id, scale, lrs)
        atomic_save_png(_inner(imresize_np(lr, scale), crop), pool.image_path(crop_id, scale, "bicubic"))
        nearest = lr.repeat(scale, axis=0).repeat(scale, axis=1)
        atomic_save_png(_inner(nearest, crop), pool.image_path(crop_id, scale, "nearest"))
        jpeg_lr = _region_lr(pool.root, crop_id, scale, lrs, JPEG_INPUT)
        atomic_save_png(
            _inner(imresize_np(jpeg_lr, scale), crop), pool.image_path(crop_id, scale, "bicubic", JPEG_INPUT)
        )
    index["scales"] = sorted({*index["scales"], scale})
    index["jpeg_scales"] = sorted({*index.get("jpeg_scales", []), scale})


def _add_entry(pool: Pool, index: dict[str, Any], card: Any, lrs: dict) -> None:
    upscaler = Upscaler(card.name, card.scale, device="cpu", precision="fp32")
    for crop_id, crop in index["crops"].items():
        for trial_input in ("clean", JPEG_INPUT):
            lr = _region_lr(pool.root, crop_id, card.scale, lrs, trial_input)
            sr = upscaler.upscale(Image.fromarray(lr))
            atomic_save_png(
                _inner(np.asarray(sr.convert("RGB")), crop),
                pool.image_path(crop_id, card.scale, card.name, trial_input),
            )
    index["entries"][card.name] = {
        "scale": int(card.scale),
        "sha256": _fingerprint(card),
        "arch": card.arch,
        "inputs": ["clean", JPEG_INPUT],
    }


def _fingerprint(card: Any) -> str:
    if card.sha256:
        return card.sha256
    try:
        tensors, _ = resolve_weights(card.name)
    except WeightsError:
        return "unknown"
    return f"mtime:{tensors.stat().st_mtime_ns}"


def _checkpoint_sha(fingerprint: str) -> str | None:
    """The card's sha256 a :func:`_fingerprint` holds; None for its stand-ins (no sha in the card)."""
    return None if fingerprint == "unknown" or fingerprint.startswith("mtime:") else fingerprint


def _usable_cards() -> list[Any]:
    return [c for c in list_weights() if ALIGN % int(c.scale) == 0]


def _pending(index: dict[str, Any], cards: list[Any]) -> tuple[list[int], list[Any], bool]:
    """(scales to add, cards to compute, entries to drop?) for an index against the current weights."""
    wanted = {int(c.scale) for c in cards} or (set() if index["scales"] else set(DEFAULT_SCALES))
    entries, failed = index["entries"], index.get("failed", {})
    todo = [
        c
        for c in cards
        if (
            entries.get(c.name, {}).get("sha256") != _fingerprint(c)
            or JPEG_INPUT not in entries.get(c.name, {}).get("inputs", ())
        )
        and failed.get(c.name) != _fingerprint(c)
    ]
    ready = set(index["scales"]) & set(index.get("jpeg_scales", []))  # pools made before JPEG trials lack those
    return sorted(wanted - ready), todo, bool(set(entries) - {c.name for c in cards})


def build_pool(*, dataset: str = "Set5", models: bool = True) -> Pool:
    """Create or bring the pool up to date with the shipped weights; idempotent.

    Args:
        dataset: benchmark to crop (falls back to the built-in sample set).
        models: also compute SR outputs of new or changed weights entries; ``False`` prepares
            only crops and the bicubic / nearest images (fast: no model runs).

    Raises:
        PoolUnavailable: no benchmark images to crop.
    """
    root = pool_dir()
    with _build_lock(root):
        index = _read_index(root) or _make_crops(root, dataset)
        cards = _usable_cards()
        scales, todo, _ = _pending(index, cards)
        pool = _as_pool(root, index)
        lrs: dict[tuple[str, int], np.ndarray] = {}
        for scale in scales:
            _add_scale(pool, index, scale, lrs)
        current = {c.name for c in cards}
        index["entries"] = {name: e for name, e in index["entries"].items() if name in current}
        _write_index(root, index)
        if models:
            for card in sorted(todo, key=lambda c: c.num_params):  # cheap models become available first
                try:
                    _add_entry(pool, index, card, lrs)
                except Exception:  # one broken checkpoint must not block the others (nor be retried)
                    log.exception("rating pool: could not run %s", card.name)
                    index.setdefault("failed", {})[card.name] = _fingerprint(card)
                _write_index(root, index)
        return _as_pool(root, index)


def _as_pool(root: Path, index: dict[str, Any]) -> Pool:
    return Pool(
        root=root,
        dataset=index["dataset"],
        crops=dict(index["crops"]),
        scales=tuple(int(s) for s in index["scales"]),
        entries=dict(index["entries"]),
        failed=dict(index.get("failed", {})),
        jpeg_scales=tuple(int(s) for s in index.get("jpeg_scales", [])),
    )


@lru_cache(maxsize=4)
def _cached_pool(root: str, mtime_ns: int) -> Pool | None:
    index = _read_index(Path(root))
    return None if index is None else _as_pool(Path(root), index)


def load_pool() -> Pool | None:
    """The pool as last written (cached until ``index.json`` changes), or None before the first build."""
    root = pool_dir()
    try:
        mtime = (root / "index.json").stat().st_mtime_ns
    except OSError:
        return None
    return _cached_pool(str(root), mtime)


def is_current(pool: Pool | None) -> bool:
    """True when ``pool`` holds every usable weights entry at its current checkpoint."""
    if pool is None:
        return False
    index = {
        "scales": list(pool.scales),
        "entries": pool.entries,
        "failed": pool.failed,
        "jpeg_scales": list(pool.jpeg_scales),
    }
    scales, todo, stale = _pending(index, _usable_cards())
    return not (scales or todo or stale)


_builder: threading.Thread | None = None
_builder_lock = threading.Lock()


def ensure_pool(*, background: bool = True) -> Pool:
    """A pool ready to draw from, bringing in new weights entries in a background thread.

    Crops and anchors are prepared at once when missing (no model runs); model outputs are
    computed by one daemon thread per process unless ``background`` is False.
    """
    global _builder
    pool = load_pool()
    if pool is None or not pool.scales:
        pool = build_pool(models=False)
    if is_current(pool):
        return pool
    if not background:
        return build_pool()
    with _builder_lock:
        if _builder is None or not _builder.is_alive():
            _builder = threading.Thread(target=_build_quietly, name="srweb-rating-pool", daemon=True)
            _builder.start()
    return pool


def _build_quietly() -> None:
    try:
        build_pool()
    except Exception:
        log.exception("rating pool build failed")


# --- trials and votes -------------------------------------------------------------------------


def _least_seen(options: list[Any], seen: Counter, rng: random.Random) -> Any:
    low = min(seen[o] for o in options)
    return rng.choice([o for o in options if seen[o] == low])


def draw_trial(session: Any, rater_id: str, rng: random.Random | None = None, pool: Pool | None = None) -> TrialView:
    """Pick a crop and a candidate for ``rater_id``, store the Trial, return the two image paths.

    The candidate is a weights entry (the ones this rater has seen least, then their least-seen
    crops) or, with probability ``ANCHOR_SHARE`` (always when no entry is ready), a hidden
    anchor. The candidate's side is random. A model trial shows, with probability ``JPEG_SHARE``,
    both sides upscaled from the crop's LR saved as JPEG-75.

    Raises:
        PoolUnavailable: the pool has not been built.
    """
    rng = rng or random.Random()
    pool = pool or load_pool()
    if pool is None or not pool.crops or not pool.scales:
        raise PoolUnavailable("the rating pool is not ready yet")
    shown = trials_shown(session, rater_id)
    seen_candidates = Counter((kind, name, scale) for kind, name, scale, _ in shown)
    # a crop seen upscaled from its JPEG counts as seen (image ids "<crop>@jpeg75")
    seen_crops = Counter(
        (kind, name, scale, str(image).split(INPUT_SEPARATOR)[0]) for kind, name, scale, image in shown
    )
    entries = {n: e for n, e in pool.entries.items() if int(e["scale"]) in pool.scales}
    if entries and rng.random() >= ANCHOR_SHARE:
        options = [("model", name, int(e["scale"])) for name, e in sorted(entries.items())]
    else:
        options = [(kind, None, s) for kind in ANCHOR_KINDS for s in pool.anchor_scales()]
    kind, name, scale = _least_seen(options, seen_candidates, rng)
    crop_id = _least_seen(sorted(pool.crops), Counter({c: seen_crops[(kind, name, scale, c)] for c in pool.crops}), rng)
    left_is_sr = rng.random() < 0.5
    jpeg_trial = kind == "model" and pool.has_jpeg(name) and rng.random() < JPEG_SHARE
    trial_input = JPEG_INPUT if jpeg_trial else "clean"
    checkpoint = _checkpoint_sha(entries[name]["sha256"]) if kind == "model" else None  # the images' checkpoint
    trial = create_trial(
        session,
        image_id=trial_image_id(crop_id, trial_input),
        scale=scale,
        kind=kind,
        weights_name=name,
        weights_sha256=checkpoint,
        left_is_sr=left_is_sr,
        rater_id=rater_id,
    )
    candidate = pool.image_path(crop_id, scale, name if kind == "model" else kind, trial_input)
    reference = pool.image_path(crop_id, scale, "bicubic", trial_input)
    left, right = (candidate, reference) if left_is_sr else (reference, candidate)
    return TrialView(trial_id=trial.id, left=left, right=right, scale=scale)


def start_rater(token: str | None) -> str:
    """A valid rater token (``token`` if usable, else a fresh one) with its Rater row stored."""
    init_db()
    try:
        return write_transaction(lambda s: get_or_create_rater(s, token if isinstance(token, str) else None).id)
    except ValueError:  # a malformed token (tampered storage): start over
        fresh = new_rater_token()
        return write_transaction(lambda s: get_or_create_rater(s, fresh).id)


def next_trial(token: str, rng: random.Random | None = None) -> TrialView:
    """Draw and store the next trial for the rater ``token`` (see :func:`draw_trial`)."""
    ensure_pool()
    return write_transaction(lambda s: draw_trial(s, token, rng))


def _as_score(value: Any) -> Any:
    """Radio values arrive as ints; API callers may send "4". Anything else is left for validation."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def submit_rating(token: str, trial_id: Any, left_score: Any, right_score: Any) -> VoteOutcome:
    """Store a rater's scores for the left and right image of a trial.

    The preference follows from the scores (equal scores are a tie). The rater is re-assessed
    against their anchor votes afterwards. Rejections come back as an outcome, never raised.
    """
    left, right = _as_score(left_score), _as_score(right_score)

    def vote(session: Any) -> VoteOutcome:
        try:
            tid = int(trial_id)
        except (TypeError, ValueError):
            raise VoteRejected("unknown trial") from None
        trial = get_trial(session, tid)
        if trial is None:
            raise VoteRejected("unknown trial")
        sr, ref = (left, right) if trial.left_is_sr else (right, left)
        comparable = all(isinstance(v, int) for v in (sr, ref))
        preferred = "tie" if not comparable or sr == ref else ("sr" if sr > ref else "bicubic")
        submit_vote(session, trial_id=tid, rater_id=token, score_sr=sr, score_ref=ref, preferred=preferred)
        assess_rater(session, token)
        return VoteOutcome(
            True, None, "Thanks! Here is the next pair.", True, vote_count(session, token), is_flagged(session, token)
        )

    try:
        return write_transaction(vote)
    except VoteRejected as exc:
        message, advance = REJECTION_MESSAGES.get(exc.reason, (str(exc), False))
        return VoteOutcome(False, exc.reason, message, advance)


def rater_vote_count(token: str) -> int:
    """How many votes the rater ``token`` has stored."""
    with session_scope(write=False) as session:
        return vote_count(session, token)


def view_image(path: str | os.PathLike, zoom: int = ZOOM) -> Image.Image:
    """A pool PNG magnified by pixel replication for display."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    return img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST) if zoom > 1 else img
