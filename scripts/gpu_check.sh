#!/usr/bin/env bash
# Run on a lent GPU machine (its image has torch; pydantic travels as wheels in .whl/):
#   device run: bash scripts/gpu_check.sh [parity speed | train | sweep]   (carry: .whl)
set -euo pipefail
# once a machine: the stamp names the wheels installed, so other wheels install again
stamp="$(ls .whl | md5sum | cut -c1-32)"
[ "$(cat /tmp/site/.wheels 2>/dev/null)" = "$stamp" ] || { python3 -m pip install -q \
  --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && echo "$stamp" > /tmp/site/.wheels; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 scripts/gpu_check.py "$@" 2>&1 | tee -a "${OUT:-.}/gpu_check.log"
