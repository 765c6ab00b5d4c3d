"""The degradation pipeline (srweb/data/degradations.py): statistics of each piece, sizes, seeds,
impossible configs, and its use in training (PatchPairs, resume) and evaluation (protocol).

Images are generated here (smooth random fields plus texture), so nothing outside the repo is read.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from srweb.data import degradations as deg
from srweb.data.folders import make_lr


def _photo(h: int = 96, w: int = 96, seed: int = 0, texture: float = 0.04) -> np.ndarray:
    """A uint8 RGB image with smooth gradients, edges and fine texture (a stand-in for a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in range(3)], axis=2) * 0.35 + 0.5
    base[h // 3 : 2 * h // 3, w // 4 : w // 2] += 0.2  # a block with sharp edges
    base += rng.normal(0, texture, base.shape)  # fine texture
    return np.clip(np.round(base * 255), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the pieces -----------------------------------------------------------------------------
def test_bicubic_and_clean_draws_are_exactly_the_classic_lr():
    hr = _photo(96, 72)
    for scale in (2, 3, 4):
        assert np.array_equal(deg.degrade(hr, scale, {}, np.random.default_rng(0)), make_lr(hr, scale))
    always_clean = deg.resolve("jpeg", {"clean_prob": 1.0})
    assert np.array_equal(deg.degrade(hr, 2, always_clean, np.random.default_rng(5)), make_lr(hr, 2))
    assert deg.resolve("bicubic") == {}


@pytest.mark.parametrize("sigma", [0.8, 1.5, 3.0])
def test_gaussian_blur_removes_high_frequency_energy_by_the_kernels_amount(sigma):
    kernel = deg.gaussian_kernel(21, sigma)
    assert kernel.sum() == pytest.approx(1.0)
    ax = np.arange(21) - 10
    assert (kernel.sum(axis=0) * ax**2).sum() == pytest.approx(sigma**2, rel=0.02)  # its variance is sigma^2
    # White noise through a filter keeps sum(k^2) of its power: the expected loss of high frequencies.
    noise = np.random.default_rng(1).standard_normal((256, 256, 3)).astype(np.float32)
    blurred = deg.filter2d(noise, kernel)[16:-16, 16:-16]
    assert blurred.var() / noise.var() == pytest.approx((kernel**2).sum(), rel=0.08)
    # and a wider kernel leaves less of the top half of the spectrum
    spectrum = np.abs(np.fft.fft2(blurred[..., 0])) ** 2
    high = spectrum[64:160, 64:160].sum() / spectrum.sum()
    assert high < 0.25 * np.exp(-sigma)


def test_anisotropic_generalized_and_plateau_kernels_are_normalised_and_shaped():
    aniso = deg.gaussian_kernel(21, 4.0, 1.0, angle=0.0)
    assert aniso.sum() == pytest.approx(1.0)
    assert (aniso.sum(axis=0) * (np.arange(21) - 10) ** 2).sum() > 4 * (
        aniso.sum(axis=1) * (np.arange(21) - 10) ** 2
    ).sum()
    flat = deg.gaussian_kernel(21, 2.0, beta=4.0)  # generalized Gaussian, beta > 1: flatter top, sharper fall
    gauss = deg.gaussian_kernel(21, 2.0)
    assert flat[10, 11] / flat[10, 10] > gauss[10, 11] / gauss[10, 10] and flat[10, 0] < gauss[10, 0]
    plateau = deg.gaussian_kernel(21, 2.0, beta=1.0, plateau=True)
    assert plateau.sum() == pytest.approx(1.0) and plateau[10, 0] > gauss[10, 0]  # heavy tails


def test_sinc_kernel_passes_below_its_cutoff_and_stops_above():
    cutoff = np.pi / 3
    kernel = deg.sinc_kernel(21, cutoff)
    assert kernel.sum() == pytest.approx(1.0)
    response = np.abs(np.fft.fftshift(np.fft.fft2(kernel, (128, 128))))
    freq = np.fft.fftshift(np.fft.fftfreq(128)) * 2 * np.pi
    radius = np.hypot(*np.meshgrid(freq, freq))
    assert response[radius < 0.6 * cutoff].min() > 0.85
    assert response[radius > 1.6 * cutoff].max() < 0.15


@pytest.mark.parametrize("sigma", [5.0, 15.0, 30.0])
def test_gaussian_noise_std_matches_sigma(sigma):
    img = np.full((128, 128, 3), 0.5, np.float32)
    noise = {**deg.NOISE, "gaussian_prob": 1.0, "gray_prob": 0.0, "sigma": [sigma, sigma]}
    out = deg.add_noise(img, noise, np.random.default_rng(0))
    assert (out - img).std() * 255 == pytest.approx(sigma, rel=0.03)
    assert abs(np.corrcoef((out - img)[..., 0].ravel(), (out - img)[..., 1].ravel())[0, 1]) < 0.05  # colour
    gray = deg.add_noise(img, {**noise, "gray_prob": 1.0}, np.random.default_rng(0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_poisson_noise_grows_with_its_scale_and_with_brightness():
    noise = {**deg.NOISE, "gaussian_prob": 0.0, "gray_prob": 0.0}
    ramp = np.repeat(np.linspace(0.05, 0.95, 128, dtype=np.float32)[None, :, None], 128, 0).repeat(3, 2)
    weak = deg.add_noise(ramp, {**noise, "poisson_scale": [0.5, 0.5]}, np.random.default_rng(0)) - ramp
    strong = deg.add_noise(ramp, {**noise, "poisson_scale": [2.0, 2.0]}, np.random.default_rng(0)) - ramp
    assert strong.std() == pytest.approx(4 * weak.std(), rel=0.1)
    assert strong[:, 96:].std() > 1.5 * strong[:, :32].std()  # shot noise: brighter is noisier


def test_jpeg_error_falls_as_quality_rises():
    img = _photo(96, 96, texture=0.01)
    errors = [np.abs(deg.jpeg(img, q).astype(float) - img).mean() for q in (10, 30, 50, 75, 95)]
    assert errors == sorted(errors, reverse=True) and errors[0] > 2 * errors[-1]
    assert deg.jpeg(img, 75).shape == img.shape and deg.jpeg(img, 75).dtype == np.uint8


def test_jpeg_preset_quality_is_drawn_within_its_range():
    hr = _photo(96, 96)
    config = deg.resolve("jpeg", {"clean_prob": 0.0, "final": {"jpeg": {"quality": [60, 60]}}})
    lr = deg.degrade(hr, 2, config, np.random.default_rng(3))
    assert np.array_equal(lr, deg.jpeg(make_lr(hr, 2), 60))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("preset", ["jpeg", "realistic"])
def test_every_chain_gives_the_exact_lr_size(scale, preset):
    config = deg.resolve(preset)
    for seed in range(12):  # random resizes up and down, both orders of the final JPEG
        hr = _photo(24 * scale, 20 * scale, seed)
        lr = deg.degrade(hr, scale, config, np.random.default_rng(seed))
        assert lr.shape == (24, 20, 3) and lr.dtype == np.uint8
    with pytest.raises(ValueError, match="mod-crop"):
        deg.degrade(_photo(25, 24), 2, config, np.random.default_rng(0))


def test_resize_and_filter_keep_shapes_for_tiny_images():
    img = np.random.default_rng(0).random((3, 5, 3)).astype(np.float32)
    assert deg.filter2d(img, deg.gaussian_kernel(21, 2.0)).shape == img.shape  # kernel larger than the image
    assert deg.resize(img, (7, 2), "area").shape == (7, 2, 3)


def test_same_seed_same_lr_other_seed_other_lr():
    hr = _photo(96, 96)
    config = deg.resolve("realistic")
    a = deg.degrade(hr, 2, config, np.random.default_rng(42))
    assert np.array_equal(a, deg.degrade(hr, 2, config, np.random.default_rng(42)))
    assert not np.array_equal(a, deg.degrade(hr, 2, config, np.random.default_rng(43)))


def test_realistic_chain_damages_more_than_jpeg75():
    hr = _photo(96, 96)
    clean = make_lr(hr, 2).astype(float)
    jpeg75 = deg.degrade(hr, 2, deg.eval_config("jpeg75"), deg.eval_rng(0)).astype(float)
    harsh = np.mean(
        [
            np.abs(deg.degrade(hr, 2, deg.eval_config("realistic"), deg.eval_rng(i)).astype(float) - clean).mean()
            for i in range(6)
        ]
    )
    assert 0 < np.abs(jpeg75 - clean).mean() < harsh


# ---- configs --------------------------------------------------------------------------------
def test_resolve_spells_the_full_chain_and_merges_overrides():
    full = deg.resolve("jpeg", '{"final": {"jpeg": {"quality": [50, 90]}}}')
    assert full["final"]["jpeg"] == {"prob": 1.0, "quality": [50, 90]} and full["clean_prob"] == 0.5
    assert deg.resolve("jpeg", full) == full  # resolving a recorded chain again changes nothing
    realistic = deg.resolve("realistic")
    assert realistic["second"]["blur"]["sigma"] == [0.2, 1.5] and realistic["first"]["blur"]["sigma"] == [0.2, 3.0]
    assert deg.resolve("bicubic", {"final": {"noise": {"sigma": [5, 5]}}})["final"]["noise"]["sigma"] == [5, 5]
    json.dumps(realistic)  # JSON-able, for the card


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"final": {"jpeg": {"quality": [0, 95]}}}, "quality must be within 1-100"),
        ({"final": {"jpeg": {"quality": [30, 101]}}}, "quality must be within 1-100"),
        ({"first": {"noise": {"sigma": [-1, 3]}}}, "sigma"),
        ({"first": {"blur": {"sigma": [-0.5, 1]}}}, "sigma must be"),
        ({"first": {"blur": {"kernel_size": [7, 8]}}}, "odd"),
        ({"clean_prob": 1.5}, "probability"),
        ({"final": {"resize": "nearest"}}, "final.resize"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"first": {"blur": {"kinds": {"box": 1}}}}, "unknown first.blur.kinds 'box'"),
        ({"first": 3}, "first must be an object"),
    ],
)
def test_impossible_configs_are_one_clear_line(override, fragment):
    with pytest.raises(deg.DegradationError, match=fragment) as err:
        deg.resolve("jpeg", override)
    assert "\n" not in str(err.value)


