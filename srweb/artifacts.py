"""The artifact store every machine reaches: run folders (checkpoints, logs) and exported weights.

``SRWEB_ARTIFACTS_URL`` is an fsspec URL: a folder (a network mount), ``file://...``,
``s3://bucket/prefix`` (with s3fs) or ``hf://datasets/OWNER/REPO`` (huggingface_hub); default
``state_dir/db/artifacts``. A run's folder in the store is ``runs/NNNNN-NAME``; a worker trains
in a local copy, pulls it before training (so a run resumes on any worker from its last
checkpoint) and pushes what changed while it trains and when it ends.
"""

from __future__ import annotations

import os
from pathlib import Path

from srweb.config import get_settings


class ArtifactError(OSError):
    """The artifact store cannot be reached or written."""


def store(url: str | None = None):
    """``(filesystem, root path)`` of the artifact store (``url`` or the settings')."""
    from fsspec.core import url_to_fs

    return url_to_fs(url or get_settings().artifacts_url)


def is_local(url: str | None = None) -> bool:
    fs, _ = store(url)
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def run_location(run_id: int, name: str, url: str | None = None) -> str:
    """Where run ``run_id``'s folder lives in the store (a plain path for a local store)."""
    fs, root = store(url)
    path = f"{root.rstrip('/')}/runs/{run_id:05d}-{name}"
    return path if is_local(url) else fs.unstrip_protocol(path)


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def pull(location: str, local: Path) -> int:
    """Copy the run folder ``location`` of the store into ``local`` (files not there yet or
    newer in the store); returns the number of files copied. A missing folder copies nothing."""
    fs, path = store(location)
    local.mkdir(parents=True, exist_ok=True)
    try:
        if not fs.exists(path):
            return 0
        copied = 0
        for remote in fs.find(path):
            target = local / os.path.relpath(remote, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target) + ".part")
            os.replace(str(target) + ".part", target)
            copied += 1
        return copied
    except OSError as exc:
        raise ArtifactError(f"cannot read {location} from the artifact store: {exc}") from exc


class Pusher:
    """Pushes the files of a local run folder that changed since the last push (checkpoints are
    written whole and renamed, so a pushed file is never half written); each file goes to a
    ``.part`` name first and is then moved into place."""

    def __init__(self, local: Path, location: str) -> None:
        self.local, self.location = local, location
        self.pushed: dict[str, float] = {}

    def push(self) -> int:
        fs, root = store(self.location)
        changed = {
            rel: mtime
            for rel, mtime in _files(self.local).items()
            if self.pushed.get(rel) != mtime and not rel.endswith((".part", ".tmp"))
        }
        try:
            for rel, mtime in sorted(changed.items()):
                target = f"{root.rstrip('/')}/{rel}"
                fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                fs.put_file(str(self.local / rel), target + ".part")
                fs.mv(target + ".part", target)
                self.pushed[rel] = mtime
        except OSError as exc:
            raise ArtifactError(f"cannot write {self.location} to the artifact store: {exc}") from exc
        return len(changed)


def is_remote_location(location: str) -> bool:
    """A run folder recorded as a URL of a store that is not this machine's file system."""
    return "://" in location and not location.startswith("file://")


def local_copy(location: str) -> Path:
    """A run folder as a local folder: itself when the store is local, else a copy pulled into
    ``cache_dir/artifacts`` (e.g. to export the weights a worker trained into an ``s3://`` store)."""
    if not is_remote_location(location):
        return Path(location.removeprefix("file://"))
    local = get_settings().cache_dir / "artifacts" / location.rstrip("/").rsplit("/", 1)[-1]
    pull(location, local)
    return local


def read_tail(location: str, nbytes: int) -> bytes:
    """The last ``nbytes`` of a file in the store (b"" when it is not there yet)."""
    fs, path = store(location)
    try:
        size = fs.size(path)
        return fs.cat_file(path, start=max(0, size - nbytes))
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise ArtifactError(f"cannot read {location} from the artifact store: {exc}") from exc
