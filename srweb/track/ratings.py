"""Blind crowd rating of SR output against bicubic, rater quality control and the statistics.

A *trial* shows one candidate beside the bicubic upscale of the same crop, sides shuffled. The
candidate is a weights entry's output (``kind="model"``) or an anchor of known quality: the HR
ground truth (``"hr"``) or a nearest-neighbour upscale (``"nearest"``). A *vote* scores both sides
1-5 (``score_sr`` for the candidate, ``score_ref`` for bicubic) and names the preferred side.
Votes are append-only. Raters whose anchor votes contradict the scale are flagged: their votes
stay stored but are left out of every statistic.

Statistics per (entry, scale): MOS with a t-distribution 95% CI, number of ratings and raters,
win rate against bicubic (ties count half) with a Wilson 95% interval, and a Bradley-Terry
score from the pairwise outcomes (MM algorithm of Hunter 2004; ties count half a win to each
side) with seeded bootstrap 95% intervals. Every interval treats a rater's votes as one cluster
(they share the rater's bias): the MOS standard error is cluster-robust, the Wilson interval uses
Kish's effective sample size, and the bootstrap resamples raters. BT scores are
natural-log strengths relative to bicubic (0 = as good as bicubic, +0.69 = preferred 2:1 over
bicubic). Reference rows cover bicubic (its ``score_ref`` over every trial), nearest and HR.

Repository functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from srweb.track.schema import PREFERENCES, TRIAL_KINDS, Rater, Trial, Vote, other_checkpoint, utcnow

ANCHOR_KINDS = ("hr", "nearest")
REFERENCE_ENTRIES = ("bicubic", "nearest", "hr")
RATE_LIMIT: tuple[int, float] = (10, 10.0)
"""Default: at most 10 votes per rater in any 10-second window."""
MAX_TRIAL_AGE = timedelta(hours=2)
HR_BELOW_BICUBIC = 2
AUTO_FLAG_PREFIX = "anchor: "
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class VoteRejected(Exception):
    """A vote that was not stored; ``reason`` is a short code for the UI and logs.

    Codes: ``invalid``, ``unknown rater``, ``unknown trial``, ``wrong rater``, ``stale trial``,
    ``duplicate``, ``rate limited``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def new_rater_token() -> str:
    """A fresh opaque session token usable as a rater id."""
    return secrets.token_urlsafe(24)


def get_or_create_rater(session: Session, token: str | None = None) -> Rater:
    """The rater for ``token``, created on first sight (a new token when ``None``)."""
    token = token or new_rater_token()
    if not _TOKEN.match(token):
        raise ValueError("rater token must be 8-64 URL-safe characters")
    rater = session.get(Rater, token)
    if rater is None:
        rater = Rater(id=token, created_at=utcnow(), flagged=False)
        session.add(rater)
        session.flush()
    return rater


def trials_shown(session: Session, rater_id: str) -> list[tuple[str, str | None, int, str]]:
    """``(kind, weights_name, scale, image_id)`` of every trial drawn for ``rater_id``."""
    query = select(Trial.kind, Trial.weights_name, Trial.scale, Trial.image_id).where(Trial.rater_id == rater_id)
    return [tuple(row) for row in session.execute(query)]


def get_trial(session: Session, trial_id: int) -> Trial | None:
    return session.get(Trial, trial_id)


def vote_count(session: Session, rater_id: str) -> int:
    """How many votes ``rater_id`` has stored."""
    return int(session.scalar(select(func.count(Vote.id)).where(Vote.rater_id == rater_id)) or 0)


def is_flagged(session: Session, rater_id: str) -> bool:
    rater = session.get(Rater, rater_id)
    return bool(rater is not None and rater.flagged)


