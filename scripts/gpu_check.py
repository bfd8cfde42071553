"""GPU checks for a lent accelerator (run by scripts/gpu_check.sh; writes JSON to $OUT).

1. the CUDA path of `Scorer` gives the same scores as the CPU path;
2. `Scorer.score` throughput (explanations included) on the GPU at several batch sizes,
   and model-only forward throughput;
3. the default model's training time on the GPU (same config as `claimscope train`);
4. the architecture sweep trained on the GPU.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from model.claims import Claim
from model.generator import ClaimGenerator
from model.quality.sweep import sweep
from model.scorer import Scorer
from model.training import TrainConfig, train

out = os.environ.get("OUT", ".")
result: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
claims = [Claim.model_validate(x.claim)
          for x in ClaimGenerator(seed=11, fraud_rate=0.05, size=20_000).generate(20_000)]

cpu, gpu = Scorer.load("default", device="cpu"), Scorer.load("default", device="cuda")
a, b = cpu.score(claims[:2000]), gpu.score(claims[:2000])
diff = max(abs(x.score - y.score) for x, y in zip(a, b, strict=True))
result["cpu_vs_cuda_max_score_diff"] = diff
result["cpu_vs_cuda_same_flags"] = all(x.flagged == y.flagged for x, y in zip(a, b, strict=True))

for bs in (256, 1024, 4096):
    gpu.batch_size = bs
    gpu.score(claims[:bs])
    torch.cuda.synchronize()
    t = time.perf_counter()
    gpu.score(claims)
    torch.cuda.synchronize()
    result[f"score_claims_per_s_batch{bs}"] = round(len(claims) / (time.perf_counter() - t))
enc = gpu.tokenizer.encode(claims[:4096])
gpu.raw(enc.values, enc.fields)
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(10):
    gpu.raw(enc.values, enc.fields)
torch.cuda.synchronize()
result["forward_only_claims_per_s_batch4096"] = round(10 * 4096 / (time.perf_counter() - t))
print(json.dumps(result), flush=True)

t = time.perf_counter()
ck = train(TrainConfig(device="cuda"), log=lambda m: print(m, flush=True))
result["train_default_cuda_seconds"] = round(time.perf_counter() - t, 1)
result["train_default_cuda_best"] = ck.metrics["calibration"]
print(json.dumps(result), flush=True)

result["sweep"] = sweep(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 3000,
                        train_count=60_000, count=10_000, seed=11, device="cuda",
                        log=lambda m: print(m, flush=True))
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(result, f, indent=2)
print(json.dumps(result, indent=2))
