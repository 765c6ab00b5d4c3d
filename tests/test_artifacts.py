"""The artifact store (fsspec): a run folder pulled and pushed, logs and exports read from a store
that is not a local folder (fsspec's in-memory file system stands for s3:// or hf://)."""

from __future__ import annotations

import os

import pytest

from srweb.artifacts import Pusher, is_remote_location, local_copy, pull, read_tail, run_location


@pytest.fixture
def memory_store(monkeypatch, fresh_state):
    import fsspec

    from srweb.config import get_settings

    fs = fsspec.filesystem("memory")
    if fs.exists("/store"):
        fs.rm("/store", recursive=True)
    monkeypatch.setenv("SRWEB_ARTIFACTS_URL", "memory://store")
    get_settings.cache_clear()
    yield fs
    if fs.exists("/store"):
        fs.rm("/store", recursive=True)


def test_push_then_pull_on_another_machine(memory_store, tmp_path):
    location = run_location(7, "espcn-x2")
    assert location.startswith("memory://") and location.endswith("/store/runs/00007-espcn-x2")
    assert is_remote_location(location)
    worker_a = tmp_path / "a"
    (worker_a / "export").mkdir(parents=True)
    (worker_a / "last.pt").write_bytes(b"step 10")
    (worker_a / "export" / "w.json").write_text("{}")
    pusher = Pusher(worker_a, location)
    assert pusher.push() == 2
    assert pusher.push() == 0  # nothing changed: nothing sent again
    (worker_a / "last.pt").write_bytes(b"step 20")
    os.utime(worker_a / "last.pt", (1, 1))  # a new mtime, as a new checkpoint has
    assert pusher.push() == 1
    assert not [p for p in memory_store.find("/store") if p.endswith(".part")]  # each moved into place whole

    worker_b = tmp_path / "b"
    assert pull(location, worker_b) == 2
    assert (worker_b / "last.pt").read_bytes() == b"step 20" and (worker_b / "export" / "w.json").is_file()
    assert pull(run_location(8, "none"), tmp_path / "c") == 0  # a run never pushed: nothing to resume from


def test_log_tail_and_local_copy_from_a_remote_store(memory_store, tmp_path):
    location = run_location(3, "edsr")
    import fsspec

    with fsspec.open(location + "/train.log", "wb") as fh:
        fh.write(b"line 1\nline 2\n")
    assert read_tail(location + "/train.log", 7) == b"line 2\n"
    assert read_tail(location + "/missing.log", 7) == b""
    copy = local_copy(location)
    assert copy.is_relative_to(tmp_path) and (copy / "train.log").read_bytes() == b"line 1\nline 2\n"
    assert local_copy(str(tmp_path / "x")) == tmp_path / "x"  # a local store is used in place
