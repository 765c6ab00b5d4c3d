"""The `srweb` command as a user runs it: exit codes, one-line errors, outputs on disk."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SET5


def srweb(*args, env=None, check_ok=True):
    cmd = [sys.executable, "-m", "srweb.cli", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    assert "Traceback" not in out.stderr, out.stderr
    if check_ok:
        assert out.returncode == 0, out.stderr
    return out


def bomb_png(path: Path, width=30000, height=30000):
    """A tiny PNG whose header declares a huge image (decompression bomb)."""
    raw = b"".join(b"\x00" + b"\x00" * 3 for _ in range(1))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def state(tmp_path):
    return {"SRWEB_STATE_DIR": str(tmp_path / "state")}


def test_models_json():
    data = json.loads(srweb("models", "--json").stdout)
    names = {a["name"] for a in data["architectures"]}
    assert {
        "srcnn",
        "fsrcnn",
        "espcn",
        "vdsr",
        "drcn",
        "red30",
        "drrn",
        "edsr-baseline",
        "edsr",
        "srresnet",
        "bicubic",
        "nearest",
    } <= names
    edsr = next(a for a in data["architectures"] if a["name"] == "edsr-baseline")
    assert abs(edsr["params"]["2"] - 1.37e6) / 1.37e6 < 0.02
    for w in data["weights"]:
        assert {"name", "arch", "scale", "num_params", "sha256", "metrics"} <= set(w)
    assert "srcnn" in srweb("models").stdout


def test_models_says_which_weights_are_shipped_and_which_exported(tmp_path):
    user = tmp_path / "user-weights"
    user.mkdir()
    shipped = Path(__file__).resolve().parents[1] / "weights"
    card = json.loads((shipped / "srcnn-x2.general100.json").read_text())
    card["name"] = "srcnn-x2.mine"
    (user / "srcnn-x2.mine.json").write_text(json.dumps(card))
    (user / "srcnn-x2.mine.safetensors").write_bytes((shipped / "srcnn-x2.general100.safetensors").read_bytes())
    env = {"SRWEB_USER_WEIGHTS_DIR": str(user)}

    sources = {w["name"]: w["source"] for w in json.loads(srweb("models", "--json", env=env).stdout)["weights"]}
    assert sources["srcnn-x2.mine"] == "exported"
    assert sources["srcnn-x2.general100"] == "shipped"
    line = next(row for row in srweb("models", env=env).stdout.splitlines() if row.startswith("srcnn-x2.mine"))
    assert line.endswith("exported")
    # The README table lists what ships, never a user's exports.
    assert "srcnn-x2.mine" not in srweb("models", "--markdown", env=env).stdout


def test_upscale_batch_keeps_going_past_bad_files(tmp_path, state):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(src / "good.png")
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).convert("RGBA").save(src / "alpha.png")
    (src / "text.png").write_text("not an image")
    good = (src / "good.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "empty.png").write_bytes(b"")
    bomb_png(src / "bomb.png")
    out = srweb(
        "upscale", src, "--weights", "bicubic", "--scale", "2", "--out", tmp_path / "out", env=state, check_ok=False
    )
    assert out.returncode == 1
    assert Image.open(tmp_path / "out" / "good.png").size == (48, 40)
    assert Image.open(tmp_path / "out" / "alpha.png").mode == "RGBA"
    errors = [line.strip() for line in out.stderr.replace("\r", "\n").splitlines() if "srweb: error" in line]
    for name in ("text.png", "truncated.png", "empty.png", "bomb.png"):
        assert any(name in line for line in errors), (name, out.stderr)
    assert not (tmp_path / "out" / "text.png").exists()


def test_upscale_never_overwrites_an_input_or_another_output_of_the_batch(tmp_path, state):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "a.png")
    Image.new("RGB", (5, 5), "green").save(tmp_path / "a.jpg")
    Image.new("RGB", (6, 6), "blue").save(tmp_path / "sub" / "a.png")
    out = srweb(
        "upscale",
        tmp_path / "a.png",
        tmp_path / "a.jpg",
        tmp_path / "sub" / "a.png",
        "--weights",
        "bicubic",
        "--scale",
        "2",
        "--out",
        tmp_path / "out",
        env=state,
    )
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert sizes == {"a.png": (8, 8), "a-2.png": (10, 10), "a-3.png": (12, 12)}, out.stdout
    assert f"sub/a.png -> {tmp_path / 'out' / 'a-3.png'}" in out.stdout  # each line says where it went
    # Written into the input's own folder, the output would replace it: refused, the input kept.
    before = (tmp_path / "a.png").read_bytes()
    out = srweb(
        "upscale",
        tmp_path / "a.png",
        "--weights",
        "bicubic",
        "--scale",
        "2",
        "--out",
        tmp_path,
        env=state,
        check_ok=False,
    )
    assert out.returncode == 1 and "would overwrite the input" in out.stderr
    assert (tmp_path / "a.png").read_bytes() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "no-such-model-x2.foo"], "not found"),
        (["--weights", "bicubic", "--scale", "2", "--tile", "-1"], "tile size must be >= 0 pixels, got -1"),
        (["--weights", "bicubic", "--scale", "5"], "scales"),
        (["--weights", "bicubic"], "needs a scale"),
        (
            ["--weights", "bicubic", "--scale", "2", "--outscale", "0"],
            "output scale must be above 0 and at most 16, got 0",
        ),
    ],
)
def test_upscale_bad_arguments_one_line(tmp_path, state, args, message):
    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(img)
    out = srweb("upscale", img, *args, "--out", tmp_path / "o", env=state, check_ok=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_upscale_to_another_output_scale(tmp_path, state):
    Image.new("RGBA", (20, 10), (200, 100, 50, 128)).save(tmp_path / "a.png")
    srweb(
        "upscale",
        tmp_path / "a.png",
        "--weights",
        "bicubic",
        "--scale",
        "4",
        "--outscale",
        "2.5",
        "--out",
        tmp_path / "o",
        env=state,
    )
    with Image.open(tmp_path / "o" / "a.png") as out:
        assert (out.size, out.mode) == ((50, 25), "RGBA")


def test_upscale_missing_file(tmp_path, state):
    out = srweb(
        "upscale",
        tmp_path / "missing.png",
        "--weights",
        "bicubic",
        "--scale",
        "2",
        "--out",
        tmp_path,
        env=state,
        check_ok=False,
    )
    assert out.returncode != 0 and "not found" in out.stderr


def test_eval_bicubic_set5_json(state):
    data = json.loads(
        srweb("eval", "--weights", "bicubic", "--scale", "3", "--dataset", SET5, "--json", env=state).stdout
    )
    assert abs(data["psnr"] - 30.39) < 0.03
    assert data["protocol"]["crop_border"] == 3 and data["protocol"]["channel"] == "y"
    assert len(data["images"]) == 5


def test_eval_self_ensemble_is_recorded_as_its_own_entry(state):
    from sqlalchemy import create_engine, text

    name = "fsrcnn-x3.general100"
    if not (Path(__file__).resolve().parents[1] / "weights" / f"{name}.json").exists():
        pytest.skip(f"{name} is not shipped")
    runs = {
        flag: json.loads(
            srweb(
                "eval",
                "--weights",
                name,
                "--scale",
                "3",
                "--dataset",
                SET5,
                "--json",
                *([flag] if flag else []),
                env=state,
            ).stdout
        )
        for flag in ("", "--self-ensemble")
    }
    plain, ensemble = runs[""], runs["--self-ensemble"]
    assert ensemble["weights"] == name + "+" and ensemble["protocol"]["self_ensemble"] is True
    assert ensemble["psnr"] > plain["psnr"] + 0.05  # 32.961 -> 33.106 dB
    by_name = json.loads(
        srweb(
            "eval", "--weights", name + "+", "--scale", "3", "--dataset", SET5, "--json", "--no-store", env=state
        ).stdout
    )
    assert by_name["psnr"] == ensemble["psnr"] and by_name["protocol"]["self_ensemble"] is True
    engine = create_engine(f"sqlite:///{state['SRWEB_STATE_DIR']}/db/srweb.sqlite")
    with engine.connect() as conn:
        stored = dict(conn.execute(text("select weights_name, psnr from evaluations")).all())
    engine.dispose()
    assert stored == {name: pytest.approx(plain["psnr"]), name + "+": pytest.approx(ensemble["psnr"])}
    bicubic = srweb(
        "eval", "--weights", "bicubic", "--scale", "3", "--dataset", SET5, "--self-ensemble", env=state, check_ok=False
    )
    assert bicubic.returncode == 2 and "needs a model" in bicubic.stderr


def test_eval_bad_dataset(state, tmp_path):
    out = srweb(
        "eval", "--weights", "bicubic", "--scale", "2", "--dataset", tmp_path / "nope", env=state, check_ok=False
    )
    assert out.returncode == 2 and "not found" in out.stderr


def test_prepare_then_eval(tmp_path, state):
    src = tmp_path / "hr"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(src / f"img{i}.png")
    srweb("prepare", src, tmp_path / "div2k", "--scales", "2", "4", env=state)
    assert (tmp_path / "div2k" / "DIV2K_train_HR" / "0001.png").exists()
    assert any((tmp_path / "div2k" / "DIV2K_train_LR_bicubic" / "X4").iterdir())


def test_compare_writes_a_side_by_side_figure(tmp_path, capsys):
    from srweb.cli import main
    from srweb.data.samples import benchmark_path

    image = sorted(benchmark_path("sample").glob("*.png"))[0]
    out = tmp_path / "fig.png"
    assert (
        main(
            [
                "compare",
                "--image",
                str(image),
                "--scale",
                "2",
                "--weights",
                "bicubic",
                "nearest",
                "--crop",
                "0",
                "0",
                "24",
                "--zoom",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with Image.open(out) as fig:
        assert fig.height == 72 + 22 and fig.width >= 3 * 72 + 2 * 4  # bicubic, nearest, HR (columns fit labels)
    assert (
        main(
            [
                "compare",
                "--image",
                str(image),
                "--scale",
                "2",
                "--weights",
                "bicubic",
                "--crop",
                "0",
                "0",
                "100000",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "outside the" in capsys.readouterr().err
    for zoom in ("0", "1000"):  # checked before any model runs: a huge zoom would exhaust memory
        assert (
            main(
                [
                    "compare",
                    "--image",
                    str(image),
                    "--scale",
                    "2",
                    "--weights",
                    "bicubic",
                    "--crop",
                    "0",
                    "0",
                    "24",
                    "--zoom",
                    zoom,
                    "--out",
                    str(out),
                ]
            )
            == 2
        )
        assert "zoom must be 1 to 8" in capsys.readouterr().err
    for bad_out in (tmp_path, tmp_path / "fig.jpg"):
        assert (
            main(
                [
                    "compare",
                    "--image",
                    str(image),
                    "--scale",
                    "2",
                    "--weights",
                    "bicubic",
                    "--crop",
                    "0",
                    "0",
                    "24",
                    "--out",
                    str(bad_out),
                ]
            )
            == 2
        )
        assert "give the path of a .png file" in capsys.readouterr().err


def test_a_device_this_machine_lacks_is_one_clear_line(tmp_path, capsys):
    from srweb.cli import main
    from srweb.data.samples import benchmark_path
    from srweb.train.launch import ConfigError, check_device

    image = sorted(benchmark_path("sample").glob("*.png"))[0]
    for device in ("banana", "cuda:7", "mps:1"):
        assert (
            main(
                [
                    "upscale",
                    str(image),
                    "--weights",
                    "bicubic",
                    "--scale",
                    "2",
                    "--out",
                    str(tmp_path),
                    "--device",
                    device,
                ]
            )
            == 2
        )
        assert f"device '{device}' is not available on this machine" in capsys.readouterr().err
        with pytest.raises(ConfigError, match="try auto or cpu"):
            check_device(device)  # the Train form's check says the same
    assert (
        main(["upscale", str(image), "--weights", "bicubic", "--scale", "2", "--out", str(tmp_path), "--device", "cpu"])
        == 0
    )
