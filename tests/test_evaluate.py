"""The evaluation protocol end to end: Set5 bicubic baselines, result records, bad inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import forged_png
from srweb.config import get_settings
from srweb.data.folders import SkippedImage
from srweb.evaluation.evaluate import EvalResult, bicubic_sr, evaluate


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize(("scale", "published"), [(2, 33.66), (3, 30.39), (4, 28.42)])
def test_set5_bicubic_through_evaluate(scale: int, published: float) -> None:
    result = evaluate(bicubic_sr(scale), "Set5", scale)
    assert result.psnr == pytest.approx(published, abs=0.03)
    assert result.dataset == "Set5" and len(result.images) == 5
    assert result.protocol == {"channel": "y", "crop_border": scale, "degradation": "matlab-bicubic", "dataset": "Set5"}
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["images"][0]["image"] == "baby.png" and 0.5 < record["ssim"] < 1


def test_evaluate_user_folder_grayscale(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    yy, xx = np.mgrid[0:30, 0:41]
    Image.fromarray((128 + 100 * np.sin(xx / 4) * np.cos(yy / 5)).astype(np.uint8)).save(folder / "g.png")
    seen = []

    def sr_fn(img: Image.Image) -> Image.Image:
        seen.append((img.mode, img.size))
        return bicubic_sr(2)(img)

    result = evaluate(sr_fn, folder, 2, name="mine")
    assert seen == [("RGB", (20, 15))]  # HR mod-cropped to 40x30, LR is RGB
    assert result.dataset == "mine" and math.isfinite(result.psnr)


def test_evaluate_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        evaluate(bicubic_sr(2), tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image"):
        evaluate(bicubic_sr(2), tmp_path / "empty", 2)
    (tmp_path / "one").mkdir()
    Image.new("RGB", (32, 32), "red").save(tmp_path / "one" / "a.png")
    with pytest.raises(ValueError, match="expected 32x32"):
        evaluate(lambda img: img, tmp_path / "one", 2)
    Image.new("RGB", (5, 5)).save(tmp_path / "one" / "b.png")
    with pytest.warns(SkippedImage, match=r"b\.png: 5x5, too small to evaluate at x4; skipped"):
        result = evaluate(bicubic_sr(4), tmp_path / "one", 4)
    assert result.dataset == "one (1 of 2 images scored)" and result.skipped[0]["image"] == "b.png"
    (tmp_path / "one" / "a.png").unlink()
    with (
        pytest.raises(ValueError, match=r"no image could be evaluated at x4 .*b\.png: 5x5"),
        pytest.warns(SkippedImage),
    ):
        evaluate(bicubic_sr(4), tmp_path / "one", 4)


def _bad_folder(folder: Path, good: int = 2) -> Path:
    """``good`` usable images, then every kind of unusable file a benchmark folder may hold."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(folder / f"good{i}.png")
    png = (folder / "good0.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("I am text with a .png name\n")
    Image.new("RGB", (1, 1), "red").save(folder / "tiny.png")
    forged_png(folder / "bomb.png", 20000, 20000)
    (folder / "notes.txt").write_text("not an image, not counted")
    return folder


SKIP_REASONS = {
    "bomb.png": "too large, its header declares a decompression bomb: 400,000,000 pixels exceeds the limit",
    "empty.png": "empty file",
    "text.png": "not a readable image file",
    "tiny.png": "1x1, too small to evaluate at x2",
    "truncated.png": "corrupt or truncated image",
}


def test_evaluate_skips_every_unusable_file_and_says_how_many_were_scored(tmp_path: Path) -> None:
    folder = _bad_folder(tmp_path / "Set5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate(bicubic_sr(2), folder, 2)
    skips = [str(w.message) for w in caught if issubclass(w.category, SkippedImage)]
    assert len(skips) == 6, skips  # the five images and notes.txt, one line each
    for name, reason in SKIP_REASONS.items():
        assert any(line.startswith(f"{folder / name}: {reason}") and line.endswith("; skipped") for line in skips), name
    assert [row["image"] for row in result.images] == ["good0.png", "good1.png"]
    assert [(row["image"], row["reason"][: len(SKIP_REASONS[row["image"]])]) for row in result.skipped] == sorted(
        SKIP_REASONS.items()
    )
    # A score over part of Set5 is never filed as Set5's: the name says how much was scored.
    assert not result.complete and result.coverage == "2 of 7 images scored"
    assert result.dataset == result.protocol["dataset"] == "Set5 (2 of 7 images scored)"
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert {row["image"] for row in record["skipped"]} == set(SKIP_REASONS)
    for name in ("good0.png", "good1.png", "truncated.png", "tiny.png"):
        (folder / name).unlink()
    with (
        pytest.raises(ValueError, match=r"no usable image file \(all 3 skipped: bomb\.png: too large"),
        pytest.warns(SkippedImage),
    ):
        evaluate(bicubic_sr(2), folder, 2)


def test_skip_lines_are_one_line_without_source(tmp_path: Path) -> None:
    """What a user sees on stderr from a process whose entry point shows skips as lines (``srweb``
    commands and training workers): ``srweb: warning: <file>: <reason>; skipped``, nothing else, and
    once (a training run validates on the same folder many times)."""
    folder = _bad_folder(tmp_path / "bench", good=1)
    code = (
        "from srweb.data.folders import show_warnings_as_lines; show_warnings_as_lines(); show_warnings_as_lines()\n"
        "from srweb.evaluation.evaluate import evaluate, bicubic_sr\n"
        f"for _ in range(3): print(evaluate(bicubic_sr(2), {str(folder)!r}, 2).dataset)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["bench (1 of 6 images scored)"] * 3
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 6 and all(line.startswith(f"srweb: warning: {folder}/") for line in lines), lines


def test_cli_eval_reports_skips_and_coverage(tmp_path: Path) -> None:
    folder = _bad_folder(tmp_path / "bench")
    env = {**os.environ, "SRWEB_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "srweb.cli",
            "eval",
            "--weights",
            "bicubic",
            "--scale",
            "2",
            "--dataset",
            str(folder),
            "--no-store",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "bicubic x2 on bench (2 of 7 images scored): PSNR" in done.stdout
    stderr = done.stderr.replace("\r", "\n")
    for name in SKIP_REASONS:
        assert f"srweb: warning: {folder / name}: " in stderr, name
    assert "UserWarning" not in stderr and "Traceback" not in stderr and ".py:" not in stderr


def test_result_to_dict_handles_perfect_scores() -> None:
    result = EvalResult("d", 2, {"crop_border": 2}, [{"image": "a", "psnr": math.inf, "ssim": 1.0}], math.inf, 1.0)
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["psnr"] is None
