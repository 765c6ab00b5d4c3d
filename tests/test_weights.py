"""Weights format: safetensors + card, verification, shipped cards agree with their tensors."""

import json
import pickle

import pytest
import torch

import srweb
from conftest import set5_present
from srweb.weights.files import WeightsError, count_params, import_pth, list_weights, load_weights, save_weights


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path))
    srweb.config.get_settings.cache_clear()
    yield tmp_path
    srweb.config.get_settings.cache_clear()


def test_round_trip(wdir):
    model = srweb.create_model("espcn", 3)
    card = save_weights(model, "espcn-x3.test", training={"iterations": 1})
    assert (wdir / "espcn-x3.test.safetensors").exists() and (wdir / "espcn-x3.test.json").exists()
    loaded, card2 = load_weights("espcn-x3.test")
    assert card2.num_params == count_params(loaded) == card.num_params
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert [c.name for c in srweb.list_weights()] == ["espcn-x3.test"]
    # by path, either file
    load_weights(wdir / "espcn-x3.test.json")
    load_weights(str(wdir / "espcn-x3.test.safetensors"))


def test_shared_weights_models_round_trip(wdir):
    for arch in ("drcn", "drrn"):
        model = srweb.create_model(arch, 2)
        save_weights(model, f"{arch}-x2.t")
        loaded, _ = load_weights(f"{arch}-x2.t")
        assert count_params(loaded) == count_params(model)


def test_card_disagreeing_with_tensors_is_a_clear_error(wdir):
    save_weights(srweb.create_model("espcn", 3), "espcn-x3.bad")
    card_path = wdir / "espcn-x3.bad.json"
    card = json.loads(card_path.read_text())
    card["scale"] = 2  # tensors are x3: last conv has 9 output channels, not 4
    card["sha256"] = ""
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="do not fit espcn x2"):
        load_weights("espcn-x3.bad")


def test_tampered_file_fails_checksum(wdir):
    save_weights(srweb.create_model("espcn", 2), "espcn-x2.t")
    path = wdir / "espcn-x2.t.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_weights("espcn-x2.t")