def create_trial(
    session: Session,
    *,
    image_id: str,
    scale: int,
    kind: str = "model",
    weights_name: str | None = None,
    weights_sha256: str | None = None,
    left_is_sr: bool | None = None,
    rater_id: str | None = None,
    now: datetime | None = None,
) -> Trial:
    """Create a trial; ``left_is_sr`` is drawn at random when not given.

    ``rater_id`` binds the trial to the rater it was shown to, so no one else can answer it.
    """
    if kind not in TRIAL_KINDS:
        raise ValueError(f"trial kind must be one of {TRIAL_KINDS}, got {kind!r}")
    if kind == "model" and not weights_name:
        raise ValueError("a model trial needs weights_name")
    if kind == "model" and weights_name in REFERENCE_ENTRIES:
        raise ValueError(f"{weights_name!r} is a reference entry, not a weights name")
    if kind != "model":
        weights_name = weights_sha256 = None
    trial = Trial(
        kind=kind,
        weights_name=weights_name,
        weights_sha256=weights_sha256,
        image_id=image_id,
        scale=int(scale),
        left_is_sr=bool(random.getrandbits(1)) if left_is_sr is None else bool(left_is_sr),
        rater_id=rater_id,
        created_at=now or utcnow(),
    )
    session.add(trial)
    session.flush()
    return trial


