"""Start-up and housekeeping shared by the app and the CLI: schema, seeding, job watcher."""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from srweb.config import get_settings
from srweb.track.db import init_db, write_transaction
from srweb.track.evals import forget_missing_cards, seed_from_cards, seed_speeds_from_cards
from srweb.train import jobs
from srweb.train.queue import uses_queue
from srweb.weights.files import list_weights
from srweb.weights.sync import fetch_into

log = logging.getLogger(__name__)

_watcher: threading.Thread | None = None
_watcher_lock = threading.Lock()


def prepare_database() -> None:
    """Upgrade the schema, seed shipped cards' results, and mark runs orphaned by a restart."""
    init_db()
    cards = [card.to_dict() for card in list_weights()]

    def seed(session) -> None:
        seed_from_cards(session, cards)
        seed_speeds_from_cards(session, cards)
        forget_missing_cards(session, [card["name"] for card in cards])

    write_transaction(seed)
    jobs.reap()


def fetch_hub_weights() -> list[str]:
    """Fetch the weights ``SRWEB_HUB_WEIGHTS`` names into the exported-weights folder (before
    :func:`prepare_database` reads the cards, so they are listed and seeded like any); returns their names."""
    settings = get_settings()
    if not settings.hub_weights:
        return []
    return fetch_into(settings.hub_weights, settings.user_weights_dir)


def start_job_watcher(interval: float = 2.0) -> threading.Thread:
    """A daemon thread that reaps dead workers and starts queued runs every ``interval`` s."""
    global _watcher

    def loop() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                jobs.reap()
            except Exception:  # keep watching; a transient DB error must not kill the thread
                log.exception("job watcher")

    with _watcher_lock:
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=loop, name="srweb-job-watcher", daemon=True)
            _watcher.start()
    return _watcher


_local_workers: list = []


def start_local_workers() -> list:
    """With a PostgreSQL database, start ``SRWEB_LOCAL_WORKERS`` ``srweb worker`` processes on this
    machine (stopped with SIGTERM when the app exits: each checkpoints and requeues its run).
    0: the app only queues (a control plane, e.g. a CPU Space). SQLite: none (the job watcher
    starts runs itself)."""
    if not uses_queue() or _local_workers:
        return _local_workers
    for index in range(get_settings().local_workers):
        name = f"{socket.gethostname()}-app-{index + 1}"
        env = {**os.environ, "SRWEB_PARENT_PID": str(os.getpid())}  # a killed app stops its workers too
        _local_workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "srweb.cli", "worker", "--name", name], stdin=subprocess.DEVNULL, env=env
            )
        )

    def stop() -> None:
        for proc in _local_workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in _local_workers:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    return _local_workers
