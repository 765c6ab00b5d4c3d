"""Crowd rating: vote validation, rater flagging and the statistics (MOS, Wilson, Bradley-Terry)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from scipy.optimize import minimize
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from srweb.track.db import init_db, session_scope
from srweb.track.ratings import (
    VoteRejected,
    assess_rater,
    bradley_terry,
    create_trial,
    effective_count,
    flag_rater,
    get_or_create_rater,
    mean_ci,
    rating_stats,
    submit_vote,
    votes_frame,
    wilson_interval,
)
from srweb.track.schema import Vote, utcnow


@pytest.fixture
def url(db_url):
    """A migrated tracker database: SQLite, then PostgreSQL (``db_url`` in conftest)."""
    init_db(db_url)
    return db_url


def _vote(session, trial, rater, sr=4, ref=3, preferred="sr", **kwargs):
    kwargs.setdefault("rate_limit", None)
    return submit_vote(
        session, trial_id=trial.id, rater_id=rater, score_sr=sr, score_ref=ref, preferred=preferred, **kwargs
    )


# --- hand-computed statistics --------------------------------------------------------------------


def test_mean_ci_by_hand():
    # mean 3, s = sqrt(2.5), se = s / sqrt(5), t(0.975, 4) = 2.776445
    mean, lo, hi = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3.0
    assert lo == pytest.approx(3 - 2.776445 * np.sqrt(2.5 / 5), abs=1e-6)
    assert (lo, hi) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    assert mean_ci([4, 4, 4]) == (4.0, 4.0, 4.0)
    single = mean_ci([5])
    assert single[0] == 5 and np.isnan(single[1]) and np.isnan(single[2])
    assert all(np.isnan(v) for v in mean_ci([]))


def test_clustered_mean_ci_and_effective_count_by_hand():
    # residuals -2 -1 1 2, cluster sums -3 and 3: variance 2/1 * 18 / 16, t(0.975, 1) = 12.7062
    mean, lo, hi = mean_ci([1, 2, 4, 5], clusters=["a", "a", "b", "b"])
    assert mean == 3.0 and (lo, hi) == pytest.approx((3 - 12.7062 * 1.5, 3 + 12.7062 * 1.5), abs=1e-3)
    assert mean_ci([1, 2, 3, 4, 5], clusters=list("abcde")) == pytest.approx(mean_ci([1, 2, 3, 4, 5]))
    one_rater = mean_ci([1, 5, 3], clusters=[7, 7, 7])
    assert one_rater[0] == 3.0 and np.isnan(one_rater[1]) and np.isnan(one_rater[2])
    # identical within raters: variance 2 * 2 * 0.25 / 16 against (1/3) / 4 -> deff 3
    assert effective_count([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(4 / 3)
    assert effective_count([1, 0, 1, 0], ["a", "a", "b", "b"]) == 4  # no excess between raters
    assert effective_count([1, 1, 1], ["a", "b", "c"]) == 3  # no spread


def test_clustered_intervals_keep_their_coverage_when_raters_differ():
    """8 raters x 25 votes, each rater with their own bias: intervals that treat 200 votes as
    independent miss the truth far more than 5% of the time; the ones that treat raters as
    clusters keep close to their 95%. MOS: rater bias sd 0.5, vote noise sd 0.6. Win rate: each
    rater prefers SR with their own probability, Beta(2, 2) around the crowd's 0.5."""
    rng = np.random.default_rng(7)
    raters = np.repeat(np.arange(8), 25)
    hits = {"mos votes": 0, "mos raters": 0, "win votes": 0, "win raters": 0}
    for _ in range(400):
        scores = 3.5 + rng.normal(0, 0.5, 8)[raters] + rng.normal(0, 0.6, raters.size)
        for kind, clusters in (("votes", None), ("raters", raters)):
            _, lo, hi = mean_ci(scores, clusters=clusters)
            hits[f"mos {kind}"] += lo <= 3.5 <= hi
        wins = (rng.random(raters.size) < rng.beta(2, 2, 8)[raters]).astype(float)
        for kind, n, df in (("votes", wins.size, None), ("raters", effective_count(wins, raters), 7)):
            lo, hi = wilson_interval(wins.mean() * n, n, df=df)
            hits[f"win {kind}"] += lo <= 0.5 <= hi
    rate = {kind: hit / 400 for kind, hit in hits.items()}
    assert rate["mos votes"] < 0.7 and rate["win votes"] < 0.8
    # Over 3,000 crowds: MOS 95.2%, win 94.9% (91.5% with the normal quantile instead of t(7)).
    assert 0.88 <= rate["mos raters"] <= 0.99 and 0.89 <= rate["win raters"] <= 0.99


