"""The running app through ``gradio_client``: /upscale, bad input, and latency while a job trains."""

from __future__ import annotations

import json
import re
import statistics
import time

import numpy as np
import pytest
from PIL import Image

from srweb.track import views


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):
    from gradio_client import Client

    return Client(app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def make_image(path, width: int, height: int):
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    Image.fromarray(ramp).save(path)
    return path


def upscale(client, path, weights: str, *optional):
    """``optional``, in order: self-ensemble, compare with, output scale."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), weights, None, *optional, api_name="/upscale")


def test_upscale_returns_png_of_input_times_scale(client, app_server, tmp_path):
    src = make_image(tmp_path / "in.png", 48, 40)
    sr_path, slider, report = upscale(client, src, app_server.weights_name)
    with Image.open(sr_path) as sr:
        assert sr.format == "PNG"
        assert sr.size == (48 * app_server.scale, 40 * app_server.scale)
    assert len(slider) == 2 and "48x40" in report
    sr_path, _, report = upscale(client, src, app_server.weights_name, False, "bicubic", 1.5)
    with Image.open(sr_path) as sr:
        assert sr.size == (72, 60) and "resized to x1.5" in report


def test_upscale_compares_with_any_entry_of_the_models_scale(client, app_server, tmp_path):
    from gradio_client.exceptions import AppError

    # The dropdown starts with the default model's scale; API callers may name any entry, and the
    # handler (not Gradio's list check) decides.
    scale, src = app_server.scale, make_image(tmp_path / "in.png", 24, 20)
    _, slider, report = upscale(client, src, app_server.weights_name, False, f"nearest-x{scale}")
    assert len(slider) == 2 and "Slider: nearest ◀" in report
    other = 3 if scale != 3 else 2
    with pytest.raises(AppError, match="compare entries of one scale"):
        upscale(client, src, app_server.weights_name, False, f"nearest-x{other}")
    with pytest.raises(AppError, match="nope-x2.missing"):
        upscale(client, src, app_server.weights_name, False, "nope-x2.missing")


def test_bad_input_is_an_error_and_the_app_keeps_answering(client, app_server, tmp_path):
    from gradio_client.exceptions import AppError

    src = make_image(tmp_path / "in.png", 32, 32)
    with pytest.raises(AppError, match="nope-x2.missing"):
        upscale(client, src, "nope-x2.missing")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(AppError, match="not a readable image"):
        upscale(client, corrupt, app_server.weights_name)
    sr_path, _, _ = upscale(client, src, app_server.weights_name)
    assert Image.open(sr_path).size == (32 * app_server.scale, 32 * app_server.scale)


def test_upscale_batch_returns_one_zip_as_the_readme_shows(client, app_server, tmp_path):
    import zipfile

    from gradio_client import handle_file

    files = [make_image(tmp_path / "a.png", 16, 12), make_image(tmp_path / "b.png", 8, 8)]
    zip_file, report = client.predict(
        [handle_file(str(f)) for f in files], app_server.weights_name, False, 0, api_name="/upscale_batch"
    )
    assert "2 of 2 images upscaled" in report
    with zipfile.ZipFile(zip_file) as zf:
        assert sorted(zf.namelist()) == ["a.png", "b.png"]


def test_onnx_of_the_picked_model_and_no_export_of_a_baseline_or_a_path(client, app_server):
    import onnx
    from gradio_client.exceptions import AppError

    path = client.predict(app_server.weights_name, api_name="/onnx")
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert props["srweb.name"] == app_server.weights_name
    for bad, message in [("bicubic-x2", "not a network"), ("../weights/x", "unknown weights")]:
        with pytest.raises(AppError, match=message):
            client.predict(bad, api_name="/onnx")


def _val_set() -> str:
    return "Set5"  # built in: there on a fresh install


def _timed_upscale(client, path, weights) -> float:
    started = time.perf_counter()
    upscale(client, path, weights)
    return time.perf_counter() - started


@pytest.mark.slow
def test_upscale_stays_responsive_while_a_job_trains(client, app_server, tmp_path, capsys, artifacts):
    """Latency of /upscale (128x96 input) idle vs. while a background job trains; the job is then cancelled."""
    src = make_image(tmp_path / "in.png", 128, 96)
    weights = app_server.weights_name
    _timed_upscale(client, src, weights)  # warm the model cache
    idle = [_timed_upscale(client, src, weights) for _ in range(3)]

    form = [
        "espcn",
        2,
        "sample",
        "",
        _val_set(),
        17,
        4,
        40,
        1e-3,
        "adam",
        "constant",
        "l2",
        "auto",
        "cpu",
        20,
        "none",
        False,
        0.0,
        "none",
        0.5,
        False,
    ]
    message = client.predict(*form, api_name="/train_launch")[0]
    run_id = int(re.search(r"#(\d+)", message).group(1))
    db = app_server.database_url

    busy: list[tuple[float, int]] = []  # (seconds, training step when asked)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        run = views.run_details(run_id, url=db)
        if run["status"] not in ("queued", "running"):
            break
        if run["status"] == "running":
            busy.append((_timed_upscale(client, src, weights), run["step"]))
            if sum(step > 0 for _, step in busy) >= 3:
                break
        else:
            time.sleep(0.3)
    from gradio_client import Client  # a fresh session: the run picker takes any id, not only listed ones

    cancel_message = Client(app_server.url, verbose=False).predict(run_id, api_name="/train_cancel")[0]
    while views.run_details(run_id, url=db)["status"] in ("queued", "running") and time.monotonic() < deadline + 30:
        time.sleep(0.5)
    final = views.run_details(run_id, url=db)

    training = [s for s, step in busy if step > 0] or [s for s, _ in busy]
    result = {
        "idle_s": [round(s, 3) for s in idle],
        "while_training_s": [round(s, 3) for s, _ in busy],
        "steps_when_asked": [step for _, step in busy],
        "idle_median_s": round(statistics.median(idle), 3),
        "training_median_s": round(statistics.median(training), 3) if training else None,
        "training_max_s": round(max(training), 3) if training else None,
        "run_status": final["status"],
        "cancel": cancel_message,
    }
    (artifacts / "latency.json").write_text(json.dumps(result, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\n/upscale latency 128x96 -> x2: idle median {result['idle_median_s']} s; while training "
            f"median {result['training_median_s']} s, max {result['training_max_s']} s "
            f"({len(busy)} requests at steps {result['steps_when_asked']}); run ended {final['status']}"
        )
    assert busy, f"the job never ran: {final}"
    assert max(s for s, _ in busy) < 15.0
    assert final["status"] in ("cancelled", "finished")
    assert _timed_upscale(client, src, weights) < 15.0  # still answering afterwards
