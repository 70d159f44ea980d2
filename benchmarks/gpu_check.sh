#!/usr/bin/env bash
# The GPU check of a lent GPU machine (under 5 minutes): a text-mlm-small search of a few trials with
# gpu: 0.25 per trial (four trials share the card) and 200 steps of `nas pretrain` on one GPU.
# Writes benchmarks/results/gpu_check.json (trials/hour, per-trial GPU memory, pretraining MFU against the
# card's bf16 peak). Expects the package installed (pip install -e .) with a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONUNBUFFERED=1
export NAS_HOME="${NAS_HOME:-$(mktemp -d)/nas}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python benchmarks/gpu_check.py "$@"
