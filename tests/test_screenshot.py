"""The README's screenshot, made from the real app in headless Chromium: a photo upscaled on the slider.

`make screenshots` writes it to docs/screenshot.png (``SRWEB_SCREENSHOT``); in the suite it goes to
test-artifacts/, and the test checks what the picture must show.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import skimage
from PIL import Image

pytestmark = pytest.mark.browser

SLIDER_READY = (
    "() => { const imgs = Array.from(document.querySelectorAll('#sr-slider img'));"
    " return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth); }"
)


def _photo(path: Path, scale: int) -> Path:
    """scikit-image's cat photo, reduced by ``scale`` so the upscale comes back to about its size."""
    with Image.open(Path(skimage.__file__).parent / "data" / "chelsea.png") as img:
        img.convert("RGB").reduce(scale).save(path)
    return path


def test_screenshot_of_an_upscale_on_the_slider(browser_page, app_server, artifacts, tmp_path):
    page, scale = browser_page, app_server.scale
    photo = _photo(tmp_path / "cat.png", scale)
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function(SLIDER_READY, timeout=60_000)
    report = page.locator("#upscale-report").inner_text()
    assert app_server.weights_name in report or f"x{scale}" in report
    target = Path(os.environ.get("SRWEB_SCREENSHOT") or artifacts / "readme-screenshot.png")
    page.screenshot(path=str(target), full_page=False)
    with Image.open(target) as shot:
        assert shot.size == (1400, 1100) and shot.convert("L").getextrema()[1] > 0