def test_intervals_widen_when_few_raters_cast_the_votes(url):
    """The same 40 votes (half for SR at 5, half for bicubic at 1): from two raters who disagree
    throughout they say little about the crowd; from 40 raters they say much more."""
    intervals = {}
    for n_raters in (2, 40):
        with session_scope(url) as session:
            name = f"m{n_raters}-x2.t"
            raters = [get_or_create_rater(session, f"rater-{n_raters:02d}-{r:02d}").id for r in range(n_raters)]
            for i in range(40):
                rater = raters[i % n_raters]
                sr, preferred = (5, "sr") if raters.index(rater) % 2 == 0 else (1, "bicubic")
                trial = create_trial(session, image_id=f"c{i}", scale=2, weights_name=name)
                _vote(session, trial, rater, sr=sr, ref=3, preferred=preferred)
        with session_scope(url, write=False) as session:
            table = rating_stats(session, n_boot=300, versions=None).set_index("entry")
        row = table.loc[name]
        assert row["mos"] == 3.0 and row["win_rate"] == 0.5 and row["n_raters"] == n_raters
        intervals[n_raters] = {k: row[f"{k}_hi"] - row[f"{k}_lo"] for k in ("mos", "win", "bt")}
    few, many = intervals[2], intervals[40]
    assert few["mos"] > 10 * many["mos"]  # t with one degree of freedom
    assert few["win"] > 1.5 * many["win"] and few["bt"] > 1.5 * many["bt"]


def test_wilson_interval_with_t_quantile():
    assert wilson_interval(8, 10, df=10**6) == pytest.approx(wilson_interval(8, 10), abs=1e-5)
    lo, hi = wilson_interval(8, 10, df=4)
    assert lo < 0.4902 and hi > 0.9433
    assert all(np.isnan(v) for v in wilson_interval(8, 10, df=0))  # one rater: nothing about the crowd


def test_wilson_interval_by_hand():
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert all(np.isnan(v) for v in wilson_interval(0, 0))


def test_bradley_terry_two_players_and_ties():
    p = bradley_terry(np.array([[0, 3], [1, 0]]))
    assert p[0] / p[1] == pytest.approx(3.0, rel=1e-6) and p.sum() == pytest.approx(1.0)
    tie = bradley_terry(np.array([[0, 0.5], [0.5, 0]]))
    assert tie == pytest.approx([0.5, 0.5])


def test_bradley_terry_matches_maximum_likelihood():
    # A tiny round robin: A-B 2:1, B-C 2:1, A-C 3:0 plus one A-C tie (half a win each).
    wins = np.array([[0, 2, 3.5], [1, 0, 2], [0.5, 1, 0]])
    p = bradley_terry(wins)
    n = wins + wins.T
    # MLE score equations: each player's wins equal its expected wins.
    expected = (n * p[:, None] / (p[:, None] + p[None, :])).sum(1)
    assert expected == pytest.approx(wins.sum(1), rel=1e-7)

    def nll(theta):
        theta = np.concatenate([[0.0], theta])
        diff = theta[:, None] - theta[None, :]
        return -(wins * (diff - np.logaddexp(0, diff))).sum()

    theta = minimize(nll, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert np.log(p[1:] / p[0]) == pytest.approx(theta, abs=1e-5)
    assert p[0] > p[1] > p[2]


def test_bradley_terry_prior_batch_and_unplayed():
    unbeaten = bradley_terry(np.array([[0, 4], [0, 0]]), prior=1.0)
    assert np.all(np.isfinite(unbeaten)) and unbeaten[0] / unbeaten[1] == pytest.approx(9.0)  # 4.5 : 0.5
    batch = bradley_terry(np.stack([np.array([[0, 3], [1, 0]]), np.array([[0, 1], [3, 0]])]))
    assert batch.shape == (2, 2) and batch[0, 0] / batch[0, 1] == pytest.approx(3) and batch[1, 1] > batch[1, 0]
    lonely = bradley_terry(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]]))
    assert lonely[:2] == pytest.approx([0.5, 0.5]) and np.isnan(lonely[2])


# --- repository functions ------------------------------------------------------------------------


