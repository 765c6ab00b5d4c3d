"""A fresh clone's app: nothing but the repository (an empty data root), a start-up log without
warnings, and the Train form's defaults (data ``sample``, validation the built-in ``Set5``)
launching a run that finishes, called through the app's API as a client would."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from conftest import running_app
from srweb.track import views
from srweb.ui.train import FIELDS

ELEM_IDS = {"patch_size": "train-patch", "batch_size": "train-batch"}  # the others: train-<field-with-dashes>


def form_defaults(url: str) -> dict:
    """The Train form's values as the app serves them (its /config), by field name."""
    config = httpx.get(url + "config", timeout=30).json()
    by_id = {
        c["props"]["elem_id"]: c["props"].get("value")
        for c in config["components"]
        if c.get("props", {}).get("elem_id")
    }
    return {name: by_id[ELEM_IDS.get(name, "train-" + name.replace("_", "-"))] for name in FIELDS}


@pytest.mark.slow
def test_fresh_install_starts_clean_and_the_train_defaults_finish(tmp_path):
    from gradio_client import Client

    empty = tmp_path / "data"
    empty.mkdir()
    with running_app(tmp_path / "app", {"SRWEB_DATA_ROOT": str(empty)}, artifact="fresh-install-app.log") as server:
        values = form_defaults(server.url)
        assert (values["data"], values["val_data"]) == ("sample", "Set5")
        # The defaults train for hours; the same form with a short run (and a batch the CPU keeps up with).
        values.update(iterations=20, val_interval=10, batch_size=4)
        message = Client(server.url, verbose=False).predict(*values.values(), api_name="/train_launch")[0]
        run_id = int(re.search(r"#(\d+)", message).group(1))
        deadline = time.monotonic() + 300
        while views.run_details(run_id, url=server.database_url)["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(1)
        run = views.run_details(run_id, url=server.database_url)
        log = server.log_path.read_text(errors="replace")
    assert run["status"] == "finished", run.get("error")
    assert run["config"]["data"] == "sample" and run["config"]["val_data"] == "Set5" and 0 < run["best_psnr"] < 100
    assert not re.search(r"warn", log, re.IGNORECASE), log[-3000:]  # e.g. gr.Dropdown's "not in the list of choices"
