#!/usr/bin/env bash
# Run on a lent GPU machine (its image has torch; pydantic travels as wheels in .whl/):
#   device run: bash scripts/gpu_check.sh [parity speed | train | sweep]   (carry: .whl)
set -euo pipefail
. "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 scripts/gpu_check.py "$@" 2>&1 | tee -a "${OUT:-.}/gpu_check.log"