def test_raters_and_trials(url):
    with session_scope(url) as session:
        rater = get_or_create_rater(session)
        assert len(rater.id) >= 16 and not rater.flagged
        assert get_or_create_rater(session, rater.id) is rater
        with pytest.raises(ValueError):
            get_or_create_rater(session, "bad token!")
        trial = create_trial(session, image_id="set5/baby/0", scale=4, weights_name="edsr-x4.div2k")
        assert trial.kind == "model" and isinstance(trial.left_is_sr, bool)
        anchor = create_trial(
            session, image_id="set5/baby/0", scale=4, kind="hr", weights_name="ignored", left_is_sr=False
        )
        assert anchor.weights_name is None and anchor.left_is_sr is False
        with pytest.raises(ValueError):
            create_trial(session, image_id="x", scale=4)  # model trial without weights
        with pytest.raises(ValueError):
            create_trial(session, image_id="x", scale=4, kind="bilinear")
        with pytest.raises(ValueError):
            create_trial(session, image_id="x", scale=4, weights_name="bicubic")
        sides = {create_trial(session, image_id="x", scale=2, weights_name="w").left_is_sr for _ in range(40)}
        assert sides == {True, False}


def test_submit_vote_rejections(url):
    now = utcnow()
    with session_scope(url) as session:
        rater = get_or_create_rater(session, "rater-aaaa").id
        other = get_or_create_rater(session, "rater-bbbb").id
        trial = create_trial(session, image_id="i", scale=2, weights_name="w", now=now)
        mine = create_trial(session, image_id="i", scale=2, weights_name="w", rater_id=other, now=now)
        old = create_trial(session, image_id="i", scale=2, weights_name="w", now=now - timedelta(hours=3))

        def rejected(reason, **kwargs):
            args = dict(
                trial_id=trial.id, rater_id=rater, score_sr=4, score_ref=3, preferred="sr", rate_limit=None, now=now
            )
            args.update(kwargs)
            with pytest.raises(VoteRejected) as info:
                submit_vote(session, **args)
            assert info.value.reason == reason

        for bad in (0, 6, 3.5, True, "4", None):
            rejected("invalid", score_sr=bad)
        rejected("invalid", score_ref=9)
        rejected("invalid", preferred="left")
        rejected("unknown rater", rater_id="nobody-known")
        rejected("unknown trial", trial_id=10_000)
        rejected("wrong rater", trial_id=mine.id)
        rejected("stale trial", trial_id=old.id)
        submit_vote(
            session,
            trial_id=old.id,
            rater_id=rater,
            score_sr=4,
            score_ref=3,
            preferred="sr",
            max_trial_age=None,
            now=now,
            rate_limit=None,
        )
        vote = _vote(session, trial, rater, now=now)
        assert vote.id and vote.created_at == now
        rejected("duplicate")
        assert _vote(session, mine, other, preferred="tie", now=now).preferred == "tie"
        assert session.query(Vote).count() == 3


def test_rate_limit_window(url):
    now = utcnow()
    with session_scope(url) as session:
        rater = get_or_create_rater(session, "fast-rater").id
        trials = [create_trial(session, image_id=f"i{i}", scale=2, weights_name="w", now=now) for i in range(5)]
        for i in range(3):
            _vote(session, trials[i], rater, now=now + timedelta(seconds=i), rate_limit=(3, 10.0))
        with pytest.raises(VoteRejected) as info:
            _vote(session, trials[3], rater, now=now + timedelta(seconds=5), rate_limit=(3, 10.0))
        assert info.value.reason == "rate limited"
        _vote(session, trials[3], rater, now=now + timedelta(seconds=10.5), rate_limit=(3, 10.0))


def test_votes_are_append_only_in_the_database(url):
    with session_scope(url) as session:
        rater = get_or_create_rater(session, "rater-append").id
        _vote(session, create_trial(session, image_id="i", scale=2, weights_name="w"), rater)
    for statement in ("UPDATE votes SET score_sr = 1", "DELETE FROM votes"):
        with pytest.raises(IntegrityError, match="append-only"):
            with session_scope(url) as session:
                session.execute(text(statement))


