"""The evaluation protocol end to end: Set5 bicubic baselines, result records, bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srweb.config import get_settings
from srweb.evaluate import EvalResult, bicubic_sr, evaluate

SET5 = get_settings().data_root / "Set5"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SRWEB_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.skipif(not SET5.is_dir(), reason="Set5 not available")
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
    with pytest.raises(ValueError, match="b.png"):
        evaluate(bicubic_sr(4), tmp_path / "one", 4)


def test_result_to_dict_handles_perfect_scores() -> None:
    result = EvalResult("d", 2, {"crop_border": 2}, [{"image": "a", "psnr": math.inf, "ssim": 1.0}], math.inf, 1.0)
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["psnr"] is None
