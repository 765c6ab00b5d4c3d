"""The real app in headless Chromium: upscale, bad uploads, a short training job, the runs table."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srweb.track import views
from srweb.weights.files import list_weights

pytestmark = pytest.mark.browser

TRAIN_TIMEOUT_MS = 150_000


def make_image(path, width: int = 40, height: int = 30):
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    Image.fromarray(ramp).save(path)
    return path


ROWS_JS = """(id) => {
    const rows = {};
    document.querySelectorAll(`#${id} [data-testid^="cell-"]`).forEach((cell) => {
        const [, r, c] = cell.dataset.testid.split("-");
        (rows[r] ||= [])[Number(c)] = cell.innerText.trim();
    });
    return Object.keys(rows).sort((a, b) => a - b).map((r) => rows[r]);
}"""


def table_rows(page, elem_id: str) -> list[list[str]]:
    """Cell texts of a gr.Dataframe, row by row (cells are ``[data-testid=cell-ROW-COL]``)."""
    return page.evaluate(ROWS_JS, elem_id)


def wait_for_row(page, elem_id: str, run_id: int, text: str, timeout: float = TRAIN_TIMEOUT_MS) -> None:
    """Wait until the table shows a row for ``run_id`` with a cell equal to ``text``."""
    page.wait_for_function(
        f"([id, runId, text]) => ({ROWS_JS})(id).some((r) => r[0] === String(runId) && r.includes(text))",
        arg=[elem_id, run_id, text],
        timeout=timeout,
    )


def toast_texts(page, kind: str = "error") -> list[str]:
    return page.locator(f".toast-body.{kind}").all_inner_texts()


def open_accordion(page, label: str, inside: str) -> None:
    """Click an accordion's label until ``inside`` shows (a click before the page's scripts are live is lost)."""
    for _ in range(5):
        page.get_by_text(label).first.click()
        try:
            page.locator(inside).wait_for(state="visible", timeout=4_000)
            return
        except Exception:  # playwright's TimeoutError: click again
            continue
    raise AssertionError(f"accordion {label!r} does not open")


def upload(page, path) -> None:
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_function(
        "(name) => Array.from(document.images).some((i) => i.src.includes(name))", arg=path.stem, timeout=20_000
    )


def test_upscale_in_the_browser(browser_page, app_server, screenshot, tmp_path):
    page, scale = browser_page, app_server.scale
    open_accordion(page, "About this model", "#model-about")  # the picked entry's card, readable
    page.wait_for_function(
        "(name) => document.querySelector('#model-about').innerText.includes(name)", arg=app_server.weights_name
    )
    assert "parameters" in page.locator("#model-about").inner_text()
    page.locator("#onnx-button").click()  # the picked model as an ONNX file
    page.locator("#onnx-file a[download]").wait_for(timeout=60_000)
    onnx_bytes = page.request.get(page.locator("#onnx-file a[download]").get_attribute("href")).body()
    assert app_server.weights_name.encode() in onnx_bytes  # its metadata names the weights
    upload(page, make_image(tmp_path / "srweb-input.png", 40, 30))
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function(
        "() => { const imgs = Array.from(document.querySelectorAll('#sr-slider img'));"
        " return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth); }",
        timeout=60_000,
    )
    sizes = page.evaluate(
        "() => Array.from(document.querySelectorAll('#sr-slider img')).map((i) => [i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [[40 * scale, 30 * scale]] * 2  # bicubic and SR, both upscaled
    report = page.locator("#upscale-report").inner_text()
    assert f"40x30 RGB → {40 * scale}x{30 * scale}" in report
    link = page.locator("#sr-download a[download]")
    assert link.get_attribute("download").endswith(".png")
    body = page.request.get(link.get_attribute("href")).body()
    with Image.open(io.BytesIO(body)) as sr:
        assert (sr.format, sr.size) == ("PNG", (40 * scale, 30 * scale))
    screenshot(page, "upscale")

    page.locator("#self-ensemble input[type=checkbox]").check()
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#upscale-report').innerText.includes('self-ensemble')", timeout=60_000
    )
    assert page.locator("#sr-download a[download]").get_attribute("download") == f"{app_server.weights_name}+.png"


def test_a_sixteen_bit_colour_upload_downloads_with_all_its_bits(browser_page, app_server, tmp_path):
    import cv2

    page, scale = browser_page, app_server.scale
    deep = np.linspace(0, 65535, 32 * 24 * 3).reshape(24, 32, 3).astype(np.uint16)  # low bytes vary too
    path = tmp_path / "srweb-deep.png"
    cv2.imwrite(str(path), deep)
    upload(page, path)
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function(
        "() => document.querySelector('#upscale-report').innerText.includes('RGB 16-bit')", timeout=60_000
    )
    body = page.request.get(page.locator("#sr-download a[download]").get_attribute("href")).body()
    sr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    assert sr.dtype == np.uint16 and sr.shape == (24 * scale, 32 * scale, 3) and (sr % 257).any()


def test_a_batch_in_the_browser_gives_one_zip_and_a_line_per_file(browser_page, app_server, tmp_path):
    import zipfile

    page, scale = browser_page, app_server.scale
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    files = [make_image(tmp_path / "one.png", 24, 16), tmp_path / "broken.png", make_image(tmp_path / "two.png", 10, 8)]
    open_accordion(page, "Batch: many images into one ZIP", "#batch-button")
    page.locator("#batch-files input[type=file]").set_input_files([str(f) for f in files])
    # each name is listed as stem and extension in separate elements: "two\n.png" in innerText on a narrow row
    page.wait_for_function(
        "() => document.querySelector('#batch-files').innerText.replace(/\\s/g, '').includes('two.png')", timeout=30_000
    )
    page.locator("#batch-button").click()
    page.wait_for_function(
        "() => document.querySelector('#batch-report').innerText.includes('images upscaled')", timeout=60_000
    )
    report = page.locator("#batch-report").inner_text()
    assert "2 of 3 images upscaled" in report and "broken.png: not a readable image" in report
    body = page.request.get(page.locator("#batch-download a[download]").get_attribute("href")).body()
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert sorted(zf.namelist()) == ["one.png", "two.png"]
        with Image.open(io.BytesIO(zf.read("one.png"))) as one:
            assert one.size == (24 * scale, 16 * scale)


def test_compare_methods_on_an_hr_image_in_the_browser(browser_page, app_server, tmp_path, screenshot):
    page = browser_page
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-image input[type=file]").set_input_files(str(make_image(tmp_path / "hr.png", 64, 48)))
    page.wait_for_function("() => Array.from(document.images).some((i) => i.src.includes('hr'))", timeout=20_000)
    page.locator("#compare-scale").get_by_text(str(app_server.scale), exact=True).click()
    page.wait_for_function(
        "([name, other]) => { const t = document.querySelector('#compare-methods').innerText;"
        " return t.includes(name) && !t.includes(other); }",
        arg=[app_server.weights_name, f"bicubic x{4 if app_server.scale != 4 else 2}"],
    )
    page.locator("#compare-size input").fill("32")
    page.locator("#compare-button").click()
    page.wait_for_function(
        "() => document.querySelector('#compare-report').innerText.includes('mod-cropped')", timeout=60_000
    )
    rows = table_rows(page, "compare-table")
    assert {row[0] for row in rows} == {"bicubic", app_server.weights_name}  # every method of the scale
    assert all(float(row[1]) > 15 for row in rows)
    page.wait_for_function(
        "() => { const i = document.querySelector('#compare-figure img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    width = page.evaluate("() => document.querySelector('#compare-figure img').naturalWidth")
    assert width >= (len(rows) + 1) * (64 + 4) - 4  # each method and HR, 32 px crops at zoom 2
    screenshot(page, "compare")


def test_bad_uploads_show_an_error_toast_and_the_app_keeps_serving(browser_page, app_server, tmp_path):
    page = browser_page
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.locator("input[type=file]").first.set_input_files(str(text))
    page.wait_for_selector(".toast-body.error")
    assert any("notes.txt" in t for t in toast_texts(page))

    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    page.locator("input[type=file]").first.set_input_files(str(corrupt))
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.toast-body.error'))"
        ".some((t) => t.innerText.includes('broken.png is not a readable image'))"
    )

    page.reload()  # the server is still fine: a real image goes through
    page.wait_for_selector("#sr-slider", state="attached")
    upload(page, make_image(tmp_path / "srweb-after.png", 24, 20))
    page.get_by_role("button", name="Upscale", exact=True).click()
    page.wait_for_function("() => document.querySelectorAll('#sr-slider img').length === 2", timeout=60_000)


def fill_form(page, **numbers) -> None:
    for elem_id, value in numbers.items():
        page.locator(f"#train-{elem_id} input").fill(str(value))


def test_train_job_in_the_browser_then_runs_tab(browser_page, app_server, screenshot):
    page, db = browser_page, app_server.database_url
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-launch")
    fill_form(page, patch=17, batch=4, iterations=30, **{"val-interval": 10, "lr": -1})

    page.locator("#train-launch").click()  # invalid: the reason shows, nothing is queued
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.toast-body.error'))"
        ".some((t) => t.innerText.includes('lr must be > 0'))"
    )
    runs_before = len(views.runs_frame(url=db))

    fill_form(page, lr=0.001, ema=0.9)  # with a moving average, distilled from a shipped model
    page.locator("#train-teacher input").click()
    page.get_by_role("option", name=app_server.weights_name, exact=True).click()  # the app's one entry
    page.locator("#train-launch").dblclick()  # a double click queues one run
    page.wait_for_function("() => /Queued run #\\d+/.test(document.querySelector('#train-status').innerText)")
    run_id = int(re.search(r"#(\d+)", page.locator("#train-status").inner_text()).group(1))
    page.wait_for_timeout(1500)
    assert len(views.runs_frame(url=db)) == runs_before + 1
    config = views.run_details(run_id, url=db)["config"]
    assert (config["ema"], config["teacher"], config["teacher_weight"]) == (0.9, app_server.weights_name, 0.5)

    page.wait_for_function(
        "() => document.querySelectorAll('#train-plot .scatterlayer .trace').length > 0", timeout=TRAIN_TIMEOUT_MS
    )  # live curve while it trains
    wait_for_row(page, "train-jobs", run_id, "finished")
    page.wait_for_function("() => document.querySelectorAll('#train-plot .scatterlayer .trace').length >= 2")
    assert "30/30" in [row[3] for row in table_rows(page, "train-jobs") if row[0] == str(run_id)]
    assert page.locator("#train-log textarea").input_value().strip()
    screenshot(page, "train")

    page.locator("#train-cancel").click()  # cancelling a finished run: a warning, nothing changes
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.toast-body.warning'))"
        ".some((t) => t.innerText.includes('already finished'))"
    )
    assert views.run_details(run_id, url=db)["status"] == "finished"

    page.get_by_role("tab", name="Runs").click()
    wait_for_row(page, "runs-table", run_id, "finished", timeout=20_000)
    row = next(r for r in table_rows(page, "runs-table") if r[0] == str(run_id))
    assert row[2:5] == ["espcn", "2", "finished"] and row[8] == "cpu"
    index = [r[0] for r in table_rows(page, "runs-table")].index(str(run_id))
    page.locator(f"#runs-table [data-testid='cell-{index}-1']").click()  # overlay it and show its config
    page.wait_for_function("() => document.querySelectorAll('#runs-plot .scatterlayer .trace').length >= 2")
    page.wait_for_function("() => document.querySelector('#runs-config').innerText.includes('val_interval')")
    page.locator("#runs-export").click()
    page.wait_for_function("() => document.querySelector('#runs-action-status').innerText.includes('Exported run')")
    name = re.search(r"as (\S+);", page.locator("#runs-action-status").inner_text()).group(1)
    assert name in {c.name for c in list_weights(app_server.state_dir / "db" / "weights")}  # not in shipped
    assert name not in {c.name for c in list_weights(app_server.weights_dir)}
    screenshot(page, "runs")

    page.get_by_role("tab", name="Upscale").click()  # the exported weights are in the model list
    page.locator("input[aria-label='Model (weights)']").click()
    page.get_by_role("option").filter(has_text=name).first.wait_for()

    # Deleting the run: the browser asks first; "Cancel" keeps it, "OK" removes it and its folder.
    page.get_by_role("tab", name="Runs").click()
    folder = Path(views.run_details(run_id, url=db)["run_dir"])
    answers = iter([False, True])
    page.on("dialog", lambda dialog: dialog.accept() if next(answers) else dialog.dismiss())
    page.locator("#runs-delete").click()
    page.wait_for_timeout(1500)
    assert views.run_details(run_id, url=db)["status"] == "finished" and folder.is_dir()
    page.locator("#runs-delete").click()
    page.wait_for_function("() => document.querySelector('#runs-action-status').innerText.includes('deleted')")
    assert f"Run {run_id} deleted with its folder." in page.locator("#runs-action-status").inner_text()
    page.wait_for_function(f"() => !({ROWS_JS})('runs-table').some((r) => r[0] === '{run_id}')")
    assert not folder.exists() and name in {c.name for c in list_weights(app_server.state_dir / "db" / "weights")}
