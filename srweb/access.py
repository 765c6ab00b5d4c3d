"""Who may do what, in one place: the public-mode policy every tab enforces server side.

Locally everything is open. In public mode (``SRWEB_PUBLIC=1``, on by default inside a Hugging
Face Space) Upscale, Leaderboard and Rate stay open to all, while the admin features need the
token from ``SRWEB_ADMIN_TOKEN``: training jobs (launch, cancel, resume), evaluation jobs,
run export, model import (Upscale tab), and with them any dataset path on the server. Without a configured token the
admin features are off in public mode. Handlers call :func:`require_admin`; the UI only hides
what a visitor cannot use, it never is the gate.
"""

from __future__ import annotations

import hmac
import tempfile
import time
from pathlib import Path

from srweb.config import REPO_ROOT, get_settings

# What the admin gate covers, for messages and the README.
ADMIN_FEATURES = "training, evaluation, model import, run export/cancel/resume and dataset paths"
WRONG_TOKEN_DELAY_S = 1.0


class AccessDenied(PermissionError):
    """An admin feature was asked for without a valid admin token (public mode only)."""


def public_mode() -> bool:
    """True when the app serves the public (a Space, or ``SRWEB_PUBLIC=1``)."""
    return get_settings().public


def admin_enabled() -> bool:
    """Whether admin features can be used at all: always locally, with a configured token in public."""
    settings = get_settings()
    return not settings.public or settings.admin_token is not None


def is_admin(token: object) -> bool:
    """True when ``token`` unlocks admin features (any value does outside public mode)."""
    settings = get_settings()
    if not settings.public:
        return True
    if settings.admin_token is None or not isinstance(token, str) or not token:
        return False
    # Constant time: the comparison must not reveal how many leading characters matched.
    return hmac.compare_digest(token.strip().encode(), settings.admin_token.encode())


def require_admin(token: object, action: str = "this action") -> None:
    """Raise :class:`AccessDenied` unless ``token`` unlocks admin features.

    Args:
        token: what the client sent as the admin token (any type; never echoed back).
        action: what was asked for, for the message ("launching a training run").
    """
    if is_admin(token):
        return
    if not admin_enabled():
        raise AccessDenied(
            f"{action} is disabled on this public instance ({ADMIN_FEATURES} "
            "need an admin token, and none is configured)"
        )
    wrong = isinstance(token, str) and bool(token.strip())
    if wrong:  # each wrong guess costs the guesser a second: no brute force through the queue
        time.sleep(WRONG_TOKEN_DELAY_S)
    reason = "a wrong admin token" if wrong else "no admin token"
    raise AccessDenied(f"{action} needs the admin token on this public instance; got {reason}")


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def blocked_paths(keep: list[str | Path] = ()) -> list[str]:
    """Server folders the web app must never serve: database, runs, caches, weights, data.

    Gradio serves only its own cache and ``allowed_paths`` anyway; this list is the second
    line of defence (it wins over ``allowed_paths`` and ``GRADIO_ALLOWED_PATHS``). A folder that
    holds one of ``keep`` (files the app serves on purpose), the temp dir or Gradio's cache is
    left out, since blocking it would break those.
    """
    import gradio.utils  # gradio is heavy; only the app's launch needs its helpers

    settings = get_settings()
    candidates = [
        settings.state_dir / "db",
        settings.runs_dir,
        settings.cache_dir,
        settings.weights_dir,
        settings.user_weights_dir,
        settings.data_root,
    ]
    if settings.state_dir != REPO_ROOT:
        candidates.append(settings.state_dir)
    if settings.database_url.startswith("sqlite:///"):
        candidates.append(Path(settings.database_url.removeprefix("sqlite:///")).parent)
    served = [Path(p) for p in keep] + [Path(tempfile.gettempdir()), Path(gradio.utils.get_cache_folder())]
    blocked = {str(p.resolve()) for p in candidates if not any(_is_within(s, p) for s in served)}
    return sorted(blocked)


def launch_options(allowed_files: list[str] = ()) -> dict:
    """Keyword arguments for ``Blocks.launch``: upload size limit, served and blocked paths.

    Args:
        allowed_files: individual files the app shows on purpose (the Upscale examples).
    """
    settings = get_settings()
    return {
        "max_file_size": f"{settings.max_upload_mb}mb" if settings.max_upload_mb else None,
        "allowed_paths": [str(Path(f).resolve()) for f in allowed_files],
        "blocked_paths": blocked_paths(list(allowed_files)),
    }


def queue_options() -> dict:
    """Keyword arguments for ``Blocks.queue``: default concurrency and queue length."""
    settings = get_settings()
    return {"default_concurrency_limit": settings.concurrency, "max_size": settings.queue_size}
