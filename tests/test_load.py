"""Load: 16 upscale clients and 8 raters against one public-mode app process.

Runs for ``SRWEB_LOAD_SECONDS`` (default 20; the issue asks for a minute on real hardware).
Upscale clients use ``gradio_client`` (``/upscale``), back to back. Raters drive the Rate tab's
events the way the browser does (hand-made queue requests: its events are not in the API),
one vote every ~1.5 s like a person, within the per-rater rate limit. Passes when no request
fails, every accepted vote is stored once, and the app's RSS stays bounded. Runs on SQLite and on
PostgreSQL; writes ``test-artifacts/load-{sqlite,postgresql}.json``.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import threading
import time

import numpy as np
import pytest
from conftest import DATABASES, dependency_index, queue_call, rss_kb
from PIL import Image
from sqlalchemy import func, select

from srweb.track.db import dispose_engine, session_scope
from srweb.track.schema import Vote

UPSCALERS = 16
RATERS = 8
SECONDS = float(os.environ.get("SRWEB_LOAD_SECONDS", 20))
RSS_GROWTH_LIMIT_MB = 400


def _upscaler(url, weights, image, deadline, latencies, errors, start):
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    except Exception as exc:  # counted, never raised in a thread
        errors.append(f"connect: {exc!r}")
        return
    start.wait()
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            client.predict(handle_file(image), weights, None, api_name="/upscale")
            latencies.append(time.monotonic() - began)
        except Exception as exc:
            errors.append(f"upscale: {exc!r}")


def _rater(url, start_fn, submit_fn, deadline, stats, errors, start, rng):
    """One browser tab: the trial id lives in a ``gr.State`` of this session, on the server."""
    session = f"rater{rng.random():.12f}"[-12:]
    start.wait()
    try:
        first = queue_call(url, start_fn, [None], session=session)
        if not first.get("success"):
            errors.append(f"rater start: {first.get('output')}")
            return
        token = first["output"]["data"][0]
        stats["raters"].append(token)
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.2, 1.8))  # a person looks at the pair first
            began = time.monotonic()
            result = queue_call(url, submit_fn, [token, None, rng.randint(1, 5), rng.randint(1, 5)], session=session)
            stats["latencies"].append(time.monotonic() - began)
            if not result.get("success"):
                errors.append(f"vote: {result.get('output')}")
                continue
            shown = re.search(r"rated \*\*(\d+)\*\*", str(result["output"]["data"][-1]))
            if shown:
                stats["accepted"][token] = int(shown.group(1))  # the app's own count for this rater
            else:
                stats["kept"] += 1  # rejected and kept (e.g. rate limited): not an error, counted
    except Exception as exc:
        errors.append(f"rater: {exc!r}")


@pytest.fixture(params=DATABASES)
def load_app(request, tmp_path_factory):
    """The public-mode app on SQLite (the session's app) and on a PostgreSQL database (its own app,
    a control plane only: ``SRWEB_LOCAL_WORKERS=0``)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("public_app_server")
        return
    from conftest import ADMIN_TOKEN, running_app

    pg = request.getfixturevalue("pg_server")
    url = pg.create_database()
    env = {"SRWEB_PUBLIC": "1", "SRWEB_ADMIN_TOKEN": ADMIN_TOKEN, "SRWEB_DATABASE_URL": url, "SRWEB_LOCAL_WORKERS": "0"}
    with running_app(tmp_path_factory.mktemp("public-app-pg"), env, artifact="public-app-pg.log") as server:
        server.database_url = url
        yield server
    dispose_engine(url)
    pg.drop_database(url)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_upscale_and_rating_under_load(load_app, tmp_path, artifacts, capsys):
    server = load_app
    url, pid = server.url, server.process.pid
    image = tmp_path / "in.png"
    Image.fromarray(np.linspace(0, 255, 64 * 48 * 3).reshape(48, 64, 3).astype(np.uint8)).save(image)
    start_fn, submit_fn = dependency_index(url, "start"), dependency_index(url, "submit")

    # Warm up (model loaded, rating pool built) before measuring memory.
    from gradio_client import Client, handle_file

    Client(url, verbose=False).predict(handle_file(str(image)), server.weights_name, None, api_name="/upscale")
    warm = queue_call(url, start_fn, [None], timeout=180)
    assert warm.get("success"), warm
    rss_before = rss_kb(pid)

    deadline = time.monotonic() + SECONDS + 5  # clients connect in the first seconds
    start = threading.Barrier(UPSCALERS + RATERS)
    latencies: list[float] = []
    errors: list[str] = []
    rating = {"raters": [], "accepted": {}, "latencies": [], "kept": 0}
    threads = [
        threading.Thread(
            target=_upscaler, args=(url, server.weights_name, str(image), deadline, latencies, errors, start)
        )
        for _ in range(UPSCALERS)
    ]
    threads += [
        threading.Thread(
            target=_rater, args=(url, start_fn, submit_fn, deadline, rating, errors, start, random.Random(i))
        )
        for i in range(RATERS)
    ]
    began = time.monotonic()
    peak = [rss_before]

    def sample_rss():
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.5)

    for t in threads:
        t.start()
    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    for t in threads:
        t.join(SECONDS + 120)
    sampler.join(5)
    wall = time.monotonic() - began
    rss_after = rss_kb(pid)

    with session_scope(server.database_url, write=False) as session:
        stored = session.scalar(select(func.count(Vote.id)).where(Vote.rater_id.in_(rating["raters"])))
    dispose_engine(server.database_url)

    result = {
        "seconds": round(wall, 1),
        "upscale_clients": UPSCALERS,
        "raters": RATERS,
        "upscale_requests": len(latencies),
        "upscale_per_s": round(len(latencies) / wall, 2),
        "upscale_median_s": round(statistics.median(latencies), 3) if latencies else None,
        "upscale_p95_s": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "votes_accepted": sum(rating["accepted"].values()),
        "votes_stored": stored,
        "votes_kept_back": rating["kept"],
        "vote_median_s": round(statistics.median(rating["latencies"]), 3) if rating["latencies"] else None,
        "errors": errors[:20],
        "error_count": len(errors),
        "rss_mb": {"before": round(rss_before / 1024), "peak": round(peak[0] / 1024), "after": round(rss_after / 1024)},
    }
    database = "postgresql" if server.database_url.startswith("postgresql") else "sqlite"
    result["database"] = database
    (artifacts / f"load-{database}.json").write_text(json.dumps(result, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\nload ({database}) {wall:.0f} s: {len(latencies)} upscales ({result['upscale_per_s']}/s), median "
            f"{result['upscale_median_s']} s, p95 {result['upscale_p95_s']} s; {result['votes_accepted']} votes, "
            f"median {result['vote_median_s']} s; RSS {result['rss_mb']} MB; errors {len(errors)}"
        )
    assert not errors, errors[:5]
    assert len(latencies) >= UPSCALERS and rating["accepted"], result
    assert stored == result["votes_accepted"], result  # every accepted vote stored, none twice
    assert (rss_after - rss_before) / 1024 < RSS_GROWTH_LIMIT_MB, result
    assert server.alive()
