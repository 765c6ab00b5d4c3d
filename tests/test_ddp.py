"""DistributedDataParallel on CPU: ``torchrun --standalone --nproc_per_node 2`` with gloo.

Both processes train in step (DistributedSampler, gradients all-reduced), only rank 0
validates, checkpoints and exports, and a second launch resumes the same run folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import srweb
from conftest import SET5, child_env, crops, hr_photos
from srweb.track.db import dispose_engine, session_scope
from srweb.track.runs import list_runs

pytestmark = pytest.mark.slow


def _torchrun(args: list[str], cwd: Path, env: dict[str, str], logs: Path) -> tuple[int, list[str], str]:
    """Run ``srweb train ARGS`` under torchrun; returns (exit code, each process's stdout, all stderr).

    Each process writes to its own log file (``--redirects 3``): on one shared pipe the two
    processes' lines could interleave.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",
        "-m",
        "srweb.cli",
        "train",
        *args,
    ]
    out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    stdouts = [p.read_text() for p in sorted(logs.rglob("stdout.log"))]
    stderr = out.stderr + "".join(p.read_text() for p in sorted(logs.rglob("stderr.log")))
    return out.returncode, stdouts, stderr


def test_torchrun_two_cpu_processes_train_export_once_and_resume(tmp_path):
    train = crops(hr_photos(), tmp_path / "train", 8, 48)
    val = crops(SET5, tmp_path / "val", 2, 32)
    env = child_env(tmp_path)
    export = tmp_path / "export"
    args = [
        "--model",
        "espcn",
        "--scale",
        "2",
        "--data",
        str(train),
        "--val-data",
        str(val),
        "--patch-size",
        "8",
        "--batch-size",
        "2",
        "--iterations",
        "12",
        "--val-interval",
        "6",
        "--precision",
        "fp32",
        "--export",
        str(export),
    ]

    code, stdouts, stderr = _torchrun(["--no-track", *args], tmp_path, env, tmp_path / "logs1")
    assert code == 0 and len(stdouts) == 2, stderr[-5000:]
    summaries = [json.loads(text.strip().splitlines()[-1]) for text in stdouts]  # one per process
    rank0, rank1 = summaries
    assert rank0["status"] == rank1["status"] == "finished" and rank0["step"] == rank1["step"] == 12
    assert rank0["weights"] == "espcn-x2.custom" and rank0["best_psnr"] > 0
    assert rank1["weights"] is None and rank1["best_psnr"] is None  # only rank 0 validates and exports
    assert rank0["run_dir"] == rank1["run_dir"] == "runs/espcn-x2_f64-32_p8_b2_lr1e-3_l2_it12"
    assert sorted(p.name for p in export.iterdir()) == ["espcn-x2.custom.json", "espcn-x2.custom.safetensors"]
    model, card = srweb.load_weights(str(export / "espcn-x2.custom.safetensors"))
    assert card.num_params == sum(p.numel() for p in model.parameters()) and card.training["iterations"] == 12
    assert card.metrics[0]["dataset"] == "val" and card.metrics[0]["protocol"]["channel"] == "y"
    assert "Traceback" not in stderr

    # Tracked, in a copy of the finished folder (the original stays that run's), 6 more steps: both
    # processes resume the copy at step 12 and exactly one run row records it.
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(tmp_path / "runs" / "espcn-x2_f64-32_p8_b2_lr1e-3_l2_it12", copy)
    longer = ["18" if a == "12" else a for a in args]  # --iterations 12 -> 18
    code, stdouts, stderr = _torchrun([*longer, "--run-dir", str(copy)], tmp_path, env, tmp_path / "logs2")
    assert code == 0, stderr[-5000:]
    assert sorted(json.loads(t.strip().splitlines()[-1])["run_id"] is None for t in stdouts) == [False, True]
    url = f"sqlite:///{tmp_path / 'state' / 'db' / 'srweb.sqlite'}"
    try:
        with session_scope(url, write=False) as session:
            runs = list_runs(session)
            rows = [(r.status, r.step, r.run_dir, r.weights_name) for r in runs]
    finally:
        dispose_engine(url)
    assert rows == [("finished", 18, str(copy), "espcn-x2.custom")]


SRGAN_SCRIPT = """
import os, sys, torch
from srweb.train.config import TrainConfig
from srweb.train.trainer import Trainer

data, weights, out = sys.argv[1:4]
cfg = TrainConfig(model="srresnet", scale=2, data=data, val_data=None, patch_size=8, batch_size=2, iterations=2,
                  loss="srgan-mse", pretrained=weights, precision="fp32")
trainer = Trainer(cfg, os.path.join(out, "run"), progress=False)
result = trainer.train()
assert result.status == "finished", result
torch.save({"disc": trainer.disc.state_dict(), "model": trainer.model.state_dict()},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


def test_torchrun_srgan_keeps_one_discriminator(tmp_path):
    from srweb.models import create_model
    from srweb.weights.files import save_weights

    train = crops(hr_photos(), tmp_path / "train", 8, 48)
    save_weights(
        create_model("srresnet", 2, num_blocks=1, num_features=8), "srresnet-x2.tiny", weights_dir=tmp_path / "weights"
    )
    script = tmp_path / "srgan_ddp.py"
    script.write_text(SRGAN_SCRIPT)
    env = child_env(tmp_path)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(train),
        "srresnet-x2.tiny",
        str(tmp_path),
    ]
    out = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    import torch

    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "disc"):  # DDP syncs the generator; the trainer must sync the discriminator
        for key, tensor in rank0[part].items():
            if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # per-process BN stats
                assert torch.equal(tensor, rank1[part][key]), f"{part}.{key} differs between processes"
