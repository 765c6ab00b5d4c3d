"""``srweb data fetch`` / ``data list`` and dataset name resolution, with no network: a local HTTP
server (Range support, optionally cutting a response halfway) serves small archives made here, and
the catalogue is patched to point at it."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srweb.cli import main
from srweb.config import get_settings
from srweb.data import catalog
from srweb.data.download import fetch_dataset
from srweb.data.samples import BUILTIN_ROOT, benchmark_path


class ArchiveServer:
    """``files`` served at ``url + name``; ``cut`` names files whose next full response stops halfway.
    ``requests`` records (name, Range header) of every GET."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_error(416)
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if name in server.cut and not rng:
                    server.cut.discard(name)
                    body = body[: len(body) // 2]  # the connection drops halfway
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with ArchiveServer() as srv:
        yield srv


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


def png_bytes(seed: int, size: int = 24) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def serve(
    monkeypatch,
    server: ArchiveServer,
    name: str,
    payloads: dict[str, bytes],
    *,
    pin: bool = True,
    images: int | None = None,
) -> None:
    """Serve ``payloads`` (archive file -> bytes) and point catalogue entry ``name``'s archives at them,
    pinned to their size and SHA-256 (``pin``) and expecting ``images`` images each."""
    server.files.update(payloads)
    entry = catalog.CATALOG[name]
    archives = tuple(
        dataclasses.replace(
            a,
            url=server.url + a.file,
            size=len(payloads[a.file]) if pin else None,
            sha256=hashlib.sha256(payloads[a.file]).hexdigest() if pin else None,
            images=images if images is not None else a.images,
        )
        if a.file in payloads
        else a
        for a in entry.archives
    )
    monkeypatch.setitem(catalog.CATALOG, name, dataclasses.replace(entry, archives=archives))


SET14 = {f"Set14_HR/img_{i:03d}.png": png_bytes(i) for i in range(3)}


def leftovers(root: Path) -> list[str]:
    """Anything a failed or finished fetch must not leave: archives, partial files, temp folders."""
    return sorted(
        p.name
        for p in root.rglob("*")
        if p.name.startswith((".downloads", ".extract-")) or p.suffix in (".part", ".gz", ".zip")
    )


def test_fetch_installs_a_good_archive_and_list_shows_it(server, data_root, monkeypatch, capsys):
    serve(monkeypatch, server, "Set14", {"Set14_HR.tar.gz": tar_gz(SET14)}, images=3)
    assert main(["data", "fetch", "Set14", "--quiet"]) == 0
    folder = data_root / "Set14"
    assert sorted(p.name for p in folder.iterdir()) == ["img_000.png", "img_001.png", "img_002.png"]
    assert (folder / "img_001.png").read_bytes() == SET14["Set14_HR/img_001.png"]
    assert leftovers(data_root) == []
    assert benchmark_path("Set14") == folder and benchmark_path("set14") == folder
    capsys.readouterr()
    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["Set14"]["status"] == "downloaded" and rows["Set14"]["path"] == str(folder)
    assert rows["Set5"]["status"] == "built in" and rows["BSD100"]["status"] == "missing"
    server.requests.clear()
    assert main(["data", "fetch", "Set14", "--quiet"]) == 0 and server.requests == []  # already there


def test_corrupted_archives_are_refused_and_leave_nothing(server, data_root, monkeypatch, capsys):
    good = tar_gz(SET14)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    serve(monkeypatch, server, "Set14", {"Set14_HR.tar.gz": good}, images=3)  # pinned to the good bytes
    server.files["Set14_HR.tar.gz"] = bytes(bad)
    assert main(["data", "fetch", "Set14", "--quiet"]) == 1
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert not (data_root / "Set14").exists() and leftovers(data_root) == []
    # No published checksum: the archive's own CRC catches the damage.
    serve(monkeypatch, server, "Set14", {"Set14_HR.tar.gz": bytes(bad)}, pin=False, images=3)
    assert main(["data", "fetch", "Set14", "--quiet"]) == 1
    assert "download removed" in capsys.readouterr().err
    assert not (data_root / "Set14").exists() and leftovers(data_root) == []
    # Whole, but not the expected set: refused on the image count.
    serve(monkeypatch, server, "Set14", {"Set14_HR.tar.gz": good}, pin=False, images=14)
    assert main(["data", "fetch", "Set14", "--quiet"]) == 1
    assert "3 images in Set14_HR/, expected 14" in capsys.readouterr().err
    assert not (data_root / "Set14").exists() and leftovers(data_root) == []


@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "unpinned"])
def test_a_download_cut_halfway_resumes_from_the_partial_file(server, data_root, monkeypatch, capsys, pin):
    payload = tar_gz(SET14)
    serve(monkeypatch, server, "Set14", {"Set14_HR.tar.gz": payload}, pin=pin, images=3)
    server.cut.add("Set14_HR.tar.gz")
    assert main(["data", "fetch", "Set14", "--quiet"]) == 1
    assert "run again to resume" in capsys.readouterr().err
    part = data_root / ".downloads" / "Set14_HR.tar.gz.part"
    half = len(payload) // 2
    assert part.stat().st_size == half and not (data_root / "Set14").exists()
    assert main(["data", "fetch", "Set14", "--quiet"]) == 0
    assert server.requests[-1] == ("Set14_HR.tar.gz", f"bytes={half}-")
    assert sorted(p.name for p in (data_root / "Set14").iterdir()) == ["img_000.png", "img_001.png", "img_002.png"]
    assert leftovers(data_root) == []


