"""GPU checks for a lent accelerator (run by scripts/gpu_check.sh; JSON to $OUT/gpu_check.json).

1. parity: the CUDA path of `Scorer` against the CPU path, both fp32 (the reference every
   number format is checked against), and the shipped CUDA format (bf16 blocks) against
   that reference: largest score difference and how many flags differ;
2. `Scorer.warm_up` on the GPU, then `Scorer.score` throughput (explanations included) at
   several batch sizes, and the model's forward pass alone;
3. `train`: the default model's training time on the GPU (`claimscope train`'s config);
4. `sweep`: the architecture sweep (`model.quality.sweep`, 2,500 steps each) trained on
   the GPU, evaluated on 10,000 fresh claims.

Arguments name the steps: `parity speed` (the default, in that order), or `train` or
`sweep` alone, since they are long: their JSON goes to $OUT/gpu_train.json or
$OUT/gpu_sweep.json.

`GPU_CHECK_DEVICE=cpu GPU_CHECK_CLAIMS=2000` runs the same steps on a CPU, as a dry run
before spending accelerator time.
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

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
COUNT = int(os.environ.get("GPU_CHECK_CLAIMS", "20000"))
PARITY_CLAIMS = 2000
STEPS = sys.argv[1:] or ["parity", "speed"]
if not (set(STEPS) <= {"parity", "speed"} or STEPS in (["train"], ["sweep"])):
    sys.exit(f"steps: parity and/or speed, or train or sweep alone; not {' '.join(STEPS)}")
out = os.environ.get("OUT", ".")
result: dict = {"device": (torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu"),
                "torch": torch.__version__, "claims": COUNT}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def report() -> None:
    name = f"gpu_{STEPS[0]}.json" if STEPS[0] in ("train", "sweep") else "gpu_check.json"
    with open(os.path.join(out, name), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result), flush=True)


def compare(name: str, ref: list, other: list) -> None:
    result[f"{name}_max_score_diff"] = max(abs(x.score - y.score)
                                           for x, y in zip(ref, other, strict=True))
    result[f"{name}_flags_differing"] = sum(x.flagged != y.flagged
                                            for x, y in zip(ref, other, strict=True))
    result[f"{name}_flagged"] = sum(y.flagged for y in other)


def parity(claims: list[Claim], gpu: Scorer) -> None:
    some = claims[:PARITY_CLAIMS]
    result["parity_claims"] = len(some)
    reference = Scorer.load("default", device="cpu", precision="fp32").score(some)
    compare("cuda_fp32_vs_cpu_fp32", reference,
            Scorer.load("default", device=DEVICE, precision="fp32").score(some))
    compare("cuda_auto_vs_cpu_fp32", reference, gpu.score(some))


def speed(claims: list[Claim], gpu: Scorer) -> None:
    sync()
    t = time.perf_counter()
    result["warm_up_token_counts"] = gpu.warm_up()
    sync()
    result["warm_up_seconds"] = round(time.perf_counter() - t, 3)
    for bs in (256, 512, 1024, 2048, 4096):
        gpu.batch_size = bs
        gpu.score(claims[:bs])
        sync()
        t = time.perf_counter()
        gpu.score(claims)
        sync()
        result[f"score_claims_per_s_batch{bs}"] = round(len(claims) / (time.perf_counter() - t))
    enc = gpu.tokenizer.encode(claims[:4096])
    gpu.batch_size = 4096
    gpu.raw(enc.values, enc.fields)
    sync()
    t = time.perf_counter()
    for _ in range(10):
        gpu.raw(enc.values, enc.fields)
    sync()
    result["forward_only_claims_per_s_batch4096"] = round(10 * len(enc.values)
                                                           / (time.perf_counter() - t))


def train_default() -> None:
    t = time.perf_counter()
    ck = train(TrainConfig(device=DEVICE), log=lambda m: print(m, flush=True))
    result["train_default_seconds"] = round(time.perf_counter() - t, 1)
    result["train_default_calibration"] = ck.metrics["calibration"]


if STEPS == ["train"]:
    train_default()
    report()
elif STEPS == ["sweep"]:
    result["sweep"] = sweep(steps=2500, train_count=60_000, count=10_000, seed=11, device=DEVICE,
                            log=lambda m: print(m, flush=True)).to_json()
    report()
else:
    claims = [Claim.model_validate(x.claim)
              for x in ClaimGenerator(seed=11, fraud_rate=0.05, size=COUNT).generate(COUNT)]
    gpu = Scorer.load("default", device=DEVICE)
    result["cuda_precision"] = gpu.precision
    for step in STEPS:
        {"parity": parity, "speed": speed}[step](claims, gpu)
        report()
