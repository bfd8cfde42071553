#!/usr/bin/env bash
# `claimscope bench` on a lent GPU machine (16 cores, one H100/H200), in the configurations
# named as arguments (default: all below): CUDA scoring with all cores and the default 4
# scoring processes, with 1 or 2 scoring processes, pinned to 2 cores (this dev box's
# count), and CPU scoring on all cores.
# The image has torch but not the rest, so it travels: wheels in .whl/ (pip download
# --python-version 3.12 of the packages the image lacks) and redis-server with its two
# libraries the image lacks in .dev/.
#   device run: bash scripts/gpu_bench.sh [NAME...]   (carry: .whl .dev)
set -euo pipefail
. "$(dirname "$0")/device_env.sh"
export PATH=$PWD/.dev/bin:$PATH LD_LIBRARY_PATH=$PWD/.dev/lib
chmod +x .dev/bin/redis-server
redis-server --version
out=${OUT:-.}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "cores: $(nproc)"
run() {  # name, then the command's prefix
  local name=$1; shift
  echo "== $name"
  timeout "${BENCH_TIMEOUT:-240}" "$@" python3 -m stream bench --json > "$out/bench_$name.json" \
    2> "$out/bench_$name.log" || { echo "failed: $(tail -3 "$out/bench_$name.log")"; return 0; }
  python3 -c "import json,sys; b=json.load(open(sys.argv[1])); print(b['device'], \
b['pipeline']['claims_per_s'], 'claims/s;', b['noop']['claims_per_s'], 'no-op; ratio', \
b['ratio'], '; p99', b['at_rate']['p99_ms'], 'ms at', b['at_rate']['offered_per_s'])" \
    "$out/bench_$name.json"
}
declare -A how=(
  [cuda_all]="env"
  [cuda_1proc]="env CLAIMSCOPE_SCORING_PROCESSES=1"
  [cuda_2proc]="env CLAIMSCOPE_SCORING_PROCESSES=2"
  [cuda_2cores]="taskset -c 0,1"
  [cpu_all]="env CLAIMSCOPE_DEVICE=cpu"
)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(cuda_all cuda_1proc cuda_2proc cuda_2cores cpu_all)
for n in "${names[@]}"; do run "$n" ${how[$n]}; done