def _valid_score(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and 1 <= value <= 5


def submit_vote(
    session: Session,
    *,
    trial_id: int,
    rater_id: str,
    score_sr: int,
    score_ref: int,
    preferred: str,
    rate_limit: tuple[int, float] | None = RATE_LIMIT,
    max_trial_age: timedelta | None = MAX_TRIAL_AGE,
    now: datetime | None = None,
) -> Vote:
    """Validate and store a vote; re-assess the rater after an anchor vote.

    Args:
        rate_limit: ``(max_votes, window_seconds)`` per rater, or None for no limit.
        max_trial_age: trials older than this are stale, or None to accept any age.

    Raises:
        VoteRejected: with ``reason`` as listed on the class; nothing is stored then.
    """
    now = now or utcnow()
    if not (_valid_score(score_sr) and _valid_score(score_ref)):
        raise VoteRejected("invalid", "scores must be integers 1..5")
    if preferred not in PREFERENCES:
        raise VoteRejected("invalid", f"preferred must be one of {PREFERENCES}")
    if session.get(Rater, rater_id) is None:
        raise VoteRejected("unknown rater")
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise VoteRejected("unknown trial")
    if trial.rater_id is not None and trial.rater_id != rater_id:
        raise VoteRejected("wrong rater", "this trial was shown to someone else")
    if max_trial_age is not None and now - trial.created_at > max_trial_age:
        raise VoteRejected("stale trial")
    if session.scalar(select(Vote.id).where(Vote.trial_id == trial_id, Vote.rater_id == rater_id)) is not None:
        raise VoteRejected("duplicate")
    if rate_limit is not None:
        max_votes, window = rate_limit
        recent = session.scalar(
            select(func.count(Vote.id)).where(
                Vote.rater_id == rater_id, Vote.created_at > now - timedelta(seconds=window)
            )
        )
        if recent >= max_votes:
            raise VoteRejected("rate limited", f"at most {max_votes} votes per {window:g} s")
    vote = Vote(
        trial_id=trial_id,
        rater_id=rater_id,
        score_sr=int(score_sr),
        score_ref=int(score_ref),
        preferred=preferred,
        created_at=now,
    )
    try:
        with session.begin_nested():  # the UNIQUE constraint is the last word under concurrency
            session.add(vote)
    except IntegrityError as exc:
        if "unique" in str(exc.orig).lower():
            raise VoteRejected("duplicate") from None
        raise
    if trial.kind in ANCHOR_KINDS:
        assess_rater(session, rater_id)
    return vote


def assess_rater(session: Session, rater_id: str) -> str | None:
    """Flag (or clear an automatic flag on) a rater from their anchor votes; returns the reason.

    Contradictions: an HR anchor scored ``HR_BELOW_BICUBIC`` (2) or more points below the
    bicubic beside it, nearest-neighbour anchors scored above HR anchors on average, or, after
    two anchors of each kind, not below them (someone who gives every image the same score
    cannot tell the ground truth from blocks). Manual flags (reasons not starting with
    ``"anchor: "``) are left alone.
    """
    rows = session.execute(
        select(Trial.kind, Vote.score_sr, Vote.score_ref)
        .join(Trial, Vote.trial_id == Trial.id)
        .where(Vote.rater_id == rater_id, Trial.kind.in_(ANCHOR_KINDS))
    ).all()
    hr = [(sr, ref) for kind, sr, ref in rows if kind == "hr"]
    nearest = [sr for kind, sr, _ in rows if kind == "nearest"]
    problems = []
    if any(ref - sr >= HR_BELOW_BICUBIC for sr, ref in hr):
        problems.append(f"HR anchor rated {HR_BELOW_BICUBIC}+ below bicubic")
    hr_mean = np.mean([sr for sr, _ in hr]) if hr else None
    if hr and nearest and np.mean(nearest) > hr_mean:
        problems.append("nearest-neighbour anchor rated above HR")
    elif len(hr) >= 2 and len(nearest) >= 2 and np.mean(nearest) >= hr_mean:
        problems.append("nearest-neighbour anchors not rated below HR")
    reason = AUTO_FLAG_PREFIX + "; ".join(problems) if problems else None
    rater = session.get(Rater, rater_id)
    if rater is not None and (rater.flag_reason is None or rater.flag_reason.startswith(AUTO_FLAG_PREFIX)):
        rater.flagged, rater.flag_reason = reason is not None, reason
        session.flush()
    return reason


def flag_rater(session: Session, rater_id: str, reason: str | None) -> Rater:
    """Flag a rater by hand (``reason``) or clear any flag (``None``)."""
    rater = session.get(Rater, rater_id)
    if rater is None:
        raise KeyError(f"no rater {rater_id!r}")
    rater.flagged, rater.flag_reason = reason is not None, reason
    session.flush()
    return rater


# --- statistics -------------------------------------------------------------------------------


def mean_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    clusters: Sequence[object] | np.ndarray | None = None,
) -> tuple[float, float, float]:
    """Mean with a two-sided t confidence interval: ``(mean, low, high)``.

    ``clusters`` (the rater of each vote) makes the standard error cluster-robust (CR1, ``G - 1``
    degrees of freedom for ``G`` clusters): one rater's votes share that rater's bias, so they
    count as less than independent votes. Without it every value is its own cluster, which is the
    classic t-interval. NaN bounds for fewer than two clusters; NaN everything for no values.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"),) * 3
    mean = float(x.mean())
    variance, groups = _mean_variance(x, clusters)
    if groups < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, groups - 1) * np.sqrt(variance))
    return mean, mean - half, mean + half


def _mean_variance(x: np.ndarray, clusters: Sequence[object] | np.ndarray | None) -> tuple[float, int]:
    """CR1 sampling variance of ``x.mean()`` and the number of clusters (``s^2 / n`` for singletons)."""
    if clusters is None:
        sums, groups = x - x.mean(), x.size
    else:
        codes = pd.factorize(np.asarray(clusters))[0]
        groups = int(codes.max()) + 1 if codes.size else 0
        sums = np.bincount(codes, weights=x - x.mean(), minlength=groups)
    if groups < 2:
        return float("nan"), groups
    return float(groups / (groups - 1) * np.sum(sums**2) / x.size**2), groups


def effective_count(values: Sequence[float] | np.ndarray, clusters: Sequence[object] | np.ndarray) -> float:
    """Kish's effective sample size ``n / deff`` of clustered values (at most ``n``).

    The design effect ``deff`` is the cluster-robust variance of the mean over the independent one;
    ``n`` when there is no spread or fewer than two clusters to measure it with.
    """
    x = np.asarray(values, dtype=float)
    clustered, groups = _mean_variance(x, clusters)
    independent = x.var(ddof=1) / x.size if x.size > 1 else 0.0
    if groups < 2 or independent <= 0 or clustered <= independent:
        return float(x.size)
    return float(x.size * independent / clustered)


def wilson_interval(successes: float, n: float, confidence: float = 0.95, df: int | None = None) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (NaN, NaN for ``n == 0``); ``n`` may
    be an effective (fractional) count.

    ``df``: take the quantile from Student's t with ``df`` degrees of freedom instead of the normal
    (clusters - 1 for a clustered count, as :func:`mean_ci` does; NaN, NaN for ``df < 1``). With
    the normal quantile, 8 raters' intervals held the crowd's rate 91.5% of the time, 3 raters'
    83.6%; with t, 94.9% and 98.2% (tests/test_ratings.py simulates such crowds).
    """
    if n <= 0 or df is not None and df < 1:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2) if df is None else stats.t.ppf(0.5 + confidence / 2, df))
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z / denominator * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, center - half)), float(min(1.0, center + half))


