"""Model registry and architectures: shapes, parameter counts, metadata, variants."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from srweb.models import ModelInfo, create_discriminator, create_model, get_model_info, list_models, register_model
from srweb.models import _registry

LR_SIZE = 8

CASES = [(name, scale) for name in list_models() for scale in get_model_info(name).scales]

# Published figures where the papers (or the authors' READMEs) give one; "~" marks counts
# derived from the paper's layer specification where the paper prints none.
PAPER_PARAMS: dict[tuple[str, int], int] = {
    **{("srcnn", s): 57_184 for s in (2, 3, 4)},  # TPAMI 2016, 9-5-5
    **{("fsrcnn", s): 12_464 for s in (2, 3, 4)},  # ECCV 2016, FSRCNN(56,12,4)
    ("espcn", 2): 21_300,
    ("espcn", 3): 22_700,
    ("espcn", 4): 24_800,  # ~ from the layer spec
    **{("vdsr", s): 665_000 for s in (2, 3, 4)},  # as tabulated in the DRRN paper
    **{("drcn", s): 1_774_000 for s in (2, 3, 4)},
    **{("red30", s): 1_030_000 for s in (2, 3, 4)},  # ~ 64-feature RED30
    **{("drrn", s): 297_000 for s in (2, 3, 4)},  # DRRN_B1U25
    ("edsr-baseline", 2): 1_370_000,
    ("edsr-baseline", 3): 1_550_000,
    ("edsr-baseline", 4): 1_520_000,
    ("edsr", 2): 40_700_000,
    ("edsr", 3): 43_700_000,
    ("edsr", 4): 43_100_000,  # x3: ~
    ("srresnet", 2): 1_400_000,
    ("srresnet", 3): 1_590_000,
    ("srresnet", 4): 1_550_000,  # x2, x3: ~
}
# These papers count convolution weights only (no biases, PReLU slopes or BN affine terms).
CONV_WEIGHTS_ONLY = {"fsrcnn", "drrn"}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def num_conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def meta_model(name: str, scale: int, **overrides) -> nn.Module:
    """Build on the meta device: counts parameters without allocating or initialising them."""
    with torch.device("meta"):
        return create_model(name, scale, **overrides)


def lr_input(model: nn.Module, lr_size: int = LR_SIZE) -> torch.Tensor:
    size = lr_size * model.scale if model.upsampling == "pre" else lr_size
    return torch.rand(1, model.in_channels, size, size, generator=torch.Generator().manual_seed(0))


def skip_if_missing_resize(name: str) -> None:
    if name == "bicubic":
        pytest.importorskip("srweb.imaging.resize")


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_forward_shape_and_finite(name: str, scale: int) -> None:
    skip_if_missing_resize(name)
    model = create_model(name, scale).eval()
    x = lr_input(model)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, model.in_channels, LR_SIZE * scale, LR_SIZE * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", list_models())
def test_channels_last_and_bf16_autocast(name: str) -> None:
    skip_if_missing_resize(name)
    model = create_model(name, 2).eval().to(memory_format=torch.channels_last)
    x = lr_input(model).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (1, model.in_channels, 2 * LR_SIZE, 2 * LR_SIZE)
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize(("name", "scale"), sorted(PAPER_PARAMS))
def test_param_count_matches_paper(name: str, scale: int) -> None:
    model = meta_model(name, scale)
    ours = num_conv_weights(model) if name in CONV_WEIGHTS_ONLY else num_params(model)
    assert ours == pytest.approx(PAPER_PARAMS[name, scale], rel=0.02)


def test_every_trainable_model_has_a_paper_count() -> None:
    assert {(n, s) for n, s in CASES if get_model_info(n).trainable} == set(PAPER_PARAMS)


def test_baselines_are_parameterless_and_untrainable() -> None:
    assert set(list_models()) - set(list_models(include_baselines=False)) == {"bicubic", "nearest"}
    for name in ("bicubic", "nearest"):
        assert not get_model_info(name).trainable
        assert num_params(create_model(name, 2)) == 0


def test_nearest_replicates_pixels_and_clamps() -> None:
    x = torch.tensor([[[[0.2, 1.5], [-0.1, 0.7]]]])
    y = create_model("nearest", 2)(x)
    assert torch.equal(y[0, 0, :2, :2], torch.full((2, 2), 0.2))
    assert y.min() >= 0 and y.max() <= 1


def test_bicubic_uses_matlab_imresize() -> None:
    resize = pytest.importorskip("srweb.imaging.resize")
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    y = create_model("bicubic", 3)(x)
    assert torch.allclose(y, resize.imresize(x, scale=3).clamp(0, 1))


# --- registry ---------------------------------------------------------------------------


def test_metadata_fields() -> None:
    for name in list_models():
        info = get_model_info(name)
        assert isinstance(info, ModelInfo) and info.name == name
        assert info.input_kind in ("y", "rgb") and info.upsampling in ("pre", "post")
        assert info.paper and info.description and isinstance(info.year, int)
        assert info.scales and all(isinstance(s, int) for s in info.scales)
        model = meta_model(name, info.scales[0])
        assert model.arch == name and model.scale == info.scales[0]
        assert model.input_kind == info.input_kind and model.upsampling == info.upsampling
        assert model.in_channels == (1 if info.input_kind == "y" else 3)


@pytest.mark.parametrize("name", list_models())
def test_config_round_trips_through_json(name: str) -> None:
    scale = get_model_info(name).scales[-1]
    model = meta_model(name, scale)
    config = json.loads(json.dumps(model.config))
    assert config == model.config and "scale" not in config
    rebuilt = meta_model(name, scale, **config)
    assert rebuilt.config == model.config
    assert num_params(rebuilt) == num_params(model)


def test_duplicate_name_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    decorate = register_model("srcnn", paper="x", year=2020, input_kind="y", upsampling="pre")
    with pytest.raises(ValueError, match="already registered"):
        decorate(lambda scale: nn.Identity())


def test_register_and_create_new_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    @register_model("toy", paper="none", year=2024, input_kind="rgb", upsampling="post", scales=(2,), defaults={"k": 1})
    def toy(scale: int, k: int) -> nn.Module:
        """A toy."""
        return nn.Upsample(scale_factor=scale)

    assert "toy" in list_models() and get_model_info("toy").description == "A toy."
    assert create_model("toy", 2, k=3).config == {"k": 3}


def test_unknown_model_scale_and_option_raise_clearly() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope'; known: srcnn"):
        get_model_info("nope")
    with pytest.raises(ValueError, match=r"unknown model"):
        create_model("nope", 2)
    with pytest.raises(ValueError, match=r"supports scales \(2, 3, 4\), not 5"):
        create_model("vdsr", 5)
    with pytest.raises(ValueError, match="supports scales"):
        create_model("vdsr", 2.0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) num_layer for model 'vdsr'; valid: in_ch"):
        create_model("vdsr", 2, num_layer=10)


# --- architecture specifics ---------------------------------------------------------------


def test_srcnn_915_and_rgb_variants() -> None:
    m915 = create_model("srcnn", 3, kernel_sizes=(9, 1, 5))
    assert m915.config["kernel_sizes"] == [9, 1, 5]
    assert num_params(m915) == pytest.approx(8_032, rel=0.02)
    rgb = create_model("srcnn", 3, in_channels=3)
    assert rgb.in_channels == 3 and rgb.input_kind == "rgb"
    assert rgb(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)


def test_drcn_recursive_supervision() -> None:
    model = create_model("drcn", 2, num_features=16).eval()
    x = torch.rand(2, 1, 10, 10)
    with torch.no_grad():
        out, intermediates = model.forward_with_supervision(x)
        assert torch.allclose(model(x), out)
    assert len(intermediates) == 16 and all(t.shape == x.shape for t in intermediates)
    assert torch.allclose(model.ensemble_weights, torch.full((16,), 1 / 16))
    assert torch.allclose(out, torch.stack(intermediates).mean(0), atol=1e-6)


def test_drrn_blocks_and_units_are_configurable() -> None:
    b1u9, b1u25 = meta_model("drrn", 2, num_units=9), meta_model("drrn", 2)
    # Units inside a block share their convs: depth grows, conv weights do not.
    assert num_conv_weights(b1u9) == num_conv_weights(b1u25)
    b3u2 = create_model("drrn", 2, num_blocks=3, num_units=2, num_features=8).eval()
    assert len(b3u2.body) == 3 and all(len(block.norms) == 2 for block in b3u2.body)
    assert sum(isinstance(m, nn.Conv2d) for m in b3u2.modules()) == 3 * 3 + 1
    assert b3u2(torch.rand(1, 1, 12, 12)).shape == (1, 1, 12, 12)


@pytest.mark.parametrize("size", [96, 128])
def test_srgan_discriminator_output_shape(size: int) -> None:
    disc = create_discriminator(num_features=8, hidden_features=16).eval()
    assert disc(torch.rand(2, 3, size, size)).shape == (2, 1)


def test_srgan_discriminator_default_width() -> None:
    with torch.device("meta"):
        disc = create_discriminator()
    assert disc(torch.empty(1, 3, 96, 96, device="meta")).shape == (1, 1)
    # Dominated by the paper's 512*6*6 -> 1024 dense layer (6x6 features at 96x96 input).
    assert num_params(disc) == pytest.approx(23.56e6, rel=0.01)