def test_kernel_larger_than_the_patch_is_refused():
    config = deg.resolve("realistic")
    deg.check(config, hr_patch=96)
    with pytest.raises(deg.DegradationError, match="21x21 kernel is larger than the 16x16 HR patch"):
        deg.check(config, hr_patch=16)


def test_unknown_preset_and_bad_json_name_the_choices():
    with pytest.raises(deg.DegradationError, match="bicubic, jpeg, realistic"):
        deg.resolve("blurry")
    with pytest.raises(deg.DegradationError, match="not valid JSON"):
        deg.resolve("jpeg", "{quality: 5}")
    with pytest.raises(deg.DegradationError, match="jpeg75"):
        deg.eval_config("jpeg10")


def test_describe_names_the_evaluation_chains():
    assert deg.describe({}) == "matlab-bicubic"
    assert deg.describe(deg.eval_config("jpeg75")) == "matlab-bicubic+jpeg75"
    assert deg.describe(deg.eval_config("noise15")) == "matlab-bicubic+noise15"
    assert deg.describe(deg.eval_config("realistic")) == "realistic"
    assert deg.describe(deg.resolve("jpeg")).startswith("custom-")


SMALL_KERNELS = {
    "first": {"blur": {"kernel_size": [3, 7]}},
    "second": {"blur": {"kernel_size": [3, 7]}},
    "final": {"sinc_kernel_size": [3, 7]},
}  # for 8 px LR patches (16 px HR at x2)