def test_offline_gives_one_line_with_the_url_and_the_manual_way(data_root, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nobody listens on: the connection is refused, as offline
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/Urban100_HR.tar.gz"
    entry = catalog.CATALOG["Urban100"]
    monkeypatch.setitem(
        catalog.CATALOG,
        "Urban100",
        dataclasses.replace(entry, archives=(dataclasses.replace(entry.archives[0], url=url),)),
    )
    assert main(["data", "fetch", "Urban100", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"srweb: error: cannot download {url} ")
    assert "are you offline?" in err
    assert f"unpack its Urban100_HR folder into {data_root / 'Urban100'}" in err
    assert not (data_root / "Urban100").exists() and leftovers(data_root) == []


def test_div2k_parts_by_split_and_scale(server, data_root, monkeypatch, capsys):
    hr, lr = png_bytes(7, 24), png_bytes(8, 12)
    serve(
        monkeypatch,
        server,
        "DIV2K",
        {
            "DIV2K_valid_HR.zip": zip_of({"DIV2K_valid_HR/0801.png": hr}),
            "DIV2K_valid_LR_bicubic_X2.zip": zip_of({"DIV2K_valid_LR_bicubic/X2/0801x2.png": lr}),
        },
        images=1,
    )
    folder = fetch_dataset("DIV2K", splits=["valid"], scales=[2], progress=False)
    assert (folder / "DIV2K_valid_HR" / "0801.png").read_bytes() == hr
    assert (folder / "DIV2K_valid_LR_bicubic" / "X2" / "0801x2.png").read_bytes() == lr
    assert {name for name, _ in server.requests} == {"DIV2K_valid_HR.zip", "DIV2K_valid_LR_bicubic_X2.zip"}
    assert main(["data", "list"]) == 0
    assert "[valid HR, valid x2]" in capsys.readouterr().out
    with pytest.raises(ValueError, match="scales 2, 3, 4"):
        fetch_dataset("DIV2K", scales=[8])
    assert main(["data", "fetch", "Nope"]) == 2
    assert "known: General-100, DIV2K" in capsys.readouterr().err


def test_set5_is_built_in_and_a_users_own_copy_wins(data_root, capsys):
    builtin = BUILTIN_ROOT / "Set5"
    assert sorted(p.name for p in builtin.iterdir()) == [
        "baby.png",
        "bird.png",
        "butterfly.png",
        "head.png",
        "woman.png",
    ]  # only images: nothing to skip
    assert "Bevilacqua" in (BUILTIN_ROOT / "README.md").read_text()
    assert benchmark_path("Set5") == builtin  # the data root does not even exist
    own = data_root / "set5"
    own.mkdir(parents=True)
    (own / "x.png").write_bytes(png_bytes(1))
    assert benchmark_path("Set5") == own
    assert main(["data", "list"]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("Set5"))
    assert str(own) in line and "instead of the built-in copy" not in line  # text view: where it is
    with pytest.raises(ValueError, match="srweb data fetch BSD100"):
        benchmark_path("bsd100")
