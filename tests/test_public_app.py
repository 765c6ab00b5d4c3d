"""Public mode (a Hugging Face Space) from a client's side: each gate of :mod:`srweb.access`.

One real app process runs with ``SRWEB_PUBLIC=1`` and an admin token. Every check goes through
the network the way a visitor could: ``gradio_client``, hand-made queue requests (which reach
events the client library hides) and plain HTTP for Gradio's file route.
"""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
from test_ui_train import form
from conftest import ADMIN_TOKEN, dependency_index, forged_png, queue_call
from PIL import Image

from srweb.config import PUBLIC_MAX_INPUT_PIXELS
from srweb.track import views

DENIED = "needs the admin token"


@pytest.fixture(scope="module")
def client(public_app_server, tmp_path_factory):
    from gradio_client import Client

    return Client(public_app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


def _image(path, width=40, height=32):
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    Image.fromarray(ramp).save(path)
    return path


def _upscale(client, path, weights):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), weights, None, api_name="/upscale")


def _form(**changes):
    """The Train form's values (test_ui_train's tiny espcn x2 job), on the CPU."""
    return form(**{"device": "cpu", **changes})


def _runs(server):
    return views.runs_frame(url=server.database_url)


def test_upscale_is_open_to_all(client, public_app_server, tmp_path):
    sr_path, _, report = _upscale(client, _image(tmp_path / "in.png"), public_app_server.weights_name)
    scale = public_app_server.scale
    assert Image.open(sr_path).size == (40 * scale, 32 * scale) and "40x32" in report


def test_batches_and_comparisons_are_open_to_all_within_the_public_limits(client, public_app_server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    one = handle_file(str(_image(tmp_path / "one.png")))
    zip_file, report = client.predict([one, one], public_app_server.weights_name, False, 0, api_name="/upscale_batch")
    assert "2 of 2 images upscaled" in report and zip_file
    with pytest.raises(AppError, match="21 images: a batch takes at most 20"):
        client.predict([one] * 21, public_app_server.weights_name, False, 0, api_name="/upscale_batch")
    scale = public_app_server.scale
    table, figure, report = client.predict(
        handle_file(str(_image(tmp_path / "hr.png", 64, 48))),
        scale,
        [public_app_server.weights_name, f"bicubic-x{scale}"],
        -1,
        -1,
        16,
        2,
        False,
        api_name="/compare",
    )
    assert {row[0] for row in table["data"]} == {public_app_server.weights_name, "bicubic"}
    with pytest.raises(AppError, match="'/etc/passwd' .* is not in the list of choices"):  # no server paths
        client.predict(
            handle_file(str(tmp_path / "hr.png")), scale, ["/etc/passwd"], -1, -1, 16, 2, False, api_name="/compare"
        )


def test_training_needs_the_admin_token(client, public_app_server):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=f"{DENIED}.*got no admin token"):
        client.predict(*_form(), api_name="/train_launch")  # the token input left at its default ""
    with pytest.raises(AppError, match=f"{DENIED}.*got a wrong admin token"):
        client.predict(*_form(), ADMIN_TOKEN + "x", api_name="/train_launch")
    with pytest.raises(AppError, match=DENIED):  # any server folder as training data: refused before it is read
        client.predict(*_form(data_path="/etc"), "", api_name="/train_launch")
    assert _runs(public_app_server).empty

    message = client.predict(*_form(), ADMIN_TOKEN, api_name="/train_launch")[0]
    run_id = int(re.fullmatch(r"Queued run #(\d+)\.", message).group(1))
    for api_name in ("/train_cancel", "/train_resume"):
        with pytest.raises(AppError, match=DENIED):
            client.predict(run_id, "wrong", api_name=api_name)
    assert views.run_details(run_id, url=public_app_server.database_url)["status"] == "queued"
    assert client.predict(run_id, ADMIN_TOKEN, api_name="/train_cancel")[0] == f"Run #{run_id}: cancelled."
    assert views.run_details(run_id, url=public_app_server.database_url)["status"] == "cancelled"
    # Deleting it: the token again (the API passes the browser's confirmation as True).
    with pytest.raises(AppError, match=DENIED):
        client.predict(run_id, True, "wrong", api_name="/runs_delete")
    assert views.run_details(run_id, url=public_app_server.database_url)["status"] == "cancelled"
    message = client.predict(run_id, True, ADMIN_TOKEN, api_name="/runs_delete")[0]
    assert message.startswith(f"Run {run_id} deleted") and _runs(public_app_server).empty


def test_export_and_evaluation_need_the_admin_token(client, public_app_server):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=DENIED):
        client.predict(1, "", api_name="/runs_export")
    # The Evaluate event is hidden from API clients, not from a hand-made queue request: the
    # handler itself refuses.
    evaluate = dependency_index(public_app_server.url, "on_evaluate")
    refused = queue_call(public_app_server.url, evaluate, ["bicubic-x2", "sample", False, "all", "all", ""])
    assert refused["success"] is False and DENIED in refused["output"]["error"]
    # A server path as the benchmark: refused (Gradio checks dropdown values against the choices
    # before the handler runs; the gate would refuse it next).
    refused = queue_call(public_app_server.url, evaluate, ["bicubic-x2", "/etc", False, "all", "all", "nope"])
    assert refused["success"] is False and "/etc is not in the list of choices" in refused["output"]["error"]
    started = queue_call(
        public_app_server.url, evaluate, ["bicubic-x2", "sample", False, "all", "all", ADMIN_TOKEN], first_only=True
    )
    assert "Evaluating bicubic x2 on sample" in str(started["output"]["data"][0])


