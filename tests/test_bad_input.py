"""Bad and odd input through every door: the Python API, the ``srweb upscale`` command and the
running app's ``/upscale`` endpoint (``gradio_client``).

Every case ends in a correct result (size x scale, mode family kept; PNG outputs hold what PNG
can) or in one clear error naming the problem, and the app keeps serving after each. Weights
files that are not what they claim (wrong tensors, a pickle) are refused without ever running
pickled code: a pickle here would create a marker file if it were executed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import forged_png
from PIL import Image

import srweb
from srweb.imaging.io import load_image

HUGE = (3000, 2000)  # 6 MP: valid, within the local 16 MP limit, tiled below
HUGE_TILE = 512
MAX_PIXELS = 16_000_000  # the local default (SRWEB_MAX_INPUT_PIXELS unset)


def _ramp(width: int, height: int, channels: int = 3) -> Image.Image:
    a = np.linspace(0, 255, width * height * channels).reshape(height, width, channels).astype(np.uint8)
    return Image.fromarray(a if channels > 1 else a[..., 0])


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kw)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """An input file and what must come of it.

    ``size`` is the expected output size at scale 1 (the input as displayed, EXIF applied);
    ``modes`` the accepted output modes from the Python API, ``png_modes`` from PNG outputs
    (CLI and web); ``error`` a regex of the message when the input must be refused.
    """

    file: str
    size: tuple[int, int] | None = None
    modes: tuple[str, ...] = ()
    png_modes: tuple[str, ...] = ()
    error: str | None = None


def _write_cases(folder: Path) -> None:
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("hello, I am text with a .png name\n")
    png = _encoded(_ramp(64, 48), "PNG")
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    jpeg = _encoded(_ramp(64, 48), "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    _ramp(1, 1).save(folder / "one-pixel.png")
    Image.fromarray(np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16)).save(folder / "sixteen-bit.png")
    _ramp(40, 32, 4).save(folder / "rgba.png")
    _ramp(40, 32).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(
        folder / "palette-alpha.png", transparency=0
    )
    Image.new("CMYK", (40, 32), (10, 200, 30, 5)).save(folder / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    _ramp(40, 24).save(folder / "exif-rotated.jpg", exif=exif.tobytes())
    rotated = (folder / "exif-rotated.jpg").read_bytes()
    tiff = rotated.find(b"MM\x00*") if b"MM\x00*" in rotated else rotated.find(b"II*\x00")
    (folder / "corrupt-exif.jpg").write_bytes(rotated[: tiff + 2] + b"\x00\x04" + rotated[tiff + 4 :])
    forged_png(folder / "bomb.png", 30000, 30000)
    Image.fromarray(
        np.broadcast_to(np.linspace(0, 255, HUGE[0], dtype=np.uint8)[None, :, None], (HUGE[1], HUGE[0], 3)).copy()
    ).save(folder / "huge.png", compress_level=1)


CASES = {
    "empty": Case("empty.png", error="empty file"),
    "text-named-png": Case("text.png", error="not a readable image"),
    "truncated-png": Case("truncated.png", error="(?i)truncated"),
    "truncated-jpeg": Case("truncated.jpg", error="(?i)truncated"),
    "one-pixel": Case("one-pixel.png", (1, 1), ("RGB",), ("RGB",)),
    "sixteen-bit": Case("sixteen-bit.png", (48, 40), ("I;16",), ("I;16", "I")),
    "rgba": Case("rgba.png", (40, 32), ("RGBA",), ("RGBA",)),
    "palette-transparency": Case("palette-alpha.png", (40, 32), ("RGBA", "PA"), ("RGBA",)),
    "cmyk-jpeg": Case("cmyk.jpg", (40, 32), ("CMYK",), ("RGB",)),
    "exif-rotated": Case("exif-rotated.jpg", (24, 40), ("RGB",), ("RGB",)),
    "corrupt-exif": Case("corrupt-exif.jpg", (40, 24), ("RGB",), ("RGB",)),  # orientation unknown: as stored
    "decompression-bomb": Case(
        "bomb.png", error="too large, its header declares a decompression bomb: 900,000,000 pixels"
    ),
    "huge-valid": Case("huge.png", HUGE, ("RGB",), ("RGB",)),
}


class _Evil:
    """Unpickling this creates the marker file: proof that pickled code ran."""

    marker = ""

    def __reduce__(self):
        return open, (self.marker, "w")


@dataclass(frozen=True)
class WeightsCase:
    path: Path
    error: str


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-inputs")
    _write_cases(folder)
    return folder


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "PICKLE-RAN"


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory, marker) -> dict[str, WeightsCase]:
    """Weights files that lie: each ``NAME.safetensors`` has a card whose sha256 matches it, so
    loading gets past the checksum to the tensors themselves."""
    from safetensors.torch import save_file

    from srweb.models import create_model
    from srweb.weights.files import file_sha256, save_weights

    folder = tmp_path_factory.mktemp("bad-weights")
    model = create_model("espcn", 2)

    def entry(name: str, write) -> Path:
        save_weights(model, name, weights_dir=folder)
        tensors = folder / f"{name}.safetensors"
        write(tensors)
        card = json.loads((folder / f"{name}.json").read_text())
        card["sha256"] = file_sha256(tensors)
        (folder / f"{name}.json").write_text(json.dumps(card))
        return tensors

    _Evil.marker = str(marker)
    wrong = {k: torch.zeros(*v.shape[::-1], 1) for k, v in model.state_dict().items()}  # right names, wrong shapes
    evil_pt = folder / "espcn-x2.pickle.pt"
    torch.save({"state_dict": _Evil()}, evil_pt)
    return {
        "wrong-tensors": WeightsCase(
            entry("espcn-x2.wrongtensors", lambda p: save_file(wrong, p)), "tensors do not fit espcn x2"
        ),
        "pickle-as-safetensors": WeightsCase(
            entry("espcn-x2.pickled", lambda p: p.write_bytes(pickle.dumps(_Evil()))), "tensors do not fit espcn x2"
        ),
        "pickle-as-pt": WeightsCase(evil_pt, "not found|refused to load"),
    }


def _check_result(case: Case, img: Image.Image, scale: int, modes: tuple[str, ...]) -> None:
    assert img.size == (case.size[0] * scale, case.size[1] * scale)
    assert img.mode in modes, (img.mode, modes)


# --- Python API -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_upscaler(app_weights):
    return srweb.Upscaler(app_weights[0], device="cpu")


@pytest.fixture(scope="module")
def app_weights(tmp_path_factory):
    """The smallest shipped weights (name, scale), as the app fixture uses."""
    from srweb.weights.files import list_weights

    cards = list_weights()
    if not cards:
        pytest.skip("no shipped weights")
    card = min(cards, key=lambda c: c.num_params)
    return card.name, card.scale


@pytest.mark.parametrize("name", list(CASES))
def test_python_api(name, inputs, model_upscaler):
    case = CASES[name]
    path = inputs / case.file
    if case.error:
        with pytest.raises(srweb.imaging.io.ImageError, match=case.error) as caught:
            load_image(path, max_pixels=MAX_PIXELS)
        assert case.file in str(caught.value)
        return
    img = load_image(path, max_pixels=MAX_PIXELS)
    if name == "huge-valid":  # a cheap model, forced into tiles: the point is size and tiling
        upscaler, tiles = srweb.Upscaler("nearest", 2, tile_size=HUGE_TILE), []
        out = upscaler.upscale(img, progress=lambda done, total: tiles.append(total))
        assert tiles and tiles[-1] == (HUGE[0] // HUGE_TILE + 1) * (HUGE[1] // HUGE_TILE + 1)
        _check_result(case, out, 2, case.modes)
        return
    _check_result(case, model_upscaler.upscale(img), model_upscaler.scale, case.modes)


@pytest.mark.parametrize("name", ["wrong-tensors", "pickle-as-safetensors", "pickle-as-pt"])
def test_python_api_bad_weights(name, bad_weights, marker):
    from srweb.weights.files import WeightsError, import_pth

    case = bad_weights[name]
    with pytest.raises(WeightsError, match=case.error):
        srweb.Upscaler(str(case.path))
    if case.path.suffix == ".pt":
        with pytest.raises(WeightsError, match="refused to load"):
            import_pth(case.path, "espcn", 2, "espcn-x2.imported")
    assert not marker.exists()


# --- command line ---------------------------------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRWEB_")}
    out = subprocess.run(
        [sys.executable, "-m", "srweb.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def cli_batch(inputs, tmp_path_factory):
    """One ``srweb upscale`` over the whole folder (nearest x2, 512 px tiles): a batch goes on past bad files."""
    out_dir = tmp_path_factory.mktemp("cli-out")
    started = time.monotonic()
    result = _cli(
        "upscale", inputs, "--weights", "nearest", "--scale", 2, "--tile", HUGE_TILE, "--out", out_dir, "--quiet"
    )
    print(f"\nCLI batch of {len(CASES)} files: {time.monotonic() - started:.1f} s")
    errors = [line.strip() for line in result.stderr.replace("\r", "\n").splitlines() if "srweb: error" in line]
    return result, errors, out_dir


def test_cli_batch_exit_code_and_one_line_per_bad_file(cli_batch):
    result, errors, _ = cli_batch
    assert result.returncode == 1
    assert len(errors) == sum(1 for c in CASES.values() if c.error), errors


@pytest.mark.parametrize("name", list(CASES))
def test_cli(name, cli_batch, inputs):
    case = CASES[name]
    _, errors, out_dir = cli_batch
    target = out_dir / f"{Path(case.file).stem}.png"
    mine = [line for line in errors if case.file in line]
    if case.error:
        assert len(mine) == 1 and re.search(case.error, mine[0]), errors
        assert not target.exists()
        return
    assert not mine, mine
    with Image.open(target) as out:
        assert out.format == "PNG"
        _check_result(case, out, 2, case.png_modes)


BOMB_MESSAGE = (
    "huge.png: too large, its header declares a decompression bomb: 400,000,000 pixels "
    f"exceeds the limit of {MAX_PIXELS:,} (SRWEB_MAX_INPUT_PIXELS)"
)


def test_cli_names_srwebs_own_limit_for_a_decompression_bomb(tmp_path):
    """A header beyond even Pillow's bomb limit (178,956,970 pixels) is refused against srweb's limit,
    in the words every other too-large input gets; Pillow's text and limit never show."""
    bomb = forged_png(tmp_path / "huge.png", 20000, 20000)
    over = forged_png(tmp_path / "over.png", 5000, 4000)  # 20 MP: over srweb's 16 MP, under Pillow's limits
    result = _cli("upscale", bomb, over, "--weights", "nearest", "--scale", 2, "--out", tmp_path / "out", "--quiet")
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert lines == [
        f"srweb: error: {tmp_path}/{BOMB_MESSAGE}",
        f"srweb: error: {over}: 5000x4000 = 20,000,000 pixels exceeds the limit of {MAX_PIXELS:,} "
        "(SRWEB_MAX_INPUT_PIXELS)",
    ], lines