def test_anchor_flagging(url):
    with session_scope(url) as session:
        honest = get_or_create_rater(session, "honest-rater").id
        spammer = get_or_create_rater(session, "spammer-rater").id
        sloppy = get_or_create_rater(session, "sloppy-rater").id
        manual = get_or_create_rater(session, "manual-rater").id

        def anchor(kind):
            return create_trial(session, image_id="a", scale=2, kind=kind)

        _vote(session, anchor("hr"), honest, sr=5, ref=3)
        _vote(session, anchor("nearest"), honest, sr=2, ref=3, preferred="bicubic")
        _vote(session, anchor("nearest"), spammer, sr=5, ref=3)
        assert assess_rater(session, spammer) is None  # one anchor kind alone proves nothing
        _vote(session, anchor("hr"), spammer, sr=3, ref=3, preferred="tie")
        _vote(session, anchor("hr"), sloppy, sr=2, ref=4, preferred="bicubic")
        flag_rater(session, manual, "abusive comments")
        _vote(session, anchor("hr"), manual, sr=1, ref=5, preferred="bicubic")
    with session_scope(url) as session:
        raters = {r: get_or_create_rater(session, r) for r in (honest, spammer, sloppy, manual)}
        assert not raters[honest].flagged
        assert raters[spammer].flagged and "nearest-neighbour anchor rated above HR" in raters[spammer].flag_reason
        assert raters[sloppy].flagged and "below bicubic" in raters[sloppy].flag_reason
        assert raters[manual].flag_reason == "abusive comments"  # manual flags are not overwritten
        # The spammer's votes stay stored but leave the statistics.
        assert spammer in set(votes_frame(session, include_flagged=True)["rater_id"])
        assert spammer not in set(votes_frame(session)["rater_id"])
        flag_rater(session, sloppy, None)
        assert not raters[sloppy].flagged


def test_a_rater_who_scores_everything_alike_is_flagged_after_two_anchors_of_each_kind(url):
    with session_scope(url) as session:
        flat = get_or_create_rater(session, "flat-rater").id
        careful = get_or_create_rater(session, "careful-rater").id
        for kind in ("hr", "nearest"):
            _vote(session, create_trial(session, image_id="a", scale=2, kind=kind), flat, sr=3, ref=3, preferred="tie")
        assert assess_rater(session, flat) is None  # one pair of anchors: could be one slip
        for kind in ("hr", "nearest"):
            _vote(session, create_trial(session, image_id="b", scale=2, kind=kind), flat, sr=3, ref=3, preferred="tie")
        assert assess_rater(session, flat) == "anchor: nearest-neighbour anchors not rated below HR"
        # A careful rater may tie one pair, as long as HR wins on average.
        for sr_hr, sr_nearest in ((4, 4), (5, 2)):
            _vote(session, create_trial(session, image_id="c", scale=2, kind="hr"), careful, sr=sr_hr, ref=3)
            _vote(
                session,
                create_trial(session, image_id="c", scale=2, kind="nearest"),
                careful,
                sr=sr_nearest,
                ref=3,
                preferred="bicubic",
            )
        assert assess_rater(session, careful) is None


def test_rating_stats_small_example(url):
    with session_scope(url) as session:
        raters = [get_or_create_rater(session, f"rater-{i:04d}").id for i in range(3)]
        votes = [  # (rater, weights, score_sr, score_ref, preferred)
            (0, "a-x2.t", 4, 3, "sr"),
            (1, "a-x2.t", 5, 2, "sr"),
            (2, "a-x2.t", 3, 3, "tie"),
            (0, "b-x2.t", 2, 3, "bicubic"),
            (1, "b-x2.t", 3, 3, "sr"),
        ]
        for i, (r, weights, sr, ref, preferred) in enumerate(votes):
            trial = create_trial(session, image_id=f"img{i}", scale=2, weights_name=weights)
            _vote(session, trial, raters[r], sr=sr, ref=ref, preferred=preferred)
        _vote(session, create_trial(session, image_id="z", scale=4, weights_name="a-x4.t"), raters[0], sr=5, ref=1)
        table = rating_stats(session, n_boot=100)
        again = rating_stats(session, n_boot=100)
    assert table.equals(again)  # seeded bootstrap: deterministic
    rows = table.set_index(["scale", "entry"])
    a = rows.loc[(2, "a-x2.t")]
    assert a["kind"] == "model" and a["n_ratings"] == 3 and a["n_raters"] == 3
    assert (a["mos"], a["mos_lo"], a["mos_hi"]) == pytest.approx(mean_ci([4, 5, 3]))
    assert (a["wins"], a["ties"], a["losses"]) == (2, 1, 0) and a["win_rate"] == pytest.approx(2.5 / 3)
    assert (a["win_lo"], a["win_hi"]) == pytest.approx(wilson_interval(2.5, 3, df=2))  # one vote per rater
    assert wilson_interval(2.5, 3, df=2)[0] < wilson_interval(2.5, 3)[0]  # t(2) is wider than the normal
    b = rows.loc[(2, "b-x2.t")]
    assert b["mos"] == 2.5 and b["win_rate"] == 0.5
    bicubic = rows.loc[(2, "bicubic")]
    assert bicubic["kind"] == "reference" and bicubic["mos"] == pytest.approx(14 / 5) and bicubic["bt"] == 0
    assert bicubic["n_ratings"] == 5
    # BT against bicubic with one virtual tie per compared pair: a won 2.5+0.5 of 4, b 1+0.5 of 3.
    assert a["bt"] == pytest.approx(np.log(3.0 / 1.0), abs=1e-6)
    assert b["bt"] == pytest.approx(0.0, abs=1e-6)
    assert a["bt_lo"] <= a["bt"] <= a["bt_hi"]
    assert table["scale"].tolist()[:3] == [2, 2, 2] and table["entry"].tolist()[0] == "a-x2.t"
    assert rows.loc[(4, "a-x4.t")]["n_ratings"] == 1 and np.isnan(rows.loc[(4, "a-x4.t")]["mos_lo"])
    assert set(rating_stats(session, scale=4, n_boot=0)["scale"]) == {4}


