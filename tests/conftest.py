"""Shared fixtures: the real app (``python app.py``) in a subprocess, headless Chromium, screenshots.

The app runs on a free port with a fresh state folder (so a fresh SQLite file and runs folder)
and its own weights folder: the smallest entry of the repo's ``weights/``, or one untrained ``espcn`` x2
checkpoint when nothing is shipped. Browser tests need ``/usr/bin/chromium`` (Debian package
``chromium``); without it they are skipped, unless ``SRWEB_REQUIRE_BROWSER=1`` makes that a failure.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 120


@dataclass
class AppServer:
    """The running app: its URL, folders, database and the weights entry tests can use."""

    url: str
    state_dir: Path
    weights_dir: Path
    database_url: str
    log_path: Path
    process: subprocess.Popen
    weights_name: str
    scale: int

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prepare_weights(target: Path) -> tuple[str, int]:
    """Fill ``target`` with the smallest shipped weights entry (or one tiny untrained espcn x2);
    return its (name, scale)."""
    from srweb.models import create_model
    from srweb.weights.files import list_weights, save_weights

    target.mkdir(parents=True, exist_ok=True)
    shipped = list_weights(REPO / "weights")
    if shipped:  # only the smallest entry: the rating pool and the tests then all use that one
        smallest = min(shipped, key=lambda c: c.num_params)
        for suffix in (".safetensors", ".json"):
            shutil.copy2(REPO / "weights" / f"{smallest.name}{suffix}", target / f"{smallest.name}{suffix}")
    cards = list_weights(target)
    if not cards:
        save_weights(
            create_model("espcn", 2),
            "espcn-x2.untrained",
            weights_dir=target,
            notes="untrained; made by tests/conftest.py",
        )
        cards = list_weights(target)
    smallest = min(cards, key=lambda c: c.num_params)
    return smallest.name, smallest.scale


def _wait_until_serving(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"app did not answer within {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")


def _stop_workers(database_url: str) -> None:
    """SIGTERM training workers the app left running (they live in their own sessions)."""
    from srweb.track.db import dispose_engine, session_scope
    from srweb.track.runs import list_runs

    try:
        with session_scope(database_url, write=False) as session:
            pids = [r.pid for r in list_runs(session, status="running", limit=None) if r.pid]
    except Exception:  # no database yet: nothing ran
        return
    finally:
        dispose_engine(database_url)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def start_app(
    root: Path,
    extra_env: dict[str, str] | None = None,
    *,
    port: int | None = None,
    log_name: str = "app.log",
    artifact: str | None = None,
) -> AppServer:
    """Start ``python app.py`` with state and weights under ``root`` (reused if already there)
    and wait until it serves. ``extra_env`` adds or overrides variables (e.g. ``SRWEB_PUBLIC``)."""
    state_dir, weights_dir = root / "state", root / "weights"
    weights_name, scale = _prepare_weights(weights_dir)
    port = port or _free_port()
    database_url = f"sqlite:///{state_dir / 'db' / 'srweb.sqlite'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRWEB_", "GRADIO_"))}
    env.update(
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_ANALYTICS_ENABLED="False",
        SRWEB_STATE_DIR=str(state_dir),
        SRWEB_WEIGHTS_DIR=str(weights_dir),
        SRWEB_DEVICE="cpu",
        PYTHONUNBUFFERED="1",
    )
    if os.environ.get("SRWEB_DATA_ROOT"):
        env["SRWEB_DATA_ROOT"] = os.environ["SRWEB_DATA_ROOT"]
    env.update(extra_env or {})
    log_path = root / log_name
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}/"
    server = AppServer(url, state_dir, weights_dir, database_url, log_path, process, weights_name, scale)
    started = time.monotonic()
    try:
        _wait_until_serving(url, process, log_path)
    except BaseException:
        stop_app(server, stop_workers=False, artifact=artifact)
        raise
    print(f"\napp serving at {url} after {time.monotonic() - started:.1f} s")
    return server


def stop_app(server: AppServer, *, stop_workers: bool = True, artifact: str | None = None) -> None:
    """Terminate the app (and, by default, the training workers it left running)."""
    if stop_workers:
        _stop_workers(server.database_url)
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if artifact:
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copyfile(server.log_path, ARTIFACTS / artifact)


@contextmanager
def running_app(root: Path, extra_env: dict[str, str] | None = None, artifact: str | None = None):
    """``start_app`` ... ``stop_app`` as a context manager."""
    server = start_app(root, extra_env, artifact=artifact)
    try:
        yield server
    finally:
        stop_app(server, artifact=artifact)


# --- state for tests that train or track in this process or in child processes ---------------

STATE_FOLDERS = (("SRWEB_STATE_DIR", "state"), ("SRWEB_WEIGHTS_DIR", "weights"), ("SRWEB_RUNS_DIR", "runs"))


SET5 = Path(__file__).resolve().parents[1] / "srweb" / "data" / "builtin" / "Set5"  # shipped with the package
_HR_PHOTOS: list[Path] = []


def hr_photos() -> Path:
    """Natural HR photos for training tests: the built-in ``sample`` set (scikit-image's photos, what
    the package ships), made once per test session in a temporary folder."""
    if not _HR_PHOTOS:
        from srweb.data.samples import sample_images_dir

        folder = Path(tempfile.mkdtemp(prefix="srweb-test-photos-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _HR_PHOTOS.append(sample_images_dir(folder))
    return _HR_PHOTOS[0]


def data_root() -> Path:
    from srweb.config import get_settings

    return Path(get_settings().data_root)


def set5_present() -> bool:
    """Whether Set5 resolves (it ships with the package; a data root may hold its own copy)."""
    from srweb.data.samples import benchmark_path

    try:
        benchmark_path("Set5")
    except (FileNotFoundError, ValueError):
        return False
    return True


def crops(src: Path, dst: Path, count: int, size: int) -> Path:
    """The top-left ``size`` px square of the first ``count`` PNGs of ``src``, saved in ``dst``."""
    from PIL import Image

    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.png"))[:count]:
        with Image.open(path) as img:
            img.convert("RGB").crop((0, 0, size, size)).save(dst / path.name)
    return dst


def child_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``srweb``/torchrun child process with its state, weights and runs under
    ``root``; one torch thread (tiny convolutions run several times faster so on a loaded 2-core box)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRWEB_")}
    env.update({name: str(root / sub) for name, sub in STATE_FOLDERS})
    env.update(SRWEB_DATA_ROOT=str(data_root()), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def point_at(monkeypatch, env: dict[str, str]) -> None:
    """Make this process use the state folders of ``env`` (a :func:`child_env`)."""
    from srweb.config import get_settings

    for name, _ in STATE_FOLDERS:
        monkeypatch.setenv(name, env[name])
    get_settings.cache_clear()


@pytest.fixture
def fresh_state(tmp_path, monkeypatch):
    """This process (and the workers it starts) on fresh state, weights and runs folders under
    ``tmp_path``; settings are reread, and the database engine is closed afterwards."""
    from srweb.config import get_settings
    from srweb.track.db import dispose_engine

    for name, sub in STATE_FOLDERS:
        monkeypatch.setenv(name, str(tmp_path / sub))
    for name in ("SRWEB_DATABASE_URL", "SRWEB_CACHE_DIR", "SRWEB_PUBLIC", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    dispose_engine()
    get_settings.cache_clear()


@pytest.fixture
def jobs_state(fresh_state, monkeypatch):
    """:func:`fresh_state` with a migrated database and one job slot; workers the test left
    running are killed afterwards."""
    from srweb.config import get_settings
    from srweb.track.db import init_db
    from srweb.train import jobs

    monkeypatch.setenv("SRWEB_MAX_PARALLEL_JOBS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # workers: one thread is ~5x faster on a loaded 2-core box
    get_settings.cache_clear()
    init_db()
    yield fresh_state
    for pid, proc in list(jobs._children.items()):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        jobs._children.pop(pid, None)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory) -> AppServer:
    """The real app (``python app.py``) on a free port with fresh state; terminated after the session."""
    with running_app(tmp_path_factory.mktemp("app"), artifact="app.log") as server:
        yield server


ADMIN_TOKEN = "test-admin-token-8c1f2e"


@pytest.fixture(scope="session")
def public_app_server(tmp_path_factory) -> AppServer:
    """The real app in public mode (as on a Space): ``SRWEB_PUBLIC=1`` with admin token
    :data:`ADMIN_TOKEN` and the public defaults for every limit. Queued training runs never
    start (``SRWEB_MAX_PARALLEL_JOBS=0``): the tests here are about who may queue them."""
    env = {"SRWEB_PUBLIC": "1", "SRWEB_ADMIN_TOKEN": ADMIN_TOKEN, "SRWEB_MAX_PARALLEL_JOBS": "0"}
    with running_app(tmp_path_factory.mktemp("public-app"), env, artifact="public-app.log") as server:
        yield server


def _no_browser(reason: str) -> None:
    if os.environ.get("SRWEB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (SRWEB_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium driven by Playwright (never a downloaded browser)."""
    if not CHROMIUM.exists():
        _no_browser(f"{CHROMIUM} not found: install the Debian package chromium to run browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_page(browser, app_server):
    """A fresh page on the app, loaded; console errors are collected on ``page.console_errors``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    page.goto(app_server.url)
    page.wait_for_selector("#sr-slider", state="attached")
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """``test-artifacts/`` (git-ignored): screenshots, the app log, measurements."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def screenshot(artifacts):
    """``screenshot(page, name)`` saves ``test-artifacts/<name>.png`` (full page)."""

    def take(page, name: str) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


# --- raw HTTP helpers (what a hand-made client can do, without gradio_client) -------------------


def dependency_index(url: str, api_name: str) -> int:
    """The ``fn_index`` of the event named ``api_name`` in the app's /config (private ones included)."""
    import httpx

    config = httpx.get(url + "config", timeout=30).json()
    for dependency in config["dependencies"]:
        if dependency.get("api_name") == api_name:
            return int(dependency["id"])
    raise KeyError(f"no event named {api_name!r}")


def queue_call(
    url: str, fn_index: int, data: list, timeout: float = 120, first_only: bool = False, session: str | None = None
) -> dict:
    """Call an event through the queue as the browser does (POST queue/join, read the SSE stream).

    Returns the ``process_completed`` message (``success``, ``output``), or the first
    ``process_generating`` one when ``first_only`` (a generator handler's first update).
    Calls with the same ``session`` (a browser tab) share ``gr.State`` values, which never
    leave the server: pass None for a State input.
    """
    import json
    import uuid

    import httpx

    session = session or uuid.uuid4().hex[:11]
    joined = httpx.post(
        url + "gradio_api/queue/join",
        timeout=30,
        json={"data": data, "fn_index": fn_index, "session_hash": session, "trigger_id": None, "event_data": None},
    )
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    with httpx.stream(
        "GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=timeout
    ) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            if message.get("event_id") not in (None, event_id):
                continue
            if message.get("msg") == "process_completed" or (first_only and message.get("msg") == "process_generating"):
                return message
    raise AssertionError(f"event {event_id} ended without a result")


def rss_kb(pid: int) -> int:
    """Resident set size of a process in kB (``VmRSS`` in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def forged_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR declares ``width`` x ``height`` (a decompression bomb when large):
    the header is real, the pixel data is a few bytes, nothing big is ever allocated."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


# --- the tracker on SQLite and on a real PostgreSQL server ---------------------------------------

DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session (:mod:`tests.pgserver`); skipped without the binaries,
    unless ``SRWEB_REQUIRE_POSTGRES=1`` (CI) makes that a failure."""
    from pgserver import pg_bin_dir, start_server, stop_server

    if pg_bin_dir() is None:
        reason = "PostgreSQL server binaries not found: install the Debian package postgresql"
        if os.environ.get("SRWEB_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (SRWEB_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    server = start_server()
    yield server
    stop_server(server)


def new_database_url(kind: str, tmp_path: Path, request) -> str:
    """An empty database of ``kind`` (``sqlite`` file under ``tmp_path`` or a new PostgreSQL
    database), dropped at the end of the test."""
    from srweb.track.db import dispose_engine

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'db' / 'track.sqlite'}"
        request.addfinalizer(lambda: dispose_engine(url))
        return url
    server = request.getfixturevalue("pg_server")
    url = server.create_database()

    def drop() -> None:
        dispose_engine(url)
        server.drop_database(url)

    request.addfinalizer(drop)
    return url


@pytest.fixture(params=DATABASES)
def db_url(request, tmp_path) -> str:
    """An empty tracker database, once on SQLite and once on PostgreSQL (not migrated yet)."""
    return new_database_url(request.param, tmp_path, request)
