"""Settings read from the environment (``SRWEB_*``), one place for paths and switches."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


# Hugging Face Spaces mount persistent storage here (when the Space has it enabled).
SPACES_STORAGE = Path("/data")
PUBLIC_MAX_INPUT_PIXELS = 4_000_000
LOCAL_MAX_INPUT_PIXELS = 16_000_000


def _default_state_dir() -> Path:
    # Inside a Space, prefer persistent storage: the app's own disk is wiped on every restart.
    persistent = SPACES_STORAGE
    if os.environ.get("SPACE_ID") and persistent.is_dir() and os.access(persistent, os.W_OK):
        return persistent / "srweb"
    return REPO_ROOT


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    number = int(value)
    return None if number <= 0 else number  # 0 or negative: no limit


@dataclass(frozen=True)
class Settings:
    """Runtime configuration.

    Attributes:
        weights_dir: shipped checkpoints (``NAME.safetensors`` + ``NAME.json``), read only.
        user_weights_dir: checkpoints exported from this app's runs (Runs tab); kept apart from
            the shipped ones so an export never writes into the checkout, and it persists with
            the rest of the state (``/data`` inside a Space).
        state_dir: root for the database, runs and caches.
        database_url: any SQLAlchemy URL; SQLite file under ``state_dir/db`` by default.
        runs_dir: per-run checkpoints and logs.
        data_root: where benchmark and training folders live (General-100, DIV2K, Set14, ...):
            ``data/`` under ``state_dir`` unless ``SRWEB_DATA_ROOT`` names another folder.
            ``srweb data fetch NAME`` downloads into it; Set5 also ships with the package
            (:func:`srweb.data.samples.benchmark_path` says which copy wins).
        device: ``auto`` (cuda > mps > cpu) or an explicit torch device string.
        public: public mode (on by default inside a Space, ``SPACE_ID`` set): training,
            evaluation, run export/cancel/resume and arbitrary dataset paths need ``admin_token``
            (see :mod:`srweb.access`).
        admin_token: token unlocking admin features in public mode; None disables them there.
        browser_secret: key encrypting the rater token kept in browsers; None: a key made once
            and kept in ``state_dir/db`` (set it when several app hosts share one database).
        max_input_pixels: largest accepted input image (width x height); 4 MP in public mode.
        max_upload_mb: largest accepted upload in MB (Gradio's ``max_file_size``); None: no limit.
        max_batch_files: most images one batch of the Upscale tab takes; 20 in public mode.
        max_import_mb: largest model file ``srweb import`` reads, in MB; None (0 set): no limit.
        hub_weights: ``hf://OWNER/REPO/NAME`` references the app fetches at start into
            ``user_weights_dir`` and lists (weights for a Space without committing them).
        queue_size: requests waiting in the app's queue before new ones are refused; None: no limit.
        concurrency: handlers of one event running at once unless the event sets its own limit.
        threads: torch intra-op threads; None keeps torch's default (one per physical core).
        compile: run inference through ``torch.compile`` (off by default: on the 2-core AVX-512
            CPU it measured slower than eager bf16 + channels_last, see README "Speed").
        tile_budget_mb: activation memory one inference tile may use, in MB (``SRWEB_TILE_BUDGET_MB``);
            peak RSS of a 3840x2160 edsr-baseline x4 output stays under 2 GB with the default.
        local_workers: with a server database (PostgreSQL), how many ``srweb worker`` processes the
            app starts itself; 0 makes it a control plane only (e.g. a CPU Space). Ignored on SQLite,
            where the app's own dispatcher starts one process per run (``max_parallel_jobs``).
        artifacts_url: fsspec URL of the store every machine reaches for run folders and exported
            weights (a folder, ``file://``, ``s3://`` with s3fs, ``hf://datasets/...``); default
            ``state_dir/db/artifacts``.
        backend: what runs the network (``SRWEB_BACKEND``): ``auto`` (the winner ``srweb bench
            --store`` recorded for this processor), ``torch``, ``openvino`` or ``onnxruntime``.
    """

    weights_dir: Path
    user_weights_dir: Path
    state_dir: Path
    database_url: str
    runs_dir: Path
    cache_dir: Path
    data_root: Path
    device: str = "auto"
    public: bool = False
    admin_token: str | None = None
    browser_secret: str | None = None
    max_input_pixels: int = LOCAL_MAX_INPUT_PIXELS
    max_parallel_jobs: int = 1
    max_upload_mb: int | None = 50
    max_batch_files: int = 200
    max_import_mb: int | None = 1024
    hub_weights: tuple[str, ...] = ()
    queue_size: int | None = 64
    concurrency: int = 4
    threads: int | None = None
    compile: bool = False
    tile_budget_mb: float = 1000.0
    local_workers: int = 1
    artifacts_url: str = ""
    backend: str = "auto"
    extra: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment; cached, call ``get_settings.cache_clear()`` after changing env."""
    state_dir = _env_path("SRWEB_STATE_DIR", _default_state_dir())
    db_dir = state_dir / "db"
    database_url = os.environ.get("SRWEB_DATABASE_URL") or f"sqlite:///{db_dir / 'srweb.sqlite'}"
    public = _env_bool("SRWEB_PUBLIC", default=bool(os.environ.get("SPACE_ID")))
    return Settings(
        weights_dir=_env_path("SRWEB_WEIGHTS_DIR", REPO_ROOT / "weights"),
        user_weights_dir=_env_path("SRWEB_USER_WEIGHTS_DIR", db_dir / "weights"),
        state_dir=state_dir,
        database_url=database_url,
        runs_dir=_env_path("SRWEB_RUNS_DIR", db_dir / "runs"),
        cache_dir=_env_path("SRWEB_CACHE_DIR", db_dir / "cache"),
        data_root=_env_path("SRWEB_DATA_ROOT", state_dir / "data"),
        device=os.environ.get("SRWEB_DEVICE", "auto"),
        public=public,
        admin_token=os.environ.get("SRWEB_ADMIN_TOKEN", "").strip() or None,
        browser_secret=os.environ.get("SRWEB_BROWSER_SECRET", "").strip() or None,
        max_input_pixels=_env_int(
            "SRWEB_MAX_INPUT_PIXELS", PUBLIC_MAX_INPUT_PIXELS if public else LOCAL_MAX_INPUT_PIXELS
        )
        or 2**62,
        max_parallel_jobs=int(os.environ.get("SRWEB_MAX_PARALLEL_JOBS", 1)),
        max_upload_mb=_env_int("SRWEB_MAX_UPLOAD_MB", 20 if public else 50),
        max_batch_files=_env_int("SRWEB_MAX_BATCH_FILES", 20 if public else 200) or 2**31,
        max_import_mb=_env_int("SRWEB_MAX_IMPORT_MB", 1024),
        hub_weights=tuple(os.environ.get("SRWEB_HUB_WEIGHTS", "").replace(",", " ").split()),
        queue_size=_env_int("SRWEB_QUEUE_SIZE", 64),
        concurrency=_env_int("SRWEB_CONCURRENCY", 4) or 4,
        threads=_env_int("SRWEB_THREADS", None),
        compile=_env_bool("SRWEB_COMPILE"),
        tile_budget_mb=float(os.environ.get("SRWEB_TILE_BUDGET_MB") or 1000),
        local_workers=max(0, int(os.environ.get("SRWEB_LOCAL_WORKERS", "1").strip() or 1)),
        artifacts_url=os.environ.get("SRWEB_ARTIFACTS_URL", "").strip() or str(db_dir / "artifacts"),
        backend=os.environ.get("SRWEB_BACKEND", "").strip().lower() or "auto",
    )


def apply_threads(settings: Settings | None = None, *, sharers: int = 1) -> int:
    """Set torch's intra-op thread count from ``SRWEB_THREADS`` (if given), else, when ``sharers``
    processes run at once (parallel training workers), split torch's default among them: each
    one using every core makes small models train many times slower. Returns the count in use."""
    import torch  # heavy: settings are read by light code (`import srweb`, the CLI parser)

    threads = (settings or get_settings()).threads
    if not threads and sharers > 1:
        threads = max(1, torch.get_num_threads() // sharers)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(name: str | None = None) -> str:
    """Turn ``auto`` into the best available device (cuda > mps > cpu); any other name must be a
    device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else ValueError."""
    import torch  # heavy: settings are read by light code (`import srweb`, the CLI parser)

    name = name or get_settings().device
    if name != "auto":
        kind, _, index = name.partition(":")
        has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        if (
            kind == "cpu"
            or (kind == "mps" and not index and has_mps)
            or (kind == "cuda" and (index.isdigit() or not index) and int(index or 0) < torch.cuda.device_count())
        ):
            return name
        raise ValueError(f"device {name!r} is not available on this machine (try auto or cpu)")
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