def test_batch_report_and_python_api_name_the_same_limit(tmp_path):
    """The web batch report takes its lines from ``upscale_files``; ``load_image`` without a limit of its
    own names the largest image srweb decodes at all."""
    from srweb.inference.upscaler import Upscaler, upscale_files

    bomb = forged_png(tmp_path / "huge.png", 20000, 20000)
    (outcome,) = upscale_files([bomb], Upscaler("nearest", 2), tmp_path / "out", max_pixels=MAX_PIXELS)
    assert outcome.error == f"{tmp_path}/{BOMB_MESSAGE}"
    with pytest.raises(srweb.imaging.io.ImageTooLarge, match=r"400,000,000 pixels exceeds .*89,478,485 \(the most"):
        load_image(bomb)
    upload = io.BytesIO(bomb.read_bytes())  # a file object without a name
    with pytest.raises(srweb.imaging.io.ImageTooLarge, match="^uploaded image: too large.*bomb: 400,000,000 pixels"):
        load_image(upload, max_pixels=1000)
    assert not upload.closed


@pytest.mark.parametrize("name", ["wrong-tensors", "pickle-as-safetensors", "pickle-as-pt"])
def test_cli_bad_weights(name, bad_weights, inputs, marker, tmp_path):
    case = bad_weights[name]
    result = _cli("upscale", inputs / "rgba.png", "--weights", case.path, "--out", tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("srweb: error:") and re.search(case.error, lines[0]), lines
    assert not list(tmp_path.iterdir()) and not marker.exists()


# --- web API (the running app) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):
    from gradio_client import Client

    return Client(app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _web_upscale(client, path: Path, weights: str):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), weights, None, api_name="/upscale")


