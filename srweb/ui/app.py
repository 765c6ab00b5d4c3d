"""Assemble the tabs into one Gradio app and launch it (localhost:7860 by default)."""

from __future__ import annotations

import gradio as gr

from srweb.ui import compare, leaderboard, rate, runs, train, upscale
from srweb.ui.admin import admin_box
from srweb.access import launch_options, queue_options
from srweb.config import apply_threads
from srweb.services import fetch_hub_weights, prepare_database, start_job_watcher, start_local_workers
from srweb.ui.outputs import cache_policy

TITLE = "srweb · super-resolution studio"


def build_app() -> gr.Blocks:
    """The full app: every tab of srweb in one Blocks."""
    with gr.Blocks(title=TITLE) as blocks:
        gr.Markdown(f"# {TITLE}")
        # One admin token for every tab (shown in public mode only); handlers check it server side.
        admin = admin_box()
        with gr.Tab("Upscale", id="upscale"):
            weights = upscale.build_tab(admin=admin)
        with gr.Tab("Compare", id="compare"):
            compare.build_tab()
        with gr.Tab("Train", id="train"):
            train.build_tab(admin=admin)
        with gr.Tab("Runs", id="runs") as runs_tab:
            runs.build_tab(runs_tab, weights_dropdown=weights, admin=admin)
        with gr.Tab("Leaderboard", id="leaderboard") as leaderboard_tab:
            leaderboard.build_tab(leaderboard_tab, admin=admin)
        with gr.Tab("Rate", id="rate"):
            rate.build_tab()
    return blocks


def launch(**kwargs) -> None:
    """Start the app; Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860).

    Limits come from the settings (:mod:`srweb.access`): upload size, queue length and
    concurrency; only Gradio's cache and the example images are served, never server folders.
    ``kwargs`` override any of them.
    """
    apply_threads()
    fetch_hub_weights()
    prepare_database()
    start_job_watcher()
    start_local_workers()  # PostgreSQL: SRWEB_LOCAL_WORKERS `srweb worker` processes (SQLite: none)
    blocks = build_app()
    blocks.delete_cache = blocks.delete_cache or cache_policy()  # outputs must not fill the disk
    blocks.queue(**queue_options())
    blocks.launch(**{**launch_options(upscale.example_images()), **kwargs})