# ---- training and evaluation ----------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    train, val = root / "train", root / "val"
    train.mkdir()
    val.mkdir()
    for i in range(4):
        Image.fromarray(_photo(64, 64, i)).save(train / f"t{i}.png")
    for i in range(2):
        Image.fromarray(_photo(48, 48, 10 + i)).save(val / f"v{i}.png")
    return {"train": str(train), "val": str(val)}


def test_patch_pairs_degrade_each_patch_from_its_hr(folders):
    from srweb.data.pairs import PatchPairs

    config = deg.resolve("jpeg", {"clean_prob": 0.0})
    pairs = PatchPairs(folders["train"], 2, 16, cache="memory", degradation=config, augment=False)
    random.seed(7)
    first = [pairs[i] for i in range(8)]
    random.seed(7)
    again = [pairs[i] for i in range(8)]
    for a, b in zip(first, again):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
        assert a["lr"].shape == (3, 16, 16) and a["hr"].shape == (3, 32, 32)
        hr8 = (b["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        clean = torch.from_numpy(make_lr(hr8, 2).transpose(2, 0, 1)).float() / 255
        assert (a["lr"] - clean).abs().mean() > 1 / 255  # JPEG-damaged, not the clean LR
    classic = PatchPairs(folders["train"], 2, 16, cache="memory", augment=False)
    random.seed(7)
    assert classic[0]["lr"].shape == (3, 16, 16)


def test_training_with_a_degradation_resumes_bit_identical(fresh_state, folders):
    from srweb.train.config import TrainConfig
    from srweb.train.trainer import Trainer

    cfg = TrainConfig(
        model="espcn",
        scale=2,
        data=folders["train"],
        val_data=None,
        patch_size=8,
        batch_size=4,
        iterations=10,
        precision="fp32",
        channels_last=False,
        degradation="realistic",
        degradation_config=SMALL_KERNELS,
    )
    Trainer(cfg, fresh_state / "straight", progress=False).train()
    polls = iter(range(100))
    Trainer(cfg, fresh_state / "split", should_stop=lambda: next(polls) >= 4, progress=False).train()
    Trainer(cfg, fresh_state / "split", progress=False).train()
    a = torch.load(fresh_state / "straight" / "last.pt", weights_only=True)
    b = torch.load(fresh_state / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 10
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    other = TrainConfig(**{**cfg.to_dict(), "degradation": "jpeg", "degradation_config": {}})
    Trainer(other, fresh_state / "jpeg", progress=False).train()
    c = torch.load(fresh_state / "jpeg" / "last.pt", weights_only=True)
    assert any(not torch.equal(t, c["model"][k]) for k, t in a["model"].items())  # the chain shapes the weights


def test_train_config_records_the_full_chain_and_refuses_impossible_ones():
    from srweb.train.config import ConfigError, TrainConfig

    cfg = TrainConfig(model="edsr-baseline", scale=2, data="x", degradation="jpeg").resolved().validate()
    assert cfg.degradation_config == deg.resolve("jpeg") and cfg.eval_degradation == "jpeg75"
    assert cfg.name.endswith("_deg-jpeg")
    classic = TrainConfig(model="edsr-baseline", scale=2, data="x").resolved().validate()
    assert classic.degradation_config == {} and classic.eval_degradation == "" and "deg" not in classic.name
    bad = {"final": {"jpeg": {"quality": [0, 90]}}}
    with pytest.raises(ConfigError, match="quality must be within 1-100"):
        TrainConfig(model="espcn", data="x", degradation="jpeg", degradation_config=bad).resolved().validate()
    with pytest.raises(ConfigError, match="larger than the 20x20 HR patch"):
        TrainConfig(model="espcn", data="x", patch_size=10, degradation="realistic").resolved().validate()
    with pytest.raises(ConfigError, match="degradation must be one of"):
        TrainConfig(model="espcn", data="x", degradation="sharp").resolved().validate()


def test_cli_train_refuses_an_impossible_chain_before_anything_runs(fresh_state, folders, capsys):
    from srweb.cli import main

    code = main(
        [
            "train",
            "--model",
            "espcn",
            "--data",
            folders["train"],
            "--val-data",
            "",
            "--iterations",
            "2",
            "--no-track",
            "--degradation",
            "jpeg",
            "--degradation-config",
            '{"first": {"noise": {"sigma": [-5, 5]}}}',
            "--run-dir",
            str(fresh_state / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "srweb: error:" in err and "sigma" in err
    assert not (fresh_state / "run").exists()


def test_eval_on_degraded_inputs_records_its_protocol(folders):
    from srweb.evaluation.evaluate import bicubic_sr, evaluate

    clean = evaluate(bicubic_sr(2), folders["val"], 2)
    jpeg75 = evaluate(bicubic_sr(2), folders["val"], 2, degradation="jpeg75")
    again = evaluate(bicubic_sr(2), folders["val"], 2, degradation="jpeg75")
    assert clean.protocol["degradation"] == "matlab-bicubic"
    assert jpeg75.protocol["degradation"] == "matlab-bicubic+jpeg75"
    assert jpeg75.psnr < clean.psnr and jpeg75.psnr == again.psnr  # a fixed seed per image
    noisy = evaluate(bicubic_sr(2), folders["val"], 2, degradation="noise15")
    assert noisy.protocol["degradation"] == "matlab-bicubic+noise15" and noisy.psnr < clean.psnr
    with pytest.raises(ValueError, match="degradation must be one of"):
        evaluate(bicubic_sr(2), folders["val"], 2, degradation="jpeg10")


def test_a_degraded_card_replays_from_card_to_the_same_tensors(fresh_state, folders):
    from safetensors.torch import load_file

    from srweb.cli import train as cli
    from srweb.train.config import TrainConfig
    from srweb.train.trainer import Trainer

    cfg = TrainConfig(
        model="espcn",
        scale=2,
        data=folders["train"],
        val_data=folders["val"],
        patch_size=8,
        batch_size=4,
        iterations=6,
        val_interval=3,
        precision="fp32",
        channels_last=False,
        degradation="jpeg",
        degradation_config={"final": {"jpeg": {"quality": [50, 90]}}},
        tag="real",
    )
    card = Trainer(cfg, fresh_state / "first", progress=False).train().card
    recorded = json.loads((fresh_state / "first" / "export" / "espcn-x2.real.json").read_text())
    chain = recorded["training"]["config"]["degradation_config"]
    assert chain == deg.resolve("jpeg", {"final": {"jpeg": {"quality": [50, 90]}}})  # the whole chain
    protocols = [m["protocol"]["degradation"] for m in recorded["metrics"]]
    assert protocols == ["matlab-bicubic", "matlab-bicubic+jpeg75"]  # clean first, then what it was judged on
    args = cli.argparse.Namespace(
        from_card=str(fresh_state / "first" / "export" / "espcn-x2.real.json"),
        config=None,
        model=None,
        override=[],
        name=None,
        **{
            f: None
            for f in (*cli._FLAGS, "augment", "scale_augment", "freeze_bn", "channels_last", "teacher_unlabelled")
            if f != "name"
        },
    )
    replay = cli.config_from_args(args)
    assert replay.degradation_config == chain and replay.degradation == "jpeg"
    Trainer(replay, fresh_state / "again", progress=False).train()
    a = load_file(fresh_state / "first" / "export" / "espcn-x2.real.safetensors")
    b = load_file(fresh_state / "again" / "export" / "espcn-x2.real.safetensors")
    assert card is not None and all(torch.equal(a[k], b[k]) for k in a)
    args.degradation = "bicubic"  # the user's flag wins over the card's chain
    assert cli.config_from_args(args).resolved().degradation_config == {}
