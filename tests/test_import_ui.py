"""Upscale tab, "Bring your own model": the handler, the public-mode gate, and the upload in headless
Chromium against its own app (a model file in, the new entry picked and upscaling)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from srweb.config import get_settings
from srweb.ui.admin import admin_only
from srweb.ui.import_model import ACTION, import_upload
from srweb.weights.files import list_weights


def compact_file(path, upscale: int = 2):
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    torch.save(Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=upscale).state_dict(), path)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    from srweb.weights import importer

    monkeypatch.setattr(importer, "pick_precision", lambda device, requested="auto": "fp32")  # no guard run
    monkeypatch.setenv("SRWEB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SRWEB_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("SRWEB_DATA_ROOT", str(tmp_path / "no-data"))
    for name in ("SRWEB_DATABASE_URL", "SRWEB_USER_WEIGHTS_DIR", "SRWEB_PUBLIC", "SPACE_ID", "SRWEB_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_the_handler_imports_and_picks_the_new_entry(env):
    report, dropdown = import_upload(str(compact_file(env / "realesr-tiny.pth")), "", "", "https://x.org", "MIT")
    assert "Imported **compact-x2.realesr-tiny**: Compact x2" in report and "licence" not in report
    assert dropdown.value == "compact-x2.realesr-tiny"
    assert "compact-x2.realesr-tiny" in {value for _, value in dropdown.choices}


def test_the_handler_refuses_bad_files_in_one_line_naming_the_upload(env):
    upload = env / "upload-dir" / "broken.pth"
    upload.parent.mkdir()
    upload.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(
        gr.Error,
        match=r"broken\.pth: corrupt or truncated model file \(PytorchStreamReader failed reading zip archive: not a ZIP archive\)",
    ):
        import_upload(str(upload), "", "", "", "")
    with pytest.raises(gr.Error, match="Upload a model file"):
        import_upload(None, " ", "", "", "")
    assert list_weights() == []


@pytest.mark.parametrize("key", ["esrgan", "compact", "swinir", "span"])
def test_each_tested_architecture_upscales_in_the_app_after_an_upload(env, key):
    from test_importer import ARCHES, build_networks

    from srweb.ui import upscale

    path = env / f"{key}.pth"
    torch.save(build_networks()[key].state_dict(), path)
    _, dropdown = import_upload(str(path), "", "", "", "")
    arch, scale = ARCHES[key]
    assert dropdown.value == f"{arch.lower()}-x{scale}.{key}"
    assert f"{arch} · x{scale} · {dropdown.value} · imported community model" in {
        label for label, _ in upscale.weights_choices()
    }
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (18, 21, 3), dtype=np.uint8))
    result = upscale.upscale_image(picture, dropdown.value)
    assert result.sr.size == (21 * scale, 18 * scale) and result.reference_name == "bicubic"
    assert "Imported" in upscale.about_weights(dropdown.value)


def test_public_mode_needs_the_admin_token(env, monkeypatch):
    monkeypatch.setenv("SRWEB_PUBLIC", "1")
    monkeypatch.setenv("SRWEB_ADMIN_TOKEN", "secret-token")
    get_settings.cache_clear()
    gated = admin_only(import_upload, ACTION)
    path = str(compact_file(env / "m.pth"))
    with pytest.raises(gr.Error, match="Importing a model needs the admin token"):
        gated(path, "", "", "", "", "")
    assert list_weights() == []
    report, _ = gated(path, "", "", "", "", "secret-token")
    assert "Imported" in report


@pytest.mark.browser
def test_upload_a_model_in_the_browser_then_upscale_with_it(browser, tmp_path, screenshot):
    from conftest import running_app

    model = compact_file(tmp_path / "realesr-tiny.pth", upscale=4)
    picture = tmp_path / "srweb-byom.png"
    Image.fromarray(np.linspace(0, 255, 24 * 20 * 3).reshape(20, 24, 3).astype(np.uint8)).save(picture)
    with running_app(tmp_path / "app", artifact="byom-app.log") as server:
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.set_default_timeout(30_000)
        page.goto(server.url)
        page.wait_for_selector("#sr-slider", state="attached")
        for _ in range(10):  # a click before the page's scripts are live is lost; a second one would close it
            if page.locator("#import-button").is_visible():
                break
            page.get_by_text("Bring your own model").first.click()
            page.wait_for_timeout(1_500)
        else:
            raise AssertionError("the Bring your own model section does not open")
        page.locator("#import-file input[type=file]").set_input_files(str(model))
        page.wait_for_function("() => document.querySelector('#import-file').innerText.includes('realesr-tiny')")
        page.locator("#import-license input, #import-license textarea").first.fill("MIT")
        page.locator("#import-button").click()
        page.wait_for_function(
            "() => document.querySelector('#import-report').innerText.includes('Imported')", timeout=90_000
        )
        assert "compact-x4.realesr-tiny" in page.locator("#import-report").inner_text()
        screenshot(page, "import-model")

        page.locator("input[type=file]").first.set_input_files(str(picture))  # the entry is now picked
        page.wait_for_function(
            "(n) => Array.from(document.images).some((i) => i.src.includes(n))", arg=picture.stem, timeout=20_000
        )
        page.get_by_role("button", name="Upscale", exact=True).click()
        page.wait_for_function(
            "() => document.querySelector('#upscale-report').innerText.includes('→')", timeout=60_000
        )
        assert "24x20 RGB → 96x80" in page.locator("#upscale-report").inner_text()
        assert page.locator("#sr-download a[download]").get_attribute("download") == "compact-x4.realesr-tiny.png"

        bad = tmp_path / "evil.pth"
        bad.write_bytes(b"\x80\x04\x95 garbage")  # the app answers in one line and keeps serving
        page.locator("#import-file button[aria-label*='lear']").first.click()  # remove the file shown
        page.locator("#import-file input[type=file]").set_input_files(str(bad))
        page.locator("#import-button").click()
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.toast-body.error'))"
            ".some((t) => t.innerText.includes('evil.pth: corrupt, or not a plain weights pickle'))"
        )
        assert server.alive()


def test_the_public_app_refuses_an_import_without_the_admin_token(public_app_server, tmp_path):
    from conftest import ADMIN_TOKEN
    from gradio_client import Client, handle_file

    client = Client(public_app_server.url, verbose=False, download_files=str(tmp_path / "dl"))
    model = handle_file(str(compact_file(tmp_path / "public-tiny.pth")))
    for token in ("", ADMIN_TOKEN + "x"):
        with pytest.raises(Exception, match="Importing a model needs the admin token"):
            client.predict(model, "", "", "", "", token, api_name="/import_model")
    assert not any(
        p.name.startswith("compact-x2.public-tiny") for p in (public_app_server.state_dir / "db" / "weights").glob("*")
    )
    report, _ = client.predict(model, "", "", "", "", ADMIN_TOKEN, api_name="/import_model")
    assert "Imported **compact-x2.public-tiny**" in report