def _still_serving(app_server) -> None:
    assert app_server.alive(), app_server.log_tail()
    assert httpx.get(app_server.url + "config", timeout=30).status_code == 200


@pytest.mark.parametrize("name", list(CASES))
def test_web(name, inputs, client, app_server):
    from gradio_client.exceptions import AppError

    case = CASES[name]
    path = inputs / case.file
    # The huge image goes through the nearest baseline: a model on 6 MP takes minutes on this CPU.
    weights, scale = ("nearest-x2", 2) if name == "huge-valid" else (app_server.weights_name, app_server.scale)
    try:
        if case.error:
            with pytest.raises(AppError, match=case.error):
                _web_upscale(client, path, weights)
            return
        sr_path, slider, report = _web_upscale(client, path, weights)
        with Image.open(sr_path) as out:
            assert out.format == "PNG"
            _check_result(case, out, scale, case.png_modes)
        assert f"{case.size[0]}x{case.size[1]}" in report and len(slider) == 2
    finally:
        _still_serving(app_server)


@pytest.fixture
def served_bad_weights(app_server, bad_weights):
    """The two lying ``.safetensors`` entries copied into the running app's weights folder
    (exported weights are picked up by name); removed afterwards."""
    copied = []
    for case in bad_weights.values():
        if case.path.suffix == ".safetensors":
            for suffix in (".safetensors", ".json"):
                source = case.path.with_suffix(suffix)
                copied.append(Path(shutil.copy2(source, app_server.weights_dir / source.name)))
    yield
    for path in copied:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["wrong-tensors", "pickle-as-safetensors", "pickle-as-pt"])
def test_web_bad_weights(name, bad_weights, served_bad_weights, inputs, client, app_server, marker):
    from gradio_client.exceptions import AppError

    case = bad_weights[name]
    # The web API takes weights names only; a path (the .pt case) is an unknown name.
    choice = case.path.with_suffix("").name if case.path.suffix == ".safetensors" else str(case.path)
    error = case.error if case.path.suffix == ".safetensors" else "unknown weights"
    with pytest.raises(AppError, match=error):
        _web_upscale(client, inputs / "rgba.png", choice)
    assert not marker.exists()
    _still_serving(app_server)
    sr_path, _, _ = _web_upscale(client, inputs / "rgba.png", app_server.weights_name)  # real work still done
    assert Image.open(sr_path).size == (40 * app_server.scale, 32 * app_server.scale)
