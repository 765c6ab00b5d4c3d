"""Settings from the environment (local, public, inside a Space) and the admin policy."""

from __future__ import annotations

import pytest

from srweb import access, config
from srweb.config import LOCAL_MAX_INPUT_PIXELS, PUBLIC_MAX_INPUT_PIXELS, REPO_ROOT, get_settings

VARIABLES = (
    "SPACE_ID",
    "SRWEB_PUBLIC",
    "SRWEB_ADMIN_TOKEN",
    "SRWEB_STATE_DIR",
    "SRWEB_DATABASE_URL",
    "SRWEB_RUNS_DIR",
    "SRWEB_CACHE_DIR",
    "SRWEB_MAX_INPUT_PIXELS",
    "SRWEB_MAX_UPLOAD_MB",
    "SRWEB_QUEUE_SIZE",
    "SRWEB_CONCURRENCY",
)


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment and a stand-in for the Space's ``/data`` (missing until a test makes it)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(config, "SPACES_STORAGE", tmp_path / "data")
    get_settings.cache_clear()

    def settings(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return get_settings()

    yield settings
    get_settings.cache_clear()


def test_local_defaults(env):
    s = env()
    assert (s.public, s.admin_token, s.state_dir) == (False, None, REPO_ROOT)
    assert s.database_url == f"sqlite:///{REPO_ROOT / 'db' / 'srweb.sqlite'}"
    assert s.runs_dir == REPO_ROOT / "db" / "runs" and s.max_input_pixels == LOCAL_MAX_INPUT_PIXELS


def test_space_with_persistent_storage_keeps_state_in_data(env, tmp_path):
    (tmp_path / "data").mkdir()
    s = env(SPACE_ID="someone/srweb")
    assert s.public and s.state_dir == tmp_path / "data" / "srweb"
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'srweb' / 'db' / 'srweb.sqlite'}"
    assert s.runs_dir == tmp_path / "data" / "srweb" / "db" / "runs"
    assert (s.max_input_pixels, s.max_upload_mb) == (PUBLIC_MAX_INPUT_PIXELS, 20)


def test_space_without_persistent_storage_falls_back_to_local_db(env):
    s = env(SPACE_ID="someone/srweb")  # /data missing (storage not enabled)
    assert s.public and s.state_dir == REPO_ROOT
    assert s.database_url == f"sqlite:///{REPO_ROOT / 'db' / 'srweb.sqlite'}"


def test_read_only_data_is_not_used(env, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(config.os, "access", lambda path, mode: False)  # root ignores chmod; fake it
    assert env(SPACE_ID="someone/srweb").state_dir == REPO_ROOT


def test_explicit_settings_win(env, tmp_path):
    (tmp_path / "data").mkdir()
    s = env(
        SPACE_ID="x/y",
        SRWEB_PUBLIC="0",
        SRWEB_STATE_DIR=str(tmp_path / "mine"),
        SRWEB_MAX_INPUT_PIXELS="1000",
        SRWEB_QUEUE_SIZE="0",
        SRWEB_MAX_UPLOAD_MB="5",
        SRWEB_DATABASE_URL="postgresql://db/srweb",
    )
    assert not s.public and s.state_dir == tmp_path / "mine" and s.database_url == "postgresql://db/srweb"
    assert (s.max_input_pixels, s.queue_size, s.max_upload_mb) == (1000, None, 5)
    assert env(SRWEB_PUBLIC="yes").public and env(SRWEB_PUBLIC="off", SPACE_ID="").public is False


@pytest.mark.parametrize(
    "public, configured, token, allowed",
    [
        (False, None, None, True),  # local: everything open
        (False, "s3cret", "", True),
        (True, "s3cret", "s3cret", True),
        (True, "s3cret", " s3cret ", True),  # pasted with spaces
        (True, "s3cret", "s3cre", False),
        (True, "s3cret", "", False),
        (True, "s3cret", None, False),
        (True, "s3cret", ["s3cret"], False),  # not a string (hand-made API call)
        (True, None, "", False),  # public without a configured token: admin features off
        (True, None, "anything", False),
        (True, "pässwört", "pässwört", True),  # non-ASCII tokens compare as bytes
    ],
)
def test_admin_policy(env, public, configured, token, allowed, monkeypatch):
    delays = []
    monkeypatch.setattr(access.time, "sleep", delays.append)
    values = {"SRWEB_PUBLIC": "1" if public else "0"}
    if configured:
        values["SRWEB_ADMIN_TOKEN"] = configured
    env(**values)
    assert access.is_admin(token) is allowed
    if allowed:
        access.require_admin(token)
        return
    with pytest.raises(access.AccessDenied) as denied:
        access.require_admin(token, "launching a run")
    message = str(denied.value)
    assert message.startswith("launching a run ")
    assert ("none is configured" in message) == (configured is None)
    if isinstance(token, str) and token:
        assert token not in message  # never echoed
    # A wrong guess (not a missing token) is slowed down, so the token cannot be brute-forced.
    wrong = configured is not None and isinstance(token, str) and bool(token.strip())
    assert delays == ([access.WRONG_TOKEN_DELAY_S] if wrong else [])


def test_admin_only_wrapper_checks_before_the_handler_runs(env):
    import gradio as gr

    from srweb.ui.admin import admin_only

    calls = []

    def handler(a, b):
        calls.append((a, b))
        return a + b

    def stream(a):
        yield a
        yield a * 2

    env(SRWEB_PUBLIC="1", SRWEB_ADMIN_TOKEN="tok")
    with pytest.raises(gr.Error, match="needs the admin token"):
        admin_only(handler, "adding")(1, 2, "bad")
    with pytest.raises(gr.Error, match="needs the admin token"):
        next(admin_only(stream, "streaming")(1, None))
    assert calls == []
    assert admin_only(handler, "adding")(1, 2, "tok") == 3 and calls == [(1, 2)]
    assert list(admin_only(stream, "streaming")(3, "tok")) == [3, 6]
    env(SRWEB_PUBLIC="0")
    assert admin_only(handler, "adding")(1, 2, "") == 3


def test_launch_options_block_server_folders(env, tmp_path):
    s = env(SRWEB_STATE_DIR=str(tmp_path / "state"), SRWEB_PUBLIC="1")
    example = REPO_ROOT / "README.md"
    options = access.launch_options([str(example)])
    assert options["max_file_size"] == "20mb" and options["allowed_paths"] == [str(example)]
    blocked = options["blocked_paths"]
    for folder in (s.state_dir, s.state_dir / "db", s.weights_dir, s.user_weights_dir, s.runs_dir):
        assert str(folder.resolve()) in blocked
    import tempfile

    assert not any(tempfile.gettempdir().startswith(b + "/") or tempfile.gettempdir() == b for b in blocked)
    assert access.queue_options() == {"default_concurrency_limit": 4, "max_size": 64}
