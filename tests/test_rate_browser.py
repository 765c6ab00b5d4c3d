"""In real headless Chromium: a rater scores blind pairs in the Rate tab, then the Leaderboard
shows the entry's MOS next to its PSNR, and its confidence interval once a second rater has voted
(the interval is taken across raters).

Uses the ``app_server`` / ``browser_page`` / ``screenshot`` fixtures of ``tests/conftest.py``. The
test rater is an honest oracle: it looks the displayed trial up in the app's database (which side
holds the candidate, and whether it is an anchor) and scores HR > SR > bicubic > nearest.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from srweb.track.db import dispose_engine, session_scope
from srweb.track.evals import best_evaluations
from srweb.track.ratings import create_trial, get_or_create_rater, submit_vote
from srweb.track.schema import Rater, Trial

pytestmark = pytest.mark.browser

CANDIDATE_SCORES = {"hr": 5, "nearest": 2}
MIN_MODEL_VOTES = 3
MAX_TRIALS = 16
MIN_SECONDS_PER_VOTE = 1.1  # stays under the 10 votes / 10 s rate limit


def latest_trial(url: str) -> Trial:
    with session_scope(url, write=False) as session:
        return session.scalars(select(Trial).order_by(Trial.id.desc()).limit(1)).one()


def has_set5_psnr(url: str, name: str) -> bool:
    with session_scope(url, write=False) as session:
        return bool(best_evaluations(session, weights_name=name, dataset="Set5"))


TABLE_JS = """() => {
    const table = document.querySelector('#lb-table');
    const headers = [...table.querySelectorAll('[role=columnheader]')].map(h => h.innerText.trim());
    const rows = [...table.querySelectorAll('[role=row]')]
        .map(r => [...r.querySelectorAll('[role=gridcell]')].map(c => c.innerText.trim()))
        .filter(cells => cells.length);
    return rows.map(cells => Object.fromEntries(headers.map((h, i) => [h, cells[i]])));
}"""


def table_rows(page) -> dict[str, dict[str, str]]:
    """The leaderboard Dataframe as shown: weights name -> {column header: cell text}."""
    return {row["weights"]: row for row in page.evaluate(TABLE_JS) if row.get("weights")}


def shows_mos_interval(page, name: str) -> bool:
    row = table_rows(page).get(name, {})
    return bool(re.fullmatch(r"\[\d\.\d\d, \d\.\d\d\]", row.get("MOS 95% CI", "")))


def shows_mos(page, name: str) -> bool:
    return bool(re.fullmatch(r"\d(\.\d+)?", table_rows(page).get(name, {}).get("MOS", "")))


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


def evaluate_in_ui(page, name: str) -> None:
    page.get_by_text("Evaluate weights on a benchmark").click()
    page.locator("#lb-eval-weights input").click()
    page.get_by_role("option").filter(has_text=name).first.click()
    page.locator("#lb-evaluate").click()
    page.wait_for_function(
        "() => /Done|failed/.test(document.querySelector('#lb-eval-status').innerText)", timeout=180_000
    )
    status = page.locator("#lb-eval-status").inner_text()
    assert status.startswith(f"Done: {name}") and "Set5" in status, status


def test_rater_rates_and_leaderboard_shows_mos_next_to_psnr(app_server, browser_page, screenshot):
    page, url, name = browser_page, app_server.database_url, app_server.weights_name
    try:
        page.get_by_role("tab", name="Leaderboard").click()
        if not has_set5_psnr(url, name):  # an untrained test checkpoint has no card metrics: measure it
            evaluate_in_ui(page, name)

        page.get_by_role("tab", name="Rate").click()
        page.wait_for_selector("#rate-left img")
        page.wait_for_selector("#rate-right img")
        screenshot(page, "rate-trial")
        model_votes = anchors = scale = 0
        for n in range(1, MAX_TRIALS + 1):
            started = time.monotonic()
            trial = latest_trial(url)
            candidate = CANDIDATE_SCORES.get(trial.kind, 4 + n % 2)
            left, right = (candidate, 3) if trial.left_is_sr else (3, candidate)
            page.locator(f'#rate-left-score input[value="{left}"]').check()
            page.locator(f'#rate-right-score input[value="{right}"]').check()
            page.locator("#rate-submit").click()
            page.wait_for_function(f"() => document.querySelector('#rate-status').innerText.includes('rated {n} pair')")
            if trial.kind == "model" and trial.weights_name == name:
                model_votes, scale = model_votes + 1, trial.scale
            anchors += trial.kind != "model"
            if model_votes >= MIN_MODEL_VOTES and n >= 5:
                break
            time.sleep(max(0.0, MIN_SECONDS_PER_VOTE - (time.monotonic() - started)))
        assert model_votes >= MIN_MODEL_VOTES, f"only {model_votes} model trials in {n}"
        screenshot(page, "rate-after-votes")
        with session_scope(url, write=False) as session:
            assert not any(session.scalars(select(Rater.flagged)))  # an honest rater passes the anchors

        page.get_by_role("tab", name="Leaderboard").click()  # selecting the tab refreshes the board
        wait_for(lambda: shows_mos(page, name))
        row = table_rows(page)[name]
        assert float(row["MOS"]) == pytest.approx(4.5, abs=0.5)
        assert float(row["PSNR Set5"]) > 0 and int(row["ratings"]) == model_votes
        assert int(row["raters"]) == 1 and row["MOS 95% CI"] == ""  # one rater: no spread across raters yet
        assert re.fullmatch(r"\d\d\.\d\d", row["PSNR Set5"])
        papers = [r["paper PSNR Set5"] for r in table_rows(page).values() if r["paper PSNR Set5"]]
        assert papers and all(re.fullmatch(r"\d\d\.\d\d", p) for p in papers)  # a paper's 33.00 is not "33"

        with session_scope(url) as session:  # a second rater (another browser), straight into the database
            other = get_or_create_rater(session, "second-rater-0001").id
            for i in range(3):
                trial = create_trial(session, image_id=f"second-{i}", scale=scale, weights_name=name)
                submit_vote(
                    session,
                    trial_id=trial.id,
                    rater_id=other,
                    score_sr=3,
                    score_ref=3,
                    preferred="tie",
                    rate_limit=None,
                )
        page.get_by_role("button", name="Refresh").click()
        wait_for(lambda: shows_mos_interval(page, name))
        rows = table_rows(page)
        row = rows[name]
        lo, hi = (float(v) for v in re.fullmatch(r"\[(.+), (.+)\]", row["MOS 95% CI"]).groups())
        assert lo <= float(row["MOS"]) <= hi and int(row["raters"]) == 2
        assert int(row["ratings"]) == model_votes + 3
        assert "bicubic" in rows and (not anchors or {"hr", "nearest"} & set(rows))
        # not scroll_into_view_if_needed: it waits for the plot to hold still, which a busy machine may never see
        page.evaluate("() => document.querySelector('#lb-pd-plot').scrollIntoView()")
        screenshot(page, "leaderboard-rated")
        assert not [e for e in page.console_errors if "favicon" not in e]
    finally:
        dispose_engine(url)
