"""Weights on the Hugging Face Hub, against a fake Hub in a folder (tests never reach the network):
``hf://OWNER/REPO/NAME`` loads through the same checks as local weights; ``srweb publish`` uploads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import srweb
from srweb.cli import main
from srweb.weights.hub import HubError, parse_ref
from srweb.weights.sync import publish
from srweb.models import create_model
from srweb.weights.files import WeightsError, load_weights, save_weights


class FakeHub:
    """``hf_hub_download`` and ``HfApi`` over ``root/OWNER/REPO/FILE``; records the calls."""

    def __init__(self, root: Path) -> None:
        self.root, self.downloads, self.created = root, [], []

    def hf_hub_download(self, repo_id, filename, *, revision=None, library_name=None, **_):
        from huggingface_hub.errors import EntryNotFoundError

        self.downloads.append((repo_id, filename, revision))
        path = self.root / repo_id / filename
        if not path.is_file():
            raise EntryNotFoundError(f"404 Client Error. Entry Not Found for url: .../{repo_id}/{filename}")
        return str(path)

    def api(self, token=None):
        hub = self

        class Api:
            def create_repo(self, repo_id, *, private=None, exist_ok=False, **_):
                if token == "bad":
                    raise PermissionError("401 Unauthorized: invalid token\nmore detail")
                hub.created.append((repo_id, private))
                (hub.root / repo_id).mkdir(parents=True, exist_ok=True)

            def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **_):
                target = hub.root / repo_id / path_in_repo
                if isinstance(path_or_fileobj, bytes):
                    target.write_bytes(path_or_fileobj)
                else:
                    shutil.copy(path_or_fileobj, target)

            def file_exists(self, repo_id, filename, **_):
                return (hub.root / repo_id / filename).is_file()

        return Api()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub

    fake = FakeHub(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    return fake


@pytest.fixture
def local(tmp_path, monkeypatch):
    """One small espcn x2 entry in a weights folder of its own."""
    from srweb.config import get_settings

    folder = tmp_path / "weights"
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("SRWEB_USER_WEIGHTS_DIR", str(tmp_path / "exported"))
    get_settings.cache_clear()
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    save_weights(create_model("espcn", 2), "espcn-x2.mine", weights_dir=folder, notes="made by a test")
    yield folder
    get_settings.cache_clear()


def test_publish_with_onnx_adds_the_checked_graph(hub, local, tmp_path, monkeypatch, capsys):
    import onnx

    from srweb.config import get_settings

    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    assert main(["publish", "espcn-x2.mine", "--repo", "someone/sr-models", "--onnx"]) == 0
    repo = hub.root / "someone" / "sr-models"
    assert (repo / "espcn-x2.mine.onnx").is_file() and (repo / "espcn-x2.mine.safetensors").is_file()
    props = {p.key: p.value for p in onnx.load(str(repo / "espcn-x2.mine.onnx")).metadata_props}
    assert props["srweb.name"] == "espcn-x2.mine" and props["srweb.scale"] == "2"


def test_publish_then_load_and_upscale_from_the_hub(hub, local, tmp_path, capsys):
    assert main(["publish", "espcn-x2.mine", "--repo", "someone/sr-models", "--private"]) == 0
    ref = capsys.readouterr().out.strip()
    assert ref == "hf://someone/sr-models/espcn-x2.mine" and hub.created == [("someone/sr-models", True)]
    repo = hub.root / "someone" / "sr-models"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "espcn-x2.mine.json", "espcn-x2.mine.safetensors"]
    text = (repo / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: srweb\n") and "**espcn-x2.mine** · espcn x2" in text
    assert f"--weights {ref}" in text

    model, card = load_weights(ref)  # through the Hub, with the same checks as local weights
    local_model, _ = load_weights("espcn-x2.mine")
    assert card.name == "espcn-x2.mine" and all(
        (a == b).all() for a, b in zip(model.state_dict().values(), local_model.state_dict().values())
    )
    Image.fromarray(np.full((12, 10, 3), 90, np.uint8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--weights", ref, "--out", str(tmp_path / "out")]) == 0
    assert Image.open(tmp_path / "out" / "in.png").size == (20, 24)
    assert srweb.Upscaler(ref + "@main").name == "espcn-x2.mine"
    assert ("someone/sr-models", "espcn-x2.mine.json", "main") in hub.downloads  # the revision is passed on

    # A second entry in the same repository keeps the README the repository has.
    save_weights(create_model("espcn", 3), "espcn-x3.mine", weights_dir=local)
    (repo / "README.md").write_text("mine")
    assert publish("espcn-x3.mine", "someone/sr-models") == "hf://someone/sr-models/espcn-x3.mine"
    assert (repo / "README.md").read_text() == "mine" and (repo / "espcn-x3.mine.json").is_file()


def test_tampered_hub_weights_are_refused(hub, local):
    publish("espcn-x2.mine", "someone/sr")
    tensors = hub.root / "someone" / "sr" / "espcn-x2.mine.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(WeightsError, match="sha256 differs from its card"):
        load_weights("hf://someone/sr/espcn-x2.mine")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["upscale", "x.png", "--weights", "hf://someone/nothing/espcn-x2.a", "--out", "o"],
            "hf://someone/nothing/espcn-x2.a: cannot fetch espcn-x2.a.json from someone/nothing (EntryNotFoundError: 404",
        ),
        (
            ["upscale", "x.png", "--weights", "hf://just-a-repo", "--out", "o"],
            "hf://just-a-repo: a Hub weights reference is hf://OWNER/REPO/NAME",
        ),
        (["publish", "espcn-x2.mine", "--repo", "no-owner"], "no-owner: a Hub repository is OWNER/NAME"),
        (["publish", "nosuch", "--repo", "a/b"], "weights 'nosuch' not found"),
        (
            ["publish", "espcn-x2.mine", "--repo", "a/b", "--token", "bad"],
            "cannot publish espcn-x2.mine to a/b (PermissionError: 401 Unauthorized: invalid token)",
        ),
    ],
)
def test_bad_hub_requests_are_one_clear_line(hub, local, capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"srweb: error: {message}") and err.count("\n") == 1, err


def test_the_app_fetches_the_hub_weights_its_settings_name_and_lists_them(hub, local, tmp_path, monkeypatch, caplog):
    from srweb.config import get_settings
    from srweb.services import fetch_hub_weights
    from srweb.weights.files import list_weights

    publish("espcn-x2.mine", "someone/sr")
    torch = pytest.importorskip("torch")
    torch.manual_seed(1)
    save_weights(create_model("espcn", 2), "espcn-x2.mine", weights_dir=hub.root / "other" / "sr")  # other tensors
    save_weights(create_model("espcn", 3), "espcn-x3.theirs", weights_dir=hub.root / "someone" / "sr")
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "shipped-none"))  # espcn-x2.mine now only on the Hub
    monkeypatch.setenv(
        "SRWEB_HUB_WEIGHTS",
        "hf://someone/sr/espcn-x2.mine, hf://someone/sr/espcn-x3.theirs "
        "hf://someone/sr/missing hf://other/sr/espcn-x2.mine",
    )
    get_settings.cache_clear()
    assert fetch_hub_weights() == ["espcn-x2.mine", "espcn-x3.theirs"]
    exported = tmp_path / "exported"
    assert sorted(p.name for p in exported.iterdir()) == [
        "espcn-x2.mine.json",
        "espcn-x2.mine.safetensors",
        "espcn-x3.theirs.json",
        "espcn-x3.theirs.safetensors",
    ]
    assert {c.name for c in list_weights()} == {"espcn-x2.mine", "espcn-x3.theirs"}  # listed like exported weights
    assert (
        "cannot fetch missing.json" in caplog.text and "other weights are already called espcn-x2.mine" in caplog.text
    )
    # A card whose name would write outside the folder is refused.
    import json

    evil = hub.root / "evil" / "sr"
    save_weights(create_model("espcn", 2), "espcn-x2.evil", weights_dir=evil)
    card = json.loads((evil / "espcn-x2.evil.json").read_text())
    (evil / "espcn-x2.evil.json").write_text(json.dumps({**card, "name": "../../escaped"}))
    from srweb.weights.sync import fetch_into

    assert fetch_into(["hf://evil/sr/espcn-x2.evil"], exported) == []
    assert "is not a file name" in caplog.text and not (tmp_path / "escaped.json").exists()
    before = (exported / "espcn-x2.mine.safetensors").stat().st_mtime_ns
    assert fetch_hub_weights() == ["espcn-x2.mine", "espcn-x3.theirs"]  # a restart copies nothing again
    assert (exported / "espcn-x2.mine.safetensors").stat().st_mtime_ns == before


def test_references_parse():
    assert parse_ref("hf://a/b/espcn-x2.t") == ("a/b", "espcn-x2.t", None)
    assert parse_ref("hf://a/b/espcn-x2.t@v1.0") == ("a/b", "espcn-x2.t", "v1.0")
    for bad in ("hf://a/b", "hf://a/b/c/d", "a/b/c"):
        with pytest.raises(HubError):
            parse_ref(bad)


def test_the_app_never_fetches_from_the_hub():
    from srweb.ui.common import parse_choice

    with pytest.raises(WeightsError, match="unknown weights"):  # only listed entries: no downloads by visitors
        parse_choice("hf://someone/sr/espcn-x2.mine")