def bradley_terry(wins: np.ndarray, *, prior: float = 0.0, max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths by the MM algorithm (Hunter 2004).

    Args:
        wins: ``(..., k, k)`` array, ``wins[i, j]`` = times i beat j (a tie adds 0.5 to both
            directions). Leading dimensions are solved independently (used for the bootstrap).
        prior: virtual ties added to every compared pair (``prior / 2`` wins each way); keeps
            strengths finite when a player won or lost everything.

    Returns:
        Strengths ``p`` with the same leading shape and ``k`` last, summing to 1 over players that
        have comparisons; NaN for players without any. Players must form one connected comparison
        graph for the scale to be shared.
    """
    w = np.array(wins, dtype=float)
    k = w.shape[-1]
    w[..., np.arange(k), np.arange(k)] = 0.0
    n = w + np.swapaxes(w, -1, -2)
    if prior:
        w = w + (prior / 2) * (n > 0)
        n = w + np.swapaxes(w, -1, -2)
    active = n.sum(-1) > 0
    total_wins = w.sum(-1)
    p = np.where(active, 1.0, 0.0)
    p = p / np.maximum(p.sum(-1, keepdims=True), 1)
    for _ in range(max_iter):
        pair = p[..., :, None] + p[..., None, :]
        denominator = np.divide(n, pair, out=np.zeros_like(n), where=pair > 0).sum(-1)
        new = np.divide(total_wins, denominator, out=np.zeros_like(p), where=denominator > 0)
        new = new / np.maximum(new.sum(-1, keepdims=True), np.finfo(float).tiny)
        converged = np.max(np.abs(new - p)) < tol
        p = new
        if converged:
            break
    return np.where(active, p, np.nan)


def votes_frame(
    session: Session,
    *,
    scale: int | None = None,
    include_flagged: bool = False,
    versions: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """All votes joined with their trial and rater, one row per vote.

    Columns: ``vote_id, rater_id, flagged, kind, entry, image_id, scale, score_sr, score_ref,
    preferred, input``; ``entry`` is the weights name for model trials and the anchor kind otherwise;
    ``input`` what the images were upscaled from (:data:`TRIAL_INPUTS`).
    ``versions`` (weights name -> sha256 of its current checkpoint) drops votes on other
    checkpoints of those names; votes whose checkpoint was not recorded are kept.
    """
    query = (
        select(
            Vote.id,
            Vote.rater_id,
            Rater.flagged,
            Trial.kind,
            Trial.weights_name,
            Trial.image_id,
            Trial.scale,
            Vote.score_sr,
            Vote.score_ref,
            Vote.preferred,
            Trial.weights_sha256,
        )
        .join(Trial, Vote.trial_id == Trial.id)
        .join(Rater, Vote.rater_id == Rater.id)
        .order_by(Vote.id)
    )
    if scale is not None:
        query = query.where(Trial.scale == scale)
    if not include_flagged:
        query = query.where(Rater.flagged.is_(False))
    columns = [
        "vote_id",
        "rater_id",
        "flagged",
        "kind",
        "entry",
        "image_id",
        "scale",
        "score_sr",
        "score_ref",
        "preferred",
        "sha256",
    ]
    frame = pd.DataFrame(session.execute(query).all(), columns=columns)
    if versions:
        shas = frame["sha256"].astype(object).where(frame["sha256"].notna(), None)  # pandas reads NULL as NaN
        stale = [other_checkpoint(sha, versions.get(name)) for name, sha in zip(frame["entry"], shas)]
        frame = frame[~np.array(stale, dtype=bool)].reset_index(drop=True)
    frame["entry"] = frame["entry"].where(frame["kind"] == "model", frame["kind"])
    frame["input"] = [trial_input_of(image) for image in frame["image_id"]]
    return frame.drop(columns="sha256")


TRIAL_INPUTS = ("clean", "jpeg75")
"""What the compared images were upscaled from: the classic LR, or that LR saved as JPEG quality 75."""
INPUT_SEPARATOR = "@"


def trial_image_id(crop_id: str, trial_input: str = "clean") -> str:
    """The ``image_id`` a trial stores: the crop, with ``@jpeg75`` when its LR was a JPEG."""
    return crop_id if trial_input == "clean" else f"{crop_id}{INPUT_SEPARATOR}{trial_input}"


def trial_input_of(image_id: str) -> str:
    """``"clean"`` or ``"jpeg75"``: what a trial's images were upscaled from (its ``image_id``)."""
    _, sep, suffix = str(image_id).rpartition(INPUT_SEPARATOR)
    return suffix if sep and suffix in TRIAL_INPUTS else "clean"


STATS_COLUMNS = [
    "entry",
    "kind",
    "scale",
    "mos",
    "mos_lo",
    "mos_hi",
    "n_ratings",
    "n_raters",
    "wins",
    "ties",
    "losses",
    "win_rate",
    "win_lo",
    "win_hi",
    "bt",
    "bt_lo",
    "bt_hi",
]


def _bt_scores(
    frame: pd.DataFrame, players: list[str], n_boot: int, seed: int, prior: float, confidence: float
) -> dict[str, tuple[float, float, float]]:
    """BT log-strength vs bicubic (player 0) with bootstrap percentile intervals.

    The bootstrap resamples raters, not votes (one rater's votes share that rater's taste). Every
    vote is one of ``3k`` kinds (candidate x win/tie/loss), so a resample is a multinomial draw of
    rater multiplicities times each rater's kind counts: memory grows with raters and players,
    not with votes.
    """
    index = {name: i for i, name in enumerate(players)}
    candidate = frame["entry"].map(index).to_numpy()
    outcome = frame["preferred"].map({"sr": 0, "tie": 1, "bicubic": 2}).to_numpy()
    rater = pd.factorize(frame["rater_id"])[0]
    k, n_raters = len(players), int(rater.max()) + 1 if len(frame) else 0
    per_rater = np.bincount(rater * 3 * k + candidate * 3 + outcome, minlength=n_raters * 3 * k)
    per_rater = per_rater.reshape(n_raters, 3 * k).astype(float)  # (raters, 3k)
    counts = per_rater.sum(0)  # (3k,)

    def matrices(kinds: np.ndarray) -> np.ndarray:
        """Win matrices for vote-kind counts ``(B, 3k)`` -> ``(B, k, k)``."""
        per = kinds.reshape(kinds.shape[0], k, 3)
        won = per[..., 0] + 0.5 * per[..., 1]
        played = per.sum(-1)
        w = np.zeros((kinds.shape[0], k, k))
        w[:, 1:, 0] = won[:, 1:]
        w[:, 0, 1:] = (played - won)[:, 1:]
        return w

    strength = bradley_terry(matrices(counts[None]), prior=prior)[0]
    point = np.log(strength / strength[0])
    lo = hi = np.full(k, np.nan)
    if n_boot > 0 and n_raters > 1:  # one rater: no spread between raters to resample
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n_raters, np.full(n_raters, 1 / n_raters), size=n_boot) @ per_rater
        boot = bradley_terry(matrices(draws), prior=prior)
        with np.errstate(invalid="ignore", divide="ignore"):
            log_ratio = np.log(boot / boot[:, :1])
        tail = (1 - confidence) / 2 * 100
        lo, hi = np.nanpercentile(log_ratio, [tail, 100 - tail], axis=0)
    return {name: (float(point[i]), float(lo[i]), float(hi[i])) for name, i in index.items()}


