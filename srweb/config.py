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


def _default_state_dir() -> Path:
    # Hugging Face Spaces mount persistent storage at /data; prefer it when present.
    persistent = Path("/data")
    if os.environ.get("SPACE_ID") and persistent.is_dir() and os.access(persistent, os.W_OK):
        return persistent / "srweb"
    return REPO_ROOT


@dataclass(frozen=True)
class Settings:
    """Runtime configuration.

    Attributes:
        weights_dir: shipped and exported checkpoints (``NAME.safetensors`` + ``NAME.json``).
        state_dir: root for the database, runs and caches.
        database_url: any SQLAlchemy URL; SQLite file under ``state_dir/db`` by default.
        runs_dir: per-run checkpoints and logs.
        data_root: where benchmark and training folders live (Set5, General-100, DIV2K).
        device: ``auto`` (cuda > mps > cpu) or an explicit torch device string.
        public: public mode (Spaces): training and arbitrary paths need ``admin_token``.
        admin_token: token unlocking admin features in public mode.
        max_input_pixels: largest accepted input image (width x height).
    """

    weights_dir: Path
    state_dir: Path
    database_url: str
    runs_dir: Path
    cache_dir: Path
    data_root: Path
    device: str = "auto"
    public: bool = False
    admin_token: str | None = None
    max_input_pixels: int = 16_000_000
    max_parallel_jobs: int = 1
    extra: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment; cached, call ``get_settings.cache_clear()`` after changing env."""
    state_dir = _env_path("SRWEB_STATE_DIR", _default_state_dir())
    db_dir = state_dir / "db"
    database_url = os.environ.get("SRWEB_DATABASE_URL") or f"sqlite:///{db_dir / 'srweb.sqlite'}"
    return Settings(
        weights_dir=_env_path("SRWEB_WEIGHTS_DIR", REPO_ROOT / "weights"),
        state_dir=state_dir,
        database_url=database_url,
        runs_dir=_env_path("SRWEB_RUNS_DIR", db_dir / "runs"),
        cache_dir=_env_path("SRWEB_CACHE_DIR", db_dir / "cache"),
        data_root=_env_path("SRWEB_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"),
        device=os.environ.get("SRWEB_DEVICE", "auto"),
        public=_env_bool("SRWEB_PUBLIC", default=bool(os.environ.get("SPACE_ID"))),
        admin_token=os.environ.get("SRWEB_ADMIN_TOKEN") or None,
        max_input_pixels=int(os.environ.get("SRWEB_MAX_INPUT_PIXELS", 16_000_000)),
        max_parallel_jobs=int(os.environ.get("SRWEB_MAX_PARALLEL_JOBS", 1)),
    )


def resolve_device(name: str | None = None) -> str:
    """Turn ``auto`` into the best available device: cuda > mps > cpu."""
    import torch

    name = name or get_settings().device
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
