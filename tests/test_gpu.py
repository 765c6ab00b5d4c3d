"""The GPU path, ready to prove: ``pytest -m gpu`` (or ``scripts/gpu_check.sh``) on a CUDA machine.

1. a ``srweb worker`` (PostgreSQL queue, as on a GPU machine) trains espcn x2 for 200 steps with
   autocast (bf16) on CUDA and exports weights;
2. DDP under torchrun on one GPU (``srweb worker --gpus``'s path, world size 1) trains and exports;
3. the inference fast path on CUDA stays within the quality guard against fp32.
Each check prints one line. Without CUDA every check is skipped, saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO, child_env

pytestmark = pytest.mark.gpu


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def needs_cuda():
    if not _cuda():
        pytest.skip("no CUDA device on this machine: GPU checks skipped")


def test_worker_trains_200_steps_with_autocast_and_exports(pg_server, fresh_state, tmp_path, monkeypatch):
    from test_workers import _images

    from srweb.config import get_settings
    from srweb.track.db import init_db, session_scope
    from srweb.track.runs import get_run
    from srweb.train import jobs
    from srweb.train.config import TrainConfig

    url = pg_server.create_database()
    env = child_env(
        tmp_path / "control",
        SRWEB_DATABASE_URL=url,
        SRWEB_ARTIFACTS_URL=str(tmp_path / "artifacts"),
        SRWEB_DEVICE="cuda",
        PYTHONPATH=str(REPO),
    )
    for name, value in env.items():
        if name.startswith("SRWEB_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    init_db()
    data = _images(tmp_path / "data", 8, 96)
    cfg = TrainConfig(
        model="espcn",
        scale=2,
        data=data,
        val_data=data,
        patch_size=24,
        batch_size=16,
        iterations=200,
        val_interval=100,
        ckpt_interval=100,
        precision="bf16",
        device="cuda",
    )
    run_id = jobs.submit(cfg)
    started = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "srweb.cli", "worker", "--name", "gpu-check"],
        cwd=REPO,
        env=child_env(
            tmp_path / "worker",
            **{
                k: v
                for k, v in env.items()
                if k.startswith(("SRWEB_DATABASE", "SRWEB_ARTIFACTS", "SRWEB_DEVICE", "PYTHONPATH"))
            },
        ),
    )
    try:
        while True:
            with session_scope(write=False) as session:
                run = get_run(session, run_id)
            if run.status in ("finished", "failed"):
                break
            assert time.monotonic() - started < 400, "the worker did not finish 200 steps in 400 s"
            time.sleep(1)
    finally:
        worker.terminate()
        worker.wait(60)
        from srweb.track.db import dispose_engine

        dispose_engine(url)
        pg_server.drop_database(url)
    assert run.status == "finished", run.error
    print(
        f"\nGPU check 1 ok: worker trained espcn x2 200 steps bf16 on {run.device} in "
        f"{time.monotonic() - started:.0f} s, best val PSNR {run.best_psnr:.2f} dB, exported {run.weights_name}"
    )


def test_ddp_on_one_gpu(tmp_path, fresh_state):
    data = tmp_path / "data"
    from test_workers import _images

    _images(data, 8, 96)
    env = child_env(tmp_path, SRWEB_DEVICE="cuda", PYTHONPATH=str(REPO))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=1",
        "-m",
        "srweb.cli",
        "train",
        "--model",
        "espcn",
        "--scale",
        "2",
        "--data",
        str(data),
        "--val-data",
        str(data),
        "--patch-size",
        "24",
        "--batch-size",
        "16",
        "--iterations",
        "100",
        "--device",
        "cuda",
        "--no-track",
        "--run-dir",
        str(tmp_path / "run"),
    ]
    out = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["step"] == 100
    print(f"\nGPU check 2 ok: DDP (torchrun, 1 process) on CUDA finished 100 steps, exported {summary['weights']}")


def test_inference_fast_path_on_cuda_within_the_quality_guard(fresh_state):
    """The smallest shipped weights on the built-in sample images: the CUDA fast path (bf16/fp16,
    channels_last) scores within the guard's 0.01 dB of fp32."""
    from srweb.data.samples import sample_images_dir
    from srweb.evaluation.evaluate import evaluate
    from srweb.inference.upscaler import Upscaler
    from srweb.weights.files import list_weights

    shipped = list_weights(REPO / "weights")
    if not shipped:
        pytest.skip("no shipped weights")
    card = min(shipped, key=lambda c: c.num_params)
    images = sample_images_dir()
    path = str(REPO / "weights" / f"{card.name}.safetensors")
    fast = Upscaler(path, device="cuda", precision="auto")
    exact = Upscaler(path, device="cuda", precision="fp32", channels_last=False)
    delta = evaluate(fast.upscale, images, card.scale).psnr - evaluate(exact.upscale, images, card.scale).psnr
    print(f"\nGPU check 3 ok: {card.name} on CUDA, {fast.precision} fast path vs fp32: {delta:+.4f} dB")
    assert delta >= -0.01
