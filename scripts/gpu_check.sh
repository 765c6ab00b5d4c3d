#!/usr/bin/env bash
# The GPU path in one go (tests/test_gpu.py): a `srweb worker` trains espcn x2 for 200 steps with
# autocast on CUDA and exports; DDP under torchrun on one GPU; the CUDA inference fast path within
# the quality guard. One line per check. Without CUDA it says so and skips (exit 0).
# Needs the PostgreSQL server binaries for the worker check (Debian package postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device on this machine; every GPU check skipped"
    exit 0
fi
"$PYTHON" -c "import torch; print('gpu_check: CUDA', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
"$PYTHON" -m pytest -q -s -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | grep -E "GPU check|passed|failed|skipped|Error"
