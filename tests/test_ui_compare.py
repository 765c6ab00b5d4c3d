"""Compare tab handler in-process: several methods on one HR image under the evaluation protocol."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from srweb.data.folders import make_lr, mod_crop
from srweb.evaluation.metrics import psnr, ssim
from srweb.imaging.resize import imresize_np
from srweb.ui.compare import method_choices, on_scale_change, run_compare
from srweb.weights.files import list_weights


def _no_progress(*_, **__) -> None:
    pass


def _hr(path, width: int = 101, height: int = 83):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 90 * np.cos(y / 6.0), (x * y) % 255], axis=-1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def test_the_table_follows_the_protocol_and_the_figure_holds_every_crop(tmp_path):
    path = _hr(tmp_path / "hr.png")
    table, figure, report = run_compare(path, 3, ["nearest-x3", "bicubic-x3"], None, None, 40, 2, progress=_no_progress)
    hr = mod_crop(np.asarray(Image.open(path)), 3)  # 99x81
    bicubic = imresize_np(make_lr(hr, 3), 3)
    assert list(table["method"]) == ["bicubic", "nearest"]  # best PSNR first
    assert table["PSNR (Y)"][0] == round(psnr(bicubic, hr, crop_border=3, y_channel=True), 2)
    assert table["SSIM (Y)"][0] == round(ssim(bicubic, hr, crop_border=3, y_channel=True), 4)
    assert "99x81 HR (mod-cropped to x3) → 33x27 LR" in report and "Crop: 40x40 at (29, 20)" in report
    with Image.open(figure) as img:  # nearest, bicubic, HR at zoom 2 (columns widen for labels), label row
        assert img.height == 80 + 22 and 3 * (80 + 4) - 4 <= img.width < 3 * (200 + 4)
        # the HR crop, enlarged with square pixels, starts the last column
        pixels = np.asarray(img)[22:]
        assert any(
            np.array_equal(pixels[:, left : left + 80][::2, ::2], hr[20:60, 29:69])
            for left in range(img.width // 2, img.width - 79)
        )


def test_self_ensembles_join_each_model(tmp_path):
    from srweb.weights.files import list_weights

    x2 = min((c for c in list_weights() if c.scale == 2), key=lambda c: c.num_params, default=None)
    if x2 is None:
        pytest.skip("no x2 weights shipped")
    table, figure, report = run_compare(
        _hr(tmp_path / "hr.png"),
        2,
        [x2.name, "bicubic-x2"],
        None,
        None,
        32,
        1,
        self_ensemble=True,
        progress=_no_progress,
    )
    assert sorted(table["method"]) == sorted([x2.name, f"{x2.name}+", "bicubic"])  # no bicubic+
    psnr = dict(zip(table["method"], table["PSNR (Y)"]))
    assert psnr[f"{x2.name}+"] != psnr[x2.name]


def test_the_method_list_follows_the_scale():
    every = []
    for scale in (2, 3, 4):
        values = [v for _, v in method_choices(scale)]
        shipped = {c.name for c in list_weights() if c.scale == scale}
        assert set(values) == shipped | {f"bicubic-x{scale}"}
        assert on_scale_change(scale).value == values  # all ticked
        every += values
    assert sorted(v for _, v in method_choices(None)) == sorted(every)  # what API clients may pick from


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_path": None}, "Upload an HR image first"),
        ({"methods": []}, "Pick at least one method"),
        ({"methods": ["bicubic-x3"] * 9}, "9 methods: compare at most 8"),
        ({"crop_size": 300}, "crop size must be 8 to 256"),
        ({"crop_x": 90}, "crop 90,20\\+40 is outside the 99x81 image"),
        ({"methods": ["bicubic-x2"]}, "bicubic-x2 is not a x3 method"),
        ({"methods": ["nosuch"]}, "unknown weights 'nosuch'"),
        ({"methods": ["/etc/passwd"]}, "unknown weights '/etc/passwd'"),  # never a server path
    ],
)
def test_bad_requests_get_a_clear_message(tmp_path, kwargs, message):
    args = {
        "image_path": _hr(tmp_path / "hr.png"),
        "scale": 3,
        "methods": ["bicubic-x3"],
        "crop_x": None,
        "crop_y": None,
        "crop_size": 40,
        "zoom": 2,
        **kwargs,
    }
    with pytest.raises(gr.Error, match=message):
        run_compare(**args, progress=_no_progress)


def test_bad_images_get_a_clear_message(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    with pytest.raises(gr.Error, match="broken.png: not a readable image") as caught:
        run_compare(str(tmp_path / "broken.png"), 2, ["bicubic-x2"], None, None, 32, 2, progress=_no_progress)
    assert str(tmp_path) not in str(caught.value)  # named as uploaded, not by its server path
    with pytest.raises(gr.Error, match="20x20 is too small for a 32-pixel crop at x2"):
        run_compare(_hr(tmp_path / "small.png", 20, 20), 2, ["bicubic-x2"], None, None, 32, 2, progress=_no_progress)
    # a wrong-scale weights entry
    x2 = next((c.name for c in list_weights() if c.scale == 2), None)
    if x2:
        with pytest.raises(gr.Error, match=f"{x2} is a x2 model, not x4"):
            run_compare(_hr(tmp_path / "hr.png"), 4, [x2], None, None, 32, 2, progress=_no_progress)