# --- simulated crowd -----------------------------------------------------------------------------


def _simulate(session, rng, n_honest=40, n_spammers=8):
    models = {f"m{i}-x4.sim": q for i, q in enumerate([2.3, 2.7, 3.1, 3.5, 3.9])}
    q_bicubic, q_hr, q_nearest = 2.9, 4.8, 1.6
    now = utcnow()

    def score(q, bias):
        return int(np.clip(np.rint(q + bias + rng.normal(0, 0.6)), 1, 5))

    def preference(sr, ref):
        return "sr" if sr > ref else "bicubic" if sr < ref else "tie"

    spammers = []
    for r in range(n_honest + n_spammers):
        spam = r >= n_honest
        rater = get_or_create_rater(session, f"sim-rater-{r:03d}").id
        if spam:
            spammers.append(rater)
        bias = rng.normal(0, 0.3)
        plan = [(name, "model", q) for name, q in models.items() for _ in range(5)]
        plan += [(None, "hr", q_hr)] * 2 + [(None, "nearest", q_nearest)] * 2
        for i in rng.permutation(len(plan)):
            name, kind, q = plan[i]
            trial = create_trial(session, image_id=f"crop{i}", scale=4, kind=kind, weights_name=name, now=now)
            if spam:  # inverted on models, nearest-neighbour over HR on anchors
                sr = {"hr": 1, "nearest": 5}.get(kind, 6 - score(q, 0))
                ref = int(rng.integers(1, 6))
            else:
                sr, ref = score(q, bias), score(q_bicubic, bias)
            submit_vote(
                session,
                trial_id=trial.id,
                rater_id=rater,
                score_sr=sr,
                score_ref=ref,
                preferred=preference(sr, ref),
                rate_limit=None,
                now=now,
            )
    return models, spammers


@pytest.mark.slow
def test_simulated_crowd_recovers_true_ranking(url):
    rng = np.random.default_rng(2024)
    with session_scope(url) as session:
        models, spammers = _simulate(session, rng)
    with session_scope(url, write=False) as session:
        flagged = {rater for (rater,) in session.execute(text("SELECT id FROM raters WHERE flagged"))}
        table = rating_stats(session, n_boot=200, seed=1)
        polluted = rating_stats(session, include_flagged=True, n_boot=0)
    assert flagged == set(spammers)
    true_order = sorted(models, key=models.get, reverse=True)
    rated = table[table["kind"] == "model"]
    assert rated.sort_values("mos", ascending=False)["entry"].tolist() == true_order
    assert rated.sort_values("bt", ascending=False)["entry"].tolist() == true_order
    assert (rated["n_raters"] == 40).all() and (rated["n_ratings"] == 200).all()
    rows = table.set_index("entry")
    for name, q in models.items():
        assert rows.loc[name, "mos_lo"] <= rows.loc[name, "mos"] <= rows.loc[name, "mos_hi"]
        assert rows.loc[name, "bt_lo"] <= rows.loc[name, "bt"] <= rows.loc[name, "bt_hi"]
        assert rows.loc[name, "win_lo"] <= rows.loc[name, "win_rate"] <= rows.loc[name, "win_hi"]
        assert (rows.loc[name, "bt"] > 0) == (q > 2.9)  # better than bicubic <=> positive BT score
    assert rows.loc["hr", "mos"] > rows.loc[true_order[0], "mos"]
    assert rows.loc["nearest", "mos"] < rows.loc[true_order[-1], "mos"]
    assert rows.loc["hr", "bt"] > rows.loc[true_order[0], "bt"]
    # With the spammers' votes the references would be distorted.
    assert polluted.set_index("entry").loc["nearest", "mos"] > rows.loc["nearest", "mos"] + 0.3