def rating_stats(
    session: Session,
    *,
    scale: int | None = None,
    include_flagged: bool = False,
    n_boot: int = 200,
    seed: int = 0,
    bt_prior: float = 1.0,
    confidence: float = 0.95,
    versions: Mapping[str, str | None] | None = None,
    trial_input: str | None = None,
) -> pd.DataFrame:
    """One row per rated entry and scale, plus reference rows ``bicubic``, ``nearest``, ``hr``.

    ``trial_input`` (``"clean"`` or ``"jpeg75"``) keeps only the trials upscaled from that input.

    Columns: ``entry, kind ("model"|"reference"), scale, mos, mos_lo, mos_hi, n_ratings,
    n_raters, wins, ties, losses, win_rate, win_lo, win_hi, bt, bt_lo, bt_hi``. Votes of flagged
    raters are excluded unless ``include_flagged``; ``versions`` as in :func:`votes_frame`.
    Deterministic for a given ``seed``. Sorted by scale, then BT score descending.
    """
    votes = votes_frame(session, scale=scale, include_flagged=include_flagged, versions=versions)
    if trial_input is not None:
        votes = votes[votes["input"] == trial_input]
    rows: list[dict[str, object]] = []
    for s, frame in votes.groupby("scale", sort=True):
        players = ["bicubic"] + sorted(frame["entry"].unique())
        bt = _bt_scores(frame, players, n_boot, seed, bt_prior, confidence)
        for entry in players:
            if entry == "bicubic":
                part, scores = frame, frame["score_ref"]
            else:
                part = frame[frame["entry"] == entry]
                scores = part["score_sr"]
            mos, mos_lo, mos_hi = mean_ci(scores.to_numpy(), confidence, clusters=part["rater_id"].to_numpy())
            row: dict[str, object] = {
                "entry": entry,
                "kind": "model" if entry not in REFERENCE_ENTRIES else "reference",
                "scale": int(s),
                "mos": mos,
                "mos_lo": mos_lo,
                "mos_hi": mos_hi,
                "n_ratings": len(part),
                "n_raters": part["rater_id"].nunique(),
            }
            if entry == "bicubic":
                row.update(
                    wins=0,
                    ties=0,
                    losses=0,
                    win_rate=np.nan,
                    win_lo=np.nan,
                    win_hi=np.nan,
                    bt=0.0,
                    bt_lo=0.0,
                    bt_hi=0.0,
                )
            else:
                counts = part["preferred"].value_counts()
                wins, ties, losses = (int(counts.get(key, 0)) for key in ("sr", "tie", "bicubic"))
                n = wins + ties + losses
                credit = wins + 0.5 * ties
                vote_credit = part["preferred"].map({"sr": 1.0, "tie": 0.5, "bicubic": 0.0}).to_numpy()
                n_eff = effective_count(vote_credit, part["rater_id"].to_numpy())
                win_lo, win_hi = wilson_interval(credit / n * n_eff, n_eff, confidence, df=row["n_raters"] - 1)
                row.update(wins=wins, ties=ties, losses=losses, win_rate=credit / n, win_lo=win_lo, win_hi=win_hi)
                row.update(zip(("bt", "bt_lo", "bt_hi"), bt[entry], strict=True))
            rows.append(row)
    result = pd.DataFrame(rows, columns=STATS_COLUMNS)
    return result.sort_values(["scale", "bt"], ascending=[True, False], kind="stable").reset_index(drop=True)