def test_wrong_tensors_and_missing(wdir):
    from safetensors.torch import save_file

    save_weights(srweb.create_model("espcn", 2), "espcn-x2.t")
    save_file({"foo": torch.zeros(3)}, str(wdir / "espcn-x2.t.safetensors"))
    card = json.loads((wdir / "espcn-x2.t.json").read_text())
    card["sha256"] = ""
    (wdir / "espcn-x2.t.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="do not fit"):
        load_weights("espcn-x2.t")
    with pytest.raises(WeightsError, match="not found"):
        load_weights("nope-x2.t")


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/srweb-pwned",))


def test_pickle_posing_as_weights_is_never_executed(wdir, tmp_path):
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    with pytest.raises(WeightsError, match="refused"):
        import_pth(bad, "espcn", 2, "espcn-x2.evil")
    import os

    assert not os.path.exists("/tmp/srweb-pwned")
    # a pickle renamed .safetensors is just an unreadable file
    (wdir / "espcn-x2.evil.safetensors").write_bytes(pickle.dumps(_Evil()))
    save_weights(srweb.create_model("espcn", 2), "espcn-x2.ok")
    card = json.loads((wdir / "espcn-x2.ok.json").read_text())
    card.update(name="espcn-x2.evil", sha256="")
    (wdir / "espcn-x2.evil.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError):
        load_weights("espcn-x2.evil")


def test_import_foreign_pth(wdir, tmp_path):
    model = srweb.create_model("fsrcnn", 2)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "f.pth")
    card = import_pth(tmp_path / "f.pth", "fsrcnn", 2, "fsrcnn-x2.imported")
    assert card.num_params == count_params(model)


def test_shipped_cards_match_their_models():
    cards = list_weights()
    for card in cards:
        model, loaded = load_weights(card.name)
        assert loaded.num_params == count_params(model), card.name
        assert card.arch in srweb.list_models() and card.scale == model.scale
        prefix = "srgan" if card.training["config"].get("loss", "").startswith("srgan") else card.arch
        assert card.name == f"{prefix}-x{card.scale}.{card.name.split('.', 1)[1]}"
        set5 = card.metric("Set5")
        assert set5 is not None and set5["protocol"]["channel"] == "y", card.name
        assert set5["protocol"]["crop_border"] == card.scale
        assert card.training.get("config"), f"{card.name} card cannot reproduce its run"
        # a fresh Leaderboard shows the speed cards carry (srweb bench --store), matching the path timed
        speed = card.inference.get("speed") or {}
        assert speed.get("ms_per_mpix", 0) > 0, f"{card.name} card has no speed"
        if speed.get("backend"):  # the backend contest's winner (srweb.evaluation.backends_bench), with its processor
            winner = card.inference["backend"]
            assert speed["backend"] == f"{winner['name']}/{winner['precision']}" and speed["host"] == winner["host"]
            assert speed["ms_per_mpix"] == winner["ms_per_mpix"], card.name
            assert speed["fast_path"] == (speed["backend"] != "torch/fp32"), card.name
        else:  # from before backends: torch's path, as the guard chose it
            assert speed["fast_path"] == card.inference.get("fast_path_ok", True), card.name


@pytest.mark.skipif(not set5_present(), reason="Set5 is not beside the checkout")
@pytest.mark.parametrize("card", list_weights(), ids=lambda c: c.name)
def test_srweb_eval_reproduces_each_shipped_card(card, capsys):
    # The acceptance check: `srweb eval` on Set5 gives the card's PSNR within 0.01 dB. Cards hold
    # fp32 figures (the fast path's own delta is checked against its guard in test_bench.py).
    from srweb.cli import main

    assert (
        main(
            [
                "eval",
                "--weights",
                card.name,
                "--scale",
                str(card.scale),
                "--dataset",
                "Set5",
                "--json",
                "--no-store",
                "--precision",
                "fp32",
            ]
        )
        == 0
    )
    measured = json.loads(capsys.readouterr().out)
    assert abs(measured["psnr"] - card.metric("Set5")["psnr"]) <= 0.01, (measured["psnr"], card.metric("Set5"))


def test_markdown_table_shows_each_stage_with_its_data_and_the_paper_figure():
    from srweb.weights.files import WeightsCard
    from srweb.weights.table import card_markdown, markdown_table

    def training(iterations, data, seconds, loss="l2", parent=None):
        return {
            "config": {"data": data, "loss": loss, "iterations": iterations},
            "iterations": iterations,
            "data": data,
            "wall_seconds": seconds,
            **({"parent": {"training": parent}} if parent else {}),
        }

    fsrcnn = WeightsCard(
        name="fsrcnn-x3.a",
        arch="fsrcnn",
        scale=3,
        config={},
        input_kind="y",
        upsampling="post",
        num_params=1,
        training=training(2000, "General-100", 600, parent=training(4000, "sample", 300)),
        metrics=[{"dataset": "Set5", "scale": 3, "psnr": 32.514, "ssim": 0.9061}],
    )
    srgan = WeightsCard(
        name="srgan-x4.b",
        arch="srresnet",
        scale=4,
        config={},
        input_kind="rgb",
        upsampling="post",
        num_params=1,
        training=training(10, "General-100", 60, loss="srgan-mse"),
    )
    espcn = WeightsCard(
        name="espcn-x3.c",
        arch="espcn",
        scale=3,
        config={},
        input_kind="y",
        upsampling="post",
        num_params=1,
        training={
            **training(50, "General-100", 120, parent=training(20, "sample", 60)),
            "teacher": {"name": "edsr-baseline-x4.d", "sha256": "ab"},
        },
    )
    espcn.training["config"].update(teacher="edsr-baseline-x4.d", teacher_weight=0.25, ema=0.999)
    lines = markdown_table([fsrcnn, srgan, espcn], {3: 30.38}).splitlines()
    assert lines[2] == (
        "| fsrcnn-x3.a | paper | 4,000 sample + 2,000 General-100 | 15 min | 32.51 / 0.9061 | - | 33.06 | 30.38 / - |"
    )
    assert lines[3] == "| srgan-x4.b | paper | 10 General-100 | 1 min | - | - | 30.64 | - / - |"  # SRGAN-MSE, not 32.05
    assert lines[4] == (
        "| espcn-x3.c | paper | 20 sample + 50 General-100 (teacher edsr-baseline-x4.d) | 3 min | - | - "
        "| 33.00 | 30.38 / - |"
    )
    assert card_markdown(espcn).endswith(
        "2. 50 iterations on General-100 (loss l2, EMA 0.999, teacher edsr-baseline-x4.d weighted 0.25), 2 min"
    )


def test_equal_tensors_save_to_equal_bytes(wdir):
    # e.g. a run interrupted and resumed and the same run straight through: one sha256
    model = srweb.create_model("espcn", 2)
    digests = {save_weights(model, f"espcn-x2.copy{i}", weights_dir=wdir).sha256 for i in range(8)}
    assert len(digests) == 1


def test_a_missing_card_path_names_both_files(tmp_path):
    from srweb.weights.files import resolve_weights

    with pytest.raises(WeightsError, match=r"need both .*nosuch\.safetensors and .*nosuch\.json"):
        resolve_weights(tmp_path / "nosuch.json")
    for typo in (f"{tmp_path}/espcn-x2.general100.jsn", f"{tmp_path}/folder/"):
        with pytest.raises(WeightsError, match="a path must name an existing NAME.safetensors or NAME.json"):
            resolve_weights(typo)
