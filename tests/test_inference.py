"""Upscaler: every image mode, Y and RGB, pre and post models, tiling equals untiled."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

import srweb
from conftest import set5_present
from srweb.data.samples import benchmark_path
from srweb.evaluation.evaluate import bicubic_sr
from srweb.inference.upscaler import Upscaler
from srweb.imaging.resize import imresize


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 40 * 30 * 3).reshape(30, 40, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def espcn():
    torch.manual_seed(0)
    return Upscaler(srweb.create_model("espcn", 2), precision="fp32")


MODES = ["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "F", "I"]


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_keeps_its_family(photo, espcn, mode):
    if mode == "I;16":
        img = Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257))
    elif mode == "RGBA":
        img = photo.convert("RGBA")
    else:
        img = photo.convert(mode)
    out = espcn.upscale(img)
    assert out.size == (img.width * 2, img.height * 2)
    expected = {"P": "RGB", "1": "L", "I": "I;16" if np.asarray(img).max() > 255 else "L"}.get(mode, mode)
    assert out.mode == expected or (mode == "I" and out.mode in {"L", "I;16"})
    assert np.isfinite(np.asarray(out, dtype=np.float64)).all()


def test_sixteen_bit_precision_is_kept(photo, espcn):
    img = Image.fromarray((np.asarray(photo.convert("L")).astype(np.uint16) * 257 + 3))
    out = np.asarray(espcn.upscale(img))
    assert out.dtype == np.uint16 and out.max() > 255
    assert len(np.unique(out % 257)) > 10  # values between the 8-bit steps exist


def test_alpha_is_upscaled_separately_never_black():
    img = Image.new("RGBA", (16, 16), (200, 100, 50, 255))
    img.paste((0, 0, 0, 0), (0, 0, 8, 16))  # left half fully transparent
    out = Upscaler("bicubic", 2).upscale(img)
    arr = np.asarray(out)
    assert arr.shape == (32, 32, 4)
    assert (arr[:, :12, 3] == 0).all() and (arr[:, 20:, 3] == 255).all()
    assert (np.abs(arr[:, 20:, :3].astype(int) - [200, 100, 50]) <= 1).all()


def test_transparent_colour_does_not_bleed_into_edges():
    # Opaque white beside transparent black: upscaled in premultiplied form, the edge stays white
    # over any background (straight-alpha upscaling mixes in the black: a dark halo, 203 on white).
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    img.paste((255, 255, 255, 255), (0, 0, 8, 16))
    arr = np.asarray(Upscaler("bicubic", 2).upscale(img), dtype=np.float64)
    alpha = arr[..., 3:] / 255
    assert 0 < alpha[:, 16].min() < 1  # the edge is partly transparent ...
    assert (arr[..., :3] * alpha + 255 * (1 - alpha)).min() >= 254  # ... and white, no halo


def test_colour_key_transparency_becomes_alpha():
    rgb = Image.new("RGB", (8, 8), (255, 0, 0))
    rgb.paste((0, 0, 0), (0, 0, 4, 8))
    rgb.info["transparency"] = (0, 0, 0)  # a PNG tRNS chunk: black is transparent
    grey = Image.new("L", (8, 8), 200)
    grey.paste(0, (0, 0, 4, 8))
    grey.info["transparency"] = 0
    for img, mode in ((rgb, "RGBA"), (grey, "LA")):
        out = Upscaler("nearest", 2).upscale(img)
        alpha = np.asarray(out.getchannel("A"))
        assert out.mode == mode and (alpha[:, :6] == 0).all() and (alpha[:, 10:] == 255).all(), mode


def test_colour_profile_is_kept(tmp_path):
    from PIL import ImageCms

    from srweb.inference.upscaler import upscale_file

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "tagged.png", icc_profile=profile)
    target = upscale_file(tmp_path / "tagged.png", Upscaler("bicubic", 2), tmp_path / "out")
    with Image.open(target) as out:
        assert out.info.get("icc_profile") == profile


def test_float_images_in_0_255_are_not_washed_out():
    from srweb.imaging.io import png_ready

    ramp = Image.fromarray(np.tile(np.linspace(0, 255, 16, dtype=np.float32), (16, 1)), "F")
    assert abs(np.asarray(png_ready(Upscaler("bicubic", 2).upscale(ramp))).mean() - 127.5) < 2


def test_palette_with_transparency_gets_alpha():
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    out = Upscaler("nearest", 3).upscale(img)
    assert out.mode == "RGBA" and out.size == (30, 30)


def test_exif_orientation_applied():
    img = Image.new("RGB", (20, 10), (10, 20, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    out = Upscaler("bicubic", 2).upscale(Image.open(io.BytesIO(buf.getvalue())))
    assert out.size == (20, 40)


def test_bicubic_model_matches_matlab_bicubic(photo):
    ours = np.asarray(Upscaler("bicubic", 3).upscale(photo), dtype=int)
    ref = np.asarray(bicubic_sr(3)(photo), dtype=int)
    # MATLAB rounds uint8 between the two 1-D passes; the Upscaler stays in float until the end.
    assert np.abs(ours - ref).mean() < 0.2


@pytest.mark.parametrize("name", [m for m in srweb.list_models() if m != "edsr"])
def test_tiled_equals_untiled(name):
    torch.manual_seed(0)
    model = srweb.create_model(name, 2)
    if name == "drrn":  # untrained BN statistics blow activations up; train-mode stats are sane
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(50.0)
    up = Upscaler(model, precision="fp32")
    x = torch.rand(1, model.in_channels, 40, 44)
    full = up.forward_tensor(x)
    up.tile_size = 16
    tiles = []
    tiled = up.forward_tensor(x, progress=lambda d, t: tiles.append((d, t)))
    assert tiles[-1][0] == tiles[-1][1] > 1
    assert full.shape == tiled.shape
    assert (full - tiled).abs().max() < 1e-3


@pytest.mark.skipif(not set5_present(), reason="Set5 is not beside the checkout")
@pytest.mark.parametrize("name", ["srresnet-x4.general100", "edsr-baseline-x4.general100"])
def test_tiles_of_shipped_weights_are_seamless(name):
    # Their receptive radius (42, 38 px) reaches past 32 px: the overlap must cover all of it.
    up = Upscaler(name, precision="fp32")
    assert up.tile_overlap == up.profile.receptive_radius > 32
    hr = Image.open(benchmark_path("Set5") / "baby.png").convert("RGB").crop((0, 0, 384, 384))
    lr = hr.resize((96, 96), Image.BICUBIC)
    whole = np.asarray(up.upscale(lr))
    up.tile_size = 32
    assert up.tile_grid(96, 96) == (3, 3)
    assert np.array_equal(np.asarray(up.upscale(lr)), whole)


def _dihedral_mean(up: Upscaler, x: torch.Tensor) -> torch.Tensor:
    """The self-ensemble written out: the 8 flips/rotations, each forward turned back, averaged."""
    outs = []
    for flip in (False, True):
        for turns in range(4):
            t = torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))
            y = torch.rot90(up.forward_tensor(t), -turns, dims=(-2, -1))
            outs.append(y.flip(-1) if flip else y)
    return torch.stack(outs).mean(0)


@pytest.mark.parametrize("name", ["espcn", "srcnn"])  # post- and pre-upsampling
def test_self_ensemble_averages_the_eight_flips_and_rotations(name):
    torch.manual_seed(0)
    model = srweb.create_model(name, 3)
    plain = Upscaler(model, precision="fp32")
    ensemble = Upscaler(model, precision="fp32", self_ensemble=True, tile_size=10)
    x = torch.rand(1, 1, 13, 19)  # not square: rotations change the shape
    steps = []
    out = ensemble.forward_tensor(x, progress=lambda d, t: steps.append((d, t)))
    assert out.shape == (1, 1, 39, 57)
    assert (out - _dihedral_mean(plain, x)).abs().max() < 1e-4
    assert (out - plain.forward_tensor(x)).abs().max() > 1e-3  # an untrained model is not symmetric
    assert [d for d, _ in steps] == list(range(1, len(steps) + 1)) and steps[-1][1] == len(steps) > 8
    assert ensemble.name == plain.name + "+"


def test_a_plus_after_a_weights_name_means_its_self_ensemble(tmp_path, monkeypatch):
    from srweb.config import get_settings

    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        srweb.save_weights(srweb.create_model("espcn", 2), "espcn-x2.plus", weights_dir=tmp_path)
        up = Upscaler("espcn-x2.plus+", precision="fp32")
        assert up.self_ensemble and up.name == "espcn-x2.plus+" and up.card.name == "espcn-x2.plus"
        assert not Upscaler("espcn-x2.plus").self_ensemble
    finally:
        get_settings.cache_clear()


def test_flips_of_bicubic_are_bicubic():
    """Bicubic commutes with flips and rotations, which is what lets pre-upsampling run inside the
    self-ensemble (and why a baseline's own self-ensemble is refused)."""
    up, x = Upscaler("bicubic", 3), torch.rand(1, 3, 20, 28)
    assert (up.forward_tensor(x) - _dihedral_mean(up, x)).abs().max() < 1e-5


def test_y_models_process_luma_only(photo):
    up = Upscaler(srweb.create_model("srcnn", 3), precision="fp32")
    assert up.model.input_kind == "y" and up.model.upsampling == "pre"
    out = up.upscale(photo)
    assert out.mode == "RGB" and out.size == (120, 90)


def test_scale_mismatch_and_bad_names():
    with pytest.raises(ValueError, match="x2 model, not x4"):
        Upscaler(srweb.create_model("espcn", 2), 4)
    with pytest.raises(ValueError, match="needs a scale"):
        Upscaler("bicubic")
    with pytest.raises(ValueError):
        Upscaler("no-such-weights")


def test_auto_tile_grid_bounds_activations():
    up = Upscaler(srweb.create_model("edsr-baseline", 4), precision="fp32")
    assert up.tile_overlap >= 16
    rows, cols = up.tile_grid(540, 960)
    assert rows * cols > 1
    tile_pixels = (540 // rows + 2 * up.tile_overlap + 1) * (960 // cols + 2 * up.tile_overlap + 1)
    assert tile_pixels * up.profile.elements_per_pixel * 4 <= 1.1e9
    assert up.tile_grid(64, 64) == (1, 1)
    small = Upscaler(srweb.create_model("espcn", 4), precision="fp32")
    assert small.tile_grid(540, 960) == (1, 1)  # small models run whole


def test_fast_path_close_to_fp32(photo):
    from srweb.inference.upscaler import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("no bf16 on this CPU")
    torch.manual_seed(0)
    model = srweb.create_model("espcn", 2)
    fast = np.asarray(Upscaler(model, precision="bf16").upscale(photo), dtype=float)
    exact = np.asarray(Upscaler(model, precision="fp32").upscale(photo), dtype=float)
    assert np.abs(fast - exact).mean() < 1.0


def test_compiled_path_matches_eager(photo):
    torch.manual_seed(0)
    model = srweb.create_model("espcn", 2)
    eager = np.asarray(Upscaler(model, precision="fp32").upscale(photo), dtype=float)
    compiled = Upscaler(model, precision="fp32", compile=True)
    assert compiled.compiled
    assert np.abs(np.asarray(compiled.upscale(photo), dtype=float) - eager).max() <= 1


def test_fp32_edges_leave_the_shared_model_alone():
    from srweb.inference.upscaler import with_fp32_edges

    model = srweb.create_model("srcnn", 2)
    net = with_fp32_edges(model)
    wrapped = [n for n, m in net.named_modules() if type(m).__name__ == "_FP32"]
    assert len(wrapped) == 2 and not any(type(m).__name__ == "_FP32" for m in model.modules())
    x = torch.rand(1, 1, 20, 20)
    with torch.inference_mode():
        assert torch.equal(net(x), model(x))  # same weights, same fp32 result outside autocast


# ---- 16-bit colour: PIL keeps only the high byte of each channel; srweb reads and writes all 16 bits


def _deep_photo(photo, alpha: bool = False) -> np.ndarray:
    arr = np.asarray(photo).astype(np.uint16) * 257 + np.arange(3, dtype=np.uint16) * 40  # low bits set
    if alpha:
        a = np.full(arr.shape[:2] + (1,), 65535, np.uint16)
        a[:, : arr.shape[1] // 3] = 0
        arr = np.concatenate([arr, a], axis=2)
    return arr


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_an_array_upscales_as_its_pil_image_does(photo, espcn, mode):
    img = photo.convert(mode)
    out = espcn.upscale(np.asarray(img))
    assert out.dtype == np.uint8 and np.array_equal(out, np.asarray(espcn.upscale(img)))


def test_sixteen_bit_colour_arrays_keep_their_depth_and_alpha(photo, espcn):
    deep = _deep_photo(photo, alpha=True)
    out = espcn.upscale(deep)
    assert out.dtype == np.uint16 and out.shape == (60, 80, 4)
    assert (out[..., :3] % 257).any()  # not an 8-bit result scaled up
    assert out[:, :20, 3].max() == 0 and out[:, 30:, 3].min() == 65535
    # Its 8-bit view agrees with upscaling the 8-bit image (within the rounding of the low byte).
    eight = np.asarray(espcn.upscale(Image.fromarray((deep // 257).astype(np.uint8))), dtype=float)
    visible = out[:, 30:, :3] / 257.0 - eight[:, 30:, :3]
    assert np.abs(visible).mean() < 1.5
    with pytest.raises(ValueError, match="uint8 or uint16"):
        espcn.upscale(deep.astype(np.float32))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_colour_files_round_trip_with_all_their_bits(photo, tmp_path, suffix):
    import cv2

    from srweb.imaging.io import load_pixels, read_deep_colour
    from srweb.inference.upscaler import upscale_file

    deep = _deep_photo(photo)
    path = tmp_path / f"deep{suffix}"
    cv2.imwrite(str(path), deep[..., ::-1])  # OpenCV writes BGR
    assert np.array_equal(read_deep_colour(path), deep) and np.array_equal(load_pixels(path), deep)
    photo.save(tmp_path / "eight.png")
    assert read_deep_colour(tmp_path / "eight.png") is None
    assert isinstance(load_pixels(tmp_path / "eight.png"), Image.Image)

    out = upscale_file(path, Upscaler("bicubic", 2), tmp_path / "out")
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert written.dtype == np.uint16 and written.shape == (60, 80, 3)
    expected = imresize(torch.from_numpy(deep.transpose(2, 0, 1) / 65535.0)[None].float(), scale=2)[0]
    assert np.abs(written / 65535.0 - expected.clamp(0, 1).numpy().transpose(1, 2, 0)).max() < 2e-5


def _grey_alpha_png(arr: np.ndarray) -> bytes:
    """A 16-bit grey+alpha PNG (colour type 4) of an (H, W, 2) uint16 array: neither Pillow nor OpenCV writes one."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    header = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 16, 4, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_sixteen_bit_grey_and_alpha_keeps_its_bits_and_stays_grey(photo, espcn, tmp_path):
    import cv2

    from srweb.imaging.io import load_pixels, to_pil8
    from srweb.inference.upscaler import upscale_file

    deep = _deep_photo(photo.convert("L").convert("RGB"), alpha=True)[..., [0, 3]]
    path = tmp_path / "grey-alpha.png"
    path.write_bytes(_grey_alpha_png(deep))
    assert Image.open(path).mode == "RGBA"  # Pillow: 8 bits of each, and calls it RGBA
    assert np.array_equal(load_pixels(path), deep)
    assert to_pil8(deep).mode == "LA"
    out = espcn.upscale(deep)
    assert out.dtype == np.uint16 and out.shape == (60, 80, 2) and (out[..., 0] % 257).any()
    assert out[:, :20, 1].max() == 0 and out[:, 30:, 1].min() == 65535
    # Upscaled as grey (one plane), as the 8-bit LA image is.
    eight = np.asarray(espcn.upscale(Image.fromarray((deep // 257).astype(np.uint8), mode="LA")), dtype=float)
    assert np.abs(out[:, 30:, 0] / 257.0 - eight[:, 30:, 0]).mean() < 1.5
    # Written as 16-bit RGBA with equal colour channels (OpenCV writes no 2-channel PNG).
    written = cv2.imread(str(upscale_file(path, espcn, tmp_path / "out")), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (60, 80, 4)
    assert np.array_equal(written[..., 0], out[..., 0]) and np.array_equal(written[..., 2], out[..., 0])
    assert np.array_equal(written[..., 3], out[..., 1])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_arrays_are_turned_upright_as_pil_turns_images(orientation):
    from PIL import ImageOps

    from srweb.imaging.io import _ORIENT

    img = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
    exif = img.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
    assert np.array_equal(_ORIENT.get(orientation, lambda a: a)(np.asarray(img)), expected)


def test_sixteen_bit_colour_keeps_its_colour_profile(photo, tmp_path):
    import cv2
    from PIL import ImageCms

    from srweb.imaging.io import encode_png, read_deep_colour
    from srweb.inference.upscaler import upscale_file

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # any profile but the default
    deep = _deep_photo(photo)
    path = tmp_path / "tagged.png"
    path.write_bytes(encode_png(deep, profile))
    assert Image.open(path).info["icc_profile"] == profile  # a valid iCCP chunk, as Pillow reads it
    assert np.array_equal(read_deep_colour(path), deep)  # and libpng decodes the file whole

    out = upscale_file(path, Upscaler("bicubic", 2), tmp_path / "out")
    assert Image.open(out).info["icc_profile"] == profile
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    (tmp_path / "plain.png").write_bytes(encode_png(deep))
    assert (
        "icc_profile"
        not in Image.open(upscale_file(tmp_path / "plain.png", Upscaler("bicubic", 2), tmp_path / "out2")).info
    )


@pytest.mark.parametrize("output_scale", [1.5, 3, 5.25])
def test_an_output_scale_resizes_the_sr_result_with_matlab_bicubic(photo, espcn, output_scale):
    model = Upscaler(espcn.model, precision="fp32", output_scale=output_scale)
    assert model.output_size(30, 40) == (round(30 * output_scale), round(40 * output_scale))
    sr = torch.from_numpy(np.asarray(espcn.upscale(photo), dtype=np.float32).transpose(2, 0, 1) / 255.0)
    expected = imresize(sr[None], size=model.output_size(30, 40))[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255.0
    out = np.asarray(model.upscale(photo), dtype=np.float32)
    assert out.shape == expected.shape and np.abs(out - expected).max() < 1.5  # the 8-bit roundings only
    rgba = model.upscale(photo.convert("RGBA"))
    deep = model.upscale(_deep_photo(photo, alpha=True))
    assert rgba.size == (out.shape[1], out.shape[0]) and deep.shape == out.shape[:2] + (4,)
    assert deep.dtype == np.uint16 and deep[:, : int(10 * output_scale), 3].max() == 0  # alpha resized as well


def test_the_models_own_scale_as_output_scale_changes_nothing(photo, espcn):
    same = Upscaler(espcn.model, precision="fp32", output_scale=2)
    assert same.output_scale is None and np.array_equal(
        np.asarray(same.upscale(photo)), np.asarray(espcn.upscale(photo))
    )
    for bad in (0, -1, 17):
        with pytest.raises(ValueError, match="output scale must be above 0 and at most 16"):
            Upscaler(espcn.model, output_scale=bad)


def test_auto_precision_is_the_fast_one_only_where_the_cards_guard_measured_it(monkeypatch):
    from srweb.inference import upscaler as inference
    from srweb.inference.upscaler import card_precision

    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: True)
    passed = {"fast_precision": "bf16", "fast_path_ok": True}
    assert card_precision({}, "cpu") == "bf16" and card_precision(passed, "cpu") == "bf16"
    assert card_precision({**passed, "fast_path_ok": False}, "cpu") == "fp32"  # the guard failed
    assert card_precision({"fast_precision": "fp32", "fast_path_ok": True}, "cpu") == "fp32"  # made without bf16
    assert card_precision({"fast_precision": "fp32", "fast_path_ok": True}, "cpu", "bf16") == "bf16"  # as asked
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    assert card_precision(passed, "cpu") == "fp32"


def test_self_ensemble_of_a_baseline_is_refused():
    for name in ("bicubic", "nearest"):  # every flip gives the same image: 8x the work for nothing
        with pytest.raises(ValueError, match="self-ensemble needs a model"):
            Upscaler(name, 2, self_ensemble=True)


def test_a_tile_smaller_than_the_overlap_warns_of_the_work():
    model = srweb.create_model("srresnet", 4)  # receptive radius 42: a 7-pixel tile computes 169x its pixels
    with pytest.warns(UserWarning, match="tile size 7 is below the 42-pixel overlap.* about 169x"):
        Upscaler(model, tile_size=7)
