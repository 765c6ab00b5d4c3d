"""Rate tab: blind side-by-side scoring of SR output against bicubic (absolute category rating).

Each trial shows the same crop twice, a candidate and its bicubic upscale in random order, model
names hidden. Both images get a 1-5 score; the preference follows from the scores (equal = tie).
The rater is an opaque token kept in the browser's local storage. All logic is in
:mod:`srweb.rating.pool`; this module only lays out and wires the components.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import gradio as gr

from srweb.rating import pool as rating_pool
from srweb.config import get_settings
from srweb.ui.outputs import image_file, output_dir

ACR_LABELS = ("Bad", "Poor", "Fair", "Good", "Excellent")
SCORE_CHOICES = [(f"{i} · {label}", i) for i, label in enumerate(ACR_LABELS, start=1)]
INSTRUCTIONS = f"""
Score **each** image on its own: how good does it look? 1 Bad · 2 Poor · 3 Fair · 4 Good · 5 Excellent.
Both show the same picture, enlarged {rating_pool.ZOOM}× with square pixels; which method made which
image is hidden and the sides are shuffled. Some pairs are checks.
"""


def _status(count: int) -> str:
    return (
        f"You have rated **{count}** pair{'s' if count != 1 else ''}. Thank you!"
        if count
        else "Rate the pair, then **Submit & next**."
    )


def _show(token: str, count: int | None = None):
    """Outputs for a freshly drawn trial: trial id, left, right, both scores cleared, status."""
    try:
        view = rating_pool.next_trial(token)
        folder = output_dir()  # files, not PIL images: see srweb.ui.outputs
        # unique: Gradio serves a file under a hash of its bytes, so the same bicubic crop would
        # have the same URL in every trial and give its side away.
        left = image_file(rating_pool.view_image(view.left), "a", folder, unique=True)
        right = image_file(rating_pool.view_image(view.right), "b", folder, unique=True)
    except (rating_pool.PoolUnavailable, OSError) as exc:
        gr.Warning(f"No images to rate: {exc}")
        return None, None, None, None, None, "No images to rate yet."
    count = rating_pool.rater_vote_count(token) if count is None else count
    return view.trial_id, left, right, None, None, _status(count)


def start(token: str | None):
    """On page load: make sure the rater exists, then show their first trial."""
    token = rating_pool.start_rater(token)
    return token, *_show(token)


def submit(token: str | None, trial_id: int | None, left: int | None, right: int | None):
    """Store the vote; on success (or a vote that can never count) show the next trial.

    Rejections raise a ``gr.Warning`` with the reason; invalid and rate-limited votes keep the
    current trial and scores so nothing is lost.
    """
    if not token:
        gr.Warning("Your rating session is still starting; try again in a second.")
        return (gr.skip(),) * 6
    outcome = rating_pool.submit_rating(token, trial_id, left, right)
    if not outcome.accepted:
        gr.Warning(outcome.message)
    if not outcome.advance:
        return (gr.skip(),) * 6
    return _show(token, outcome.count)


def browser_secret() -> str:
    """The key that encrypts the rater token in the browser (``SRWEB_BROWSER_SECRET``, else one
    made once and kept in ``state_dir/db``): with Gradio's default, a new key per process, every
    restart would make every rater a new one."""
    settings = get_settings()
    if settings.browser_secret:
        return settings.browser_secret
    path = Path(settings.state_dir) / "db" / "browser-state.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by an earlier start (or by another app process just now)
        for _ in range(50):
            key = path.read_text().strip()
            if key:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it to make a new key") from None
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def build_tab() -> None:
    """Lay out the Rate tab inside the current Blocks context."""
    token = gr.BrowserState(None, storage_key="srweb-rater", secret=browser_secret())
    trial = gr.State(None)
    gr.Markdown(INSTRUCTIONS)
    side = rating_pool.CROP * rating_pool.ZOOM + 16  # room to show the zoomed crop without rescaling
    with gr.Row(equal_height=True):
        with gr.Column():
            left = gr.Image(
                label="A",
                type="filepath",
                format="png",
                interactive=False,
                buttons=[],
                height=side,
                elem_id="rate-left",
            )
            left_score = gr.Radio(SCORE_CHOICES, label="Score for A", elem_id="rate-left-score")
        with gr.Column():
            right = gr.Image(
                label="B",
                type="filepath",
                format="png",
                interactive=False,
                buttons=[],
                height=side,
                elem_id="rate-right",
            )
            right_score = gr.Radio(SCORE_CHOICES, label="Score for B", elem_id="rate-right-score")
    with gr.Row():
        button = gr.Button("Submit & next", variant="primary", elem_id="rate-submit", scale=0, min_width=200)
        status = gr.Markdown(elem_id="rate-status")
    shown = [trial, left, right, left_score, right_score, status]
    # Load only (no inputs): the chained step then reads the token from local storage.
    gr.on(None, lambda: None, None, None, api_visibility="private").then(
        start, token, [token, *shown], api_visibility="private"
    )
    button.click(submit, [token, trial, left_score, right_score], shown, api_visibility="private", concurrency_limit=4)


def demo() -> gr.Blocks:
    with gr.Blocks(title="srweb · Rate") as blocks:
        build_tab()
    return blocks


if __name__ == "__main__":
    demo().queue().launch()
