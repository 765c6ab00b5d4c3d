"""DistributedDataParallel on CPU: ``torchrun --standalone --nproc_per_node 2`` with gloo.

Both processes train in step (DistributedSampler, gradients all-reduced), only rank 0
validates, checkpoints and exports, and a second launch resumes the same run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import srweb
from srweb.config import get_settings
from srweb.track.db import dispose_engine, session_scope
from srweb.track.runs import list_runs

DATA = Path(get_settings().data_root)
pytestmark = pytest.mark.slow


def _crops(src: Path, dst: Path, count: int, size: int) -> Path:
    dst.mkdir(parents=True)
    for path in sorted(src.glob("*.png"))[:count]:
        with Image.open(path) as img:
            img.convert("RGB").crop((0, 0, size, size)).save(dst / path.name)
    return dst


def _torchrun(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "srweb.cli", "train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_cpu_processes_train_export_once_and_resume(tmp_path):
    train = _crops(DATA / "General-100", tmp_path / "train", 8, 48)
    val = _crops(DATA / "Set5", tmp_path / "val", 2, 32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRWEB_")}
    env.update(SRWEB_STATE_DIR=str(tmp_path / "state"), SRWEB_WEIGHTS_DIR=str(tmp_path / "weights"),
               SRWEB_RUNS_DIR=str(tmp_path / "runs"), SRWEB_DATA_ROOT=str(DATA), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    export = tmp_path / "export"
    args = ["--model", "espcn", "--scale", "2", "--data", str(train), "--val-data", str(val), "--patch-size", "8",
            "--batch-size", "2", "--iterations", "12", "--val-interval", "6", "--precision", "fp32",
            "--export", str(export)]

    out = _torchrun(["--no-track", *args], tmp_path, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summaries = sorted((json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")),
                       key=lambda s: s["weights"] is None)
    assert len(summaries) == 2, out.stdout  # one per process
    rank0, rank1 = summaries
    assert rank0["status"] == rank1["status"] == "finished" and rank0["step"] == rank1["step"] == 12
    assert rank0["weights"] == "espcn-x2.custom" and rank0["best_psnr"] > 0
    assert rank1["weights"] is None and rank1["best_psnr"] is None  # only rank 0 validates and exports
    assert rank0["run_dir"] == rank1["run_dir"] == "runs/espcn-x2_f64-32_p8_b2_lr1e-3_l2"
    assert sorted(p.name for p in export.iterdir()) == ["espcn-x2.custom.json", "espcn-x2.custom.safetensors"]
    model, card = srweb.load_weights(str(export / "espcn-x2.custom.safetensors"))
    assert card.num_params == sum(p.numel() for p in model.parameters()) and card.training["iterations"] == 12
    assert card.metrics[0]["dataset"] == "val" and card.metrics[0]["protocol"]["channel"] == "y"
    assert "Traceback" not in out.stderr

    # Tracked, same config: both processes resume the same folder at step 12 (nothing left to
    # train) and exactly one run row records it.
    out = _torchrun(args, tmp_path, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    url = f"sqlite:///{tmp_path / 'state' / 'db' / 'srweb.sqlite'}"
    try:
        with session_scope(url, write=False) as session:
            runs = list_runs(session)
            rows = [(r.status, r.step, r.run_dir, r.weights_name) for r in runs]
    finally:
        dispose_engine(url)
    assert rows == [("finished", 12, str(tmp_path / "runs" / "espcn-x2_f64-32_p8_b2_lr1e-3_l2"), "espcn-x2.custom")]
