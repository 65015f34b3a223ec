#!/usr/bin/env bash
# Every GPU test and GPU benchmark, in one run that fits 10 minutes on one GPU node.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a machine with CUDA
#
# Sets up the environment with a CUDA build of torch (TORCH_SPEC, default "torch"),
# then runs the tests marked `gpu` (unet and AMIL: CUDA vs CPU predictions within a
# stated tolerance). Output goes to stdout and, when $OUT is set, to $OUT/gpu_check.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_SPEC="${TORCH_SPEC:-torch}" bash scripts/setup.sh
export PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$log"
.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee -a "$log"
.venv/bin/python -m pytest -m gpu -v -p no:cacheprovider 2>&1 | tee -a "$log"
