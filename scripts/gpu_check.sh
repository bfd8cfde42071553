#!/usr/bin/env bash
# Run on a lent GPU machine (its image has torch; pydantic travels as wheels in .whl/):
#   device run: bash scripts/gpu_check.sh   (carry: .whl)
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 scripts/gpu_check.py "${1:-3000}" 2>&1 | tee "${OUT:-.}/gpu_check.log"
