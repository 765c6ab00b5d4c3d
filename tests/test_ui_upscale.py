"""Upscale tab handler in-process: the HR reference report and the download file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from srweb.evaluation.metrics import psnr, ssim
from srweb.imaging.resize import imresize_np
from srweb.ui.upscale import run_upscale


def _photo(size: int = 60) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([128 + 100 * np.sin(x / 3.0), 128 + 90 * np.cos(y / 4.0), (x * y) % 255], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def test_reference_figures_follow_the_protocol_border_equals_scale(tmp_path):
    hr = _photo()
    lr = Image.fromarray(imresize_np(np.asarray(hr), scale=1 / 3))
    hr.save(tmp_path / "hr.png"), lr.save(tmp_path / "lr.png")
    sr_file, (bicubic_view, sr_view), report = run_upscale(
        str(tmp_path / "lr.png"), "bicubic-x3", str(tmp_path / "hr.png")
    )
    with Image.open(sr_file) as sr:
        expected_psnr = psnr(sr.convert("RGB"), hr, crop_border=3, y_channel=True)
        expected_ssim = ssim(sr.convert("RGB"), hr, crop_border=3, y_channel=True)
        assert psnr(sr.convert("RGB"), hr, crop_border=1, y_channel=True) != pytest.approx(expected_psnr, abs=0.005)
    row = re.search(r"\| SR \| ([\d.]+) dB \| ([\d.]+) \|", report)
    assert row, report
    assert float(row[1]) == pytest.approx(expected_psnr, abs=0.005)
    assert float(row[2]) == pytest.approx(expected_ssim, abs=0.00005)


@pytest.mark.parametrize("mode", ["LA", "I;16"])
def test_the_baselines_download_keeps_the_input_mode(tmp_path, mode):
    source = (
        _photo(16).convert("LA")
        if mode == "LA"
        else Image.fromarray((np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 200))
    )
    source.save(tmp_path / "in.png")
    sr_file, (bicubic_view, sr_view), _ = run_upscale(str(tmp_path / "in.png"), "bicubic-x2")
    with Image.open(sr_file) as sr:
        assert sr.size == (32, 32) and sr.mode == ("LA" if mode == "LA" else "I;16")
    assert Path(bicubic_view) != Path(sr_file)  # the 8-bit slider view is a file of its own


def test_an_output_scale_sizes_both_sides_of_the_slider(tmp_path):
    _photo(20).save(tmp_path / "lr.png")
    Image.fromarray(imresize_np(np.asarray(_photo(20)), scale=2.5)).save(tmp_path / "hr.png")
    sr_file, (left, right), report = run_upscale(
        str(tmp_path / "lr.png"), "bicubic-x2", str(tmp_path / "hr.png"), output_scale=2.5
    )
    assert "20x20 RGB → 50x50" in report and "x2 resized to x2.5" in report and "| SR |" in report
    for path in (sr_file, left, right):
        with Image.open(path) as img:
            assert img.size == (50, 50)
    with pytest.raises(gr.Error, match="output scale must be above 0 and at most 16, got 40"):
        run_upscale(str(tmp_path / "lr.png"), "bicubic-x2", output_scale=40)


def test_a_reference_of_the_wrong_size_is_a_message(tmp_path):
    _photo(20).save(tmp_path / "lr.png"), _photo(50).save(tmp_path / "hr.png"), _photo(30).save(tmp_path / "small.png")
    with pytest.raises(gr.Error, match="hr.png: 50x50 = 2,500 pixels exceeds .*output, 40x40"):
        run_upscale(str(tmp_path / "lr.png"), "bicubic-x2", str(tmp_path / "hr.png"))
    with pytest.raises(gr.Error, match="reference is 30x30, the output is 40x40"):
        run_upscale(str(tmp_path / "lr.png"), "bicubic-x2", str(tmp_path / "small.png"))


def test_self_ensemble_is_a_checkbox_away(tmp_path):
    from srweb.weights.files import list_weights

    cards = list_weights()
    if not cards:
        pytest.skip("no shipped weights")
    card = min(cards, key=lambda c: c.num_params)
    _photo(24).save(tmp_path / "lr.png")
    plain_file, _, plain_report = run_upscale(str(tmp_path / "lr.png"), card.name)
    ensemble_file, _, report = run_upscale(str(tmp_path / "lr.png"), card.name, None, True)
    assert "x8 self-ensemble" in report and "self-ensemble" not in plain_report
    assert "tiles" not in report  # 8 passes over one tile
    assert Path(ensemble_file).name == f"{card.name}+.png" and Path(plain_file).name == f"{card.name}.png"
    with Image.open(plain_file) as plain, Image.open(ensemble_file) as ensemble:
        assert plain.size == ensemble.size == (24 * card.scale, 24 * card.scale)
        assert np.asarray(plain).tolist() != np.asarray(ensemble).tolist()


def test_the_slider_can_compare_two_weights_entries(tmp_path):
    from srweb.weights.files import list_weights

    by_scale = {}
    for card in sorted(list_weights(), key=lambda c: c.num_params):
        by_scale.setdefault(card.scale, []).append(card.name)
    pair = next((names[:2] for names in by_scale.values() if len(names) >= 2), None)
    if pair is None:
        pytest.skip("needs two shipped entries of one scale")
    model, other = pair
    scale = next(s for s, names in by_scale.items() if model in names)
    hr = _photo(12 * scale)
    (
        hr.save(tmp_path / "hr.png"),
        Image.fromarray(imresize_np(np.asarray(hr), scale=1 / scale)).save(tmp_path / "lr.png"),
    )
    sr_file, (left, right), report = run_upscale(
        str(tmp_path / "lr.png"), model, str(tmp_path / "hr.png"), False, other
    )
    assert f"Slider: {other} ◀ ▶ {model}" in report
    assert re.search(rf"\| {re.escape(other)} \| [\d.]+ dB \|", report) and "| bicubic |" not in report
    assert Path(left).name.startswith(other) and Path(right) == Path(sr_file)
    with Image.open(left) as shown:
        assert shown.size == (12 * scale, 12 * scale)
    # The same entry against its own self-ensemble
    _, _, report = run_upscale(str(tmp_path / "lr.png"), model, None, True, model)
    assert f"Slider: {model} ◀ ▶ {model}+" in report

    mismatched = next((names[0] for s, names in by_scale.items() if s != scale), None)
    if mismatched:
        with pytest.raises(gr.Error, match="compare entries of one scale"):
            run_upscale(str(tmp_path / "lr.png"), model, None, False, mismatched)
    with pytest.raises(gr.Error, match="unknown weights"):
        run_upscale(str(tmp_path / "lr.png"), model, None, False, "/etc/passwd")


def test_compare_with_offers_the_picked_models_scale_only():
    from srweb.ui.upscale import BICUBIC, compare_choices, refresh_compare
    from srweb.weights.files import list_weights

    cards = list_weights()
    if not cards:
        pytest.skip("needs shipped weights")
    scale_of = {c.name: c.scale for c in cards}
    model = cards[0].name
    values = [v for _, v in compare_choices(model)]
    assert values[0] == BICUBIC and model in values[1:]  # itself: against its own self-ensemble
    assert {scale_of[v] for v in values[1:]} == {scale_of[model]}
    assert {v for _, v in compare_choices(f"bicubic-x{scale_of[model]}")} == set(values)
    assert [v for _, v in compare_choices(None)][1:] == [c.name for c in cards]
    assert [v for _, v in compare_choices("no-such-weights")][1:] == [c.name for c in cards]
    # A pick that still fits is kept; one of another scale falls back to bicubic.
    assert refresh_compare(model, model).value == model
    other = next((c.name for c in cards if c.scale != scale_of[model]), None)
    if other:
        assert refresh_compare(model, other).value == BICUBIC


def test_a_sixteen_bit_colour_upload_downloads_as_sixteen_bit(tmp_path):
    import cv2

    from PIL import ImageCms

    from srweb.imaging.io import encode_png

    deep = np.asarray(_photo(20)).astype(np.uint16) * 257 + 17  # low bits set
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    (tmp_path / "deep.png").write_bytes(encode_png(deep, profile))
    hr = _photo(40)
    hr.save(tmp_path / "hr.png")
    sr_file, (left, right), report = run_upscale(str(tmp_path / "deep.png"), "bicubic-x2", str(tmp_path / "hr.png"))
    assert "20x20 RGB 16-bit → 40x40" in report and "| SR |" in report
    sr = cv2.imread(sr_file, cv2.IMREAD_UNCHANGED)
    assert sr.dtype == np.uint16 and sr.shape == (40, 40, 3) and (sr % 257).any()
    assert Image.open(sr_file).info["icc_profile"] == profile  # the colours mean what they meant
    with Image.open(left) as shown:  # the slider's side shows in any browser
        assert shown.mode == "RGB" and shown.size == (40, 40)


# ---- batch: many uploads, one ZIP, a line per file


def _no_progress(*_, **__) -> None:
    pass


def test_a_batch_upscales_every_readable_file_into_one_zip(tmp_path):
    import zipfile

    import cv2

    from srweb.ui.batch import run_batch

    for name, size in (("a.png", 20), ("b.jpg", 12)):
        _photo(size).save(tmp_path / name)
    (tmp_path / "again").mkdir()
    _photo(8).save(tmp_path / "again" / "a.png")  # the same stem from another upload folder
    cv2.imwrite(str(tmp_path / "deep.png"), np.linspace(0, 65535, 10 * 6 * 3).reshape(6, 10, 3).astype(np.uint16))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    files = [str(tmp_path / n) for n in ("a.png", "broken.png", "b.jpg", "again/a.png", "deep.png")]

    archive, report = run_batch(files, "bicubic-x2", progress=_no_progress)
    assert report.startswith("**4 of 5 images upscaled** with bicubic (x2")
    assert "| a.png | a.png, 40x40," in report and "| b.jpg | b.png, 24x24," in report
    assert "| a.png | a-2.png, 16x16," in report and "| deep.png | deep.png, 20x12," in report
    assert "| broken.png | failed: broken.png: " in report and str(tmp_path) not in report  # no server paths
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["a-2.png", "a.png", "b.png", "deep.png"]
        deep = cv2.imdecode(np.frombuffer(zf.read("deep.png"), np.uint8), cv2.IMREAD_UNCHANGED)
        with Image.open(io.BytesIO(zf.read("a.png"))) as first:
            assert first.size == (40, 40)
    assert deep.dtype == np.uint16 and deep.shape == (12, 20, 3)  # 16-bit stays 16-bit in a batch too
    assert Path(archive).name == "bicubic-x2.zip"

    archive, report = run_batch(files[:3], "bicubic-x2", output_scale=3, progress=_no_progress)
    assert "(x3," in report and "| a.png | a.png, 60x60," in report


def test_a_batch_of_only_bad_files_reports_each_and_offers_no_zip(tmp_path):
    from srweb.ui.batch import run_batch

    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    archive, report = run_batch(
        [str(tmp_path / "notes.txt"), str(tmp_path / "empty.png")], "bicubic-x3", progress=_no_progress
    )
    assert archive is None and report.startswith("**0 of 2 images upscaled**")
    assert report.count("failed: ") == 2


def test_a_batch_refuses_no_files_too_many_files_and_unknown_weights(tmp_path, monkeypatch):
    from srweb.config import get_settings
    from srweb.ui.batch import run_batch

    with pytest.raises(gr.Error, match="Upload some images first"):
        run_batch([], "bicubic-x2", progress=_no_progress)
    _photo(8).save(tmp_path / "a.png")
    with pytest.raises(gr.Error, match="unknown weights 'nosuch'"):
        run_batch([str(tmp_path / "a.png")], "nosuch", progress=_no_progress)
    monkeypatch.setenv("SRWEB_MAX_BATCH_FILES", "2")
    get_settings.cache_clear()
    try:
        with pytest.raises(gr.Error, match="3 images: a batch takes at most 2"):
            run_batch([str(tmp_path / "a.png")] * 3, "bicubic-x2", progress=_no_progress)
    finally:
        monkeypatch.delenv("SRWEB_MAX_BATCH_FILES")
        get_settings.cache_clear()


# ---- "About this model": the card, readable


def test_about_shows_each_shipped_card_with_its_stages_and_the_command_to_retrain_it():
    from srweb.ui.upscale import about_weights
    from srweb.weights.files import list_weights

    for card in list_weights():
        text = about_weights(card.name)
        assert text.startswith(f"**{card.name}** · {card.arch} x{card.scale} · {card.num_params:,} parameters")
        set5 = card.metric("Set5")
        assert f"{set5['psnr']:.2f} dB / SSIM {set5['ssim']:.4f}" in text
        chain = card.training_chain()
        assert f"Trained in {len(chain)} stage" in text and f"\n{len(chain)}. " in text
        assert text.endswith(f"`srweb train --from-card weights/{card.name}.json`")
    assert about_weights("bicubic-x3").startswith("Bicubic interpolation")


def test_about_an_exported_card_offers_no_shipped_path(tmp_path, monkeypatch):
    from srweb.config import get_settings
    from srweb.models import create_model
    from srweb.ui.upscale import about_weights
    from srweb.weights.files import save_weights

    monkeypatch.setenv("SRWEB_USER_WEIGHTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        save_weights(create_model("espcn", 2), "espcn-x2.mine", weights_dir=tmp_path, notes="made by a test")
        text = about_weights("espcn-x2.mine")
        assert text.startswith("**espcn-x2.mine** · espcn x2") and "--from-card" not in text
        assert text.endswith("Notes: made by a test")
    finally:
        monkeypatch.delenv("SRWEB_USER_WEIGHTS_DIR")
        get_settings.cache_clear()