def test_listing_and_leaderboard_stay_open(client):
    assert client.predict(api_name="/leaderboard")[0] is not None
    assert client.predict("any", "any", "any", "", "created", True, api_name="/runs_list")[0] is not None


def _file(server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}gradio_api/file={path}", timeout=30)


@pytest.mark.parametrize(
    "target",
    ["/etc/passwd", "database", "database-wal", "weights", "card", "repo-app", "repo-readme", "state-dir", "traversal"],
)
def test_server_files_are_not_served(public_app_server, target):
    from srweb.config import REPO_ROOT

    server = public_app_server
    db = server.database_url.removeprefix("sqlite:///")
    path = {
        "/etc/passwd": "/etc/passwd",
        "database": db,
        "database-wal": db + "-wal",
        "weights": str(server.weights_dir / f"{server.weights_name}.safetensors"),
        "card": str(server.weights_dir / f"{server.weights_name}.json"),
        "repo-app": str(REPO_ROOT / "app.py"),
        "repo-readme": str(REPO_ROOT / "README.md"),
        "state-dir": str(server.state_dir),
        "traversal": "../../../../../../etc/passwd",
    }[target]
    response = _file(server, path)
    assert response.status_code in (403, 404), (path, response.status_code)
    assert "root:" not in response.text and "SQLite format" not in response.text


def test_only_outputs_and_examples_are_served(client, public_app_server, tmp_path):
    sr_path, _, _ = _upscale(client, _image(tmp_path / "in.png"), public_app_server.weights_name)
    config = httpx.get(public_app_server.url + "config", timeout=30).json()
    examples = [c for c in config["components"] if c.get("type") == "dataset"]
    samples = [cell for c in examples for row in c["props"].get("samples") or [] for cell in row]
    paths = [s["path"] for s in samples if isinstance(s, dict) and s.get("path")]
    assert paths, "the Upscale tab has example images"
    for path in paths[:2]:
        assert _file(public_app_server, path).status_code == 200, path
    # The app's own outputs live in Gradio's cache and are served: the client fetched the SR
    # PNG and the leaderboard CSV through the file route.
    csv_path = client.predict("all", "all", api_name="/leaderboard")[4]
    assert Image.open(sr_path).format == "PNG" and open(csv_path).readline().startswith("weights")


def test_upscale_refuses_a_server_path_as_input(public_app_server):
    upscale = dependency_index(public_app_server.url, "upscale")
    for path in ("/etc/passwd", public_app_server.database_url.removeprefix("sqlite:///")):
        payload = {"path": path, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}
        result = queue_call(public_app_server.url, upscale, [payload, public_app_server.weights_name, None])
        assert result["success"] is False, result


def test_too_large_images_are_refused_with_a_clear_message(client, public_app_server, tmp_path):
    from gradio_client.exceptions import AppError

    weights = public_app_server.weights_name
    over = forged_png(tmp_path / "big.png", 2500, 2000)  # 5 MP: over the public 4 MP limit, header only
    with pytest.raises(AppError, match=rf"5,000,000 pixels exceeds the limit of {PUBLIC_MAX_INPUT_PIXELS:,}"):
        _upscale(client, over, weights)
    with pytest.raises(AppError, match="too large"):
        _upscale(client, forged_png(tmp_path / "bomb.png", 30000, 30000), weights)
    # Uploads over the size limit (20 MB in public mode) are cut off by the upload route itself.
    blob = tmp_path / "huge.png"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024))
    with open(blob, "rb") as fh:
        response = httpx.post(
            public_app_server.url + "gradio_api/upload", files={"files": ("huge.png", fh)}, timeout=60
        )
    assert response.status_code == 413 and "maximum allowed size" in response.text
    sr_path, _, _ = _upscale(client, _image(tmp_path / "ok.png"), weights)  # still serving
    assert Image.open(sr_path).size[0] == 40 * public_app_server.scale


def test_an_oversized_reference_is_refused_from_its_header(client, public_app_server, tmp_path):
    """The HR reference must match the output; a larger one is refused before decoding (a 9000x9000
    header, under PIL's own bomb limit, would otherwise make the server allocate ~240 MB)."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    scale = public_app_server.scale
    side = 40 * scale
    with pytest.raises(AppError, match=f"^ref.png: 9000x9000 .* the limit of {side * 32 * scale:,}"):
        client.predict(
            handle_file(str(_image(tmp_path / "in.png"))),
            public_app_server.weights_name,
            handle_file(str(forged_png(tmp_path / "ref.png", 9000, 9000))),
            api_name="/upscale",
        )
