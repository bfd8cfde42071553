"""What each scoring precision costs and gives up on this CPU: the figures behind `precision`
auto (docs/operations.md, "On an EPYC with AVX512-BF16 but no AMX").

    .venv/bin/python scripts/precision_paths.py            # ~20 s here

1. Forward passes (`Scorer.raw`) over 4,000 of the bench's claims in shares of 500, one
   thread, best of five, the precisions alternating: µs a claim.
2. Batch dependence: 300 claims scored alone and inside one call of 2,000 (and in calls
   of 20): the largest and mean score difference, and decisions that change.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from model.claims import parse_claim
from model.scorer import Scorer, cpu_flags
from stream.dev.bench import make_claims

PRECISIONS = ("int8", "bf16", "fp32")


def forward_us(scorers: dict[str, Scorer], claims: list, rounds: int = 5) -> dict[str, float]:
    tok = next(iter(scorers.values())).tokenizer
    enc = tok.pack([tok.tokens_of(c) for c in claims])
    best = dict.fromkeys(scorers, float("inf"))
    for _ in range(rounds):
        for name, s in scorers.items():
            t = time.process_time()
            for i in range(0, len(claims), 500):
                s.raw(enc.values[i:i + 500], enc.fields[i:i + 500])
            best[name] = min(best[name], (time.process_time() - t) / len(claims) * 1e6)
    return {name: round(us, 1) for name, us in best.items()}


def batch_dependence(s: Scorer, claims: list, n: int = 300) -> dict[str, float]:
    together = np.array([x.score for x in s.score(claims)])[:n]
    alone = np.array([s.score([c])[0].score for c in claims[:n]])
    small = np.array([x.score for i in range(0, n, 20) for x in s.score(claims[i:i + 20])])
    flips = int(((alone >= s.threshold) != (together >= s.threshold)).sum())
    return {"alone_max": round(float(np.abs(alone - together).max()), 4),
            "alone_mean": round(float(np.abs(alone - together).mean()), 5),
            "calls_of_20_max": round(float(np.abs(small - together).max()), 4),
            "decisions_changed": flips, "claims": n}


def main() -> None:
    torch.set_num_threads(1)
    flags = cpu_flags()
    print("CPU:", ", ".join(f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_bf16")
                            if f in flags) or "no flags read")
    claims = [parse_claim(v) for _, v in make_claims(4000)]
    scorers = {p: Scorer.load("default", device="cpu", precision=p) for p in PRECISIONS}
    print("forward pass, µs a claim (best of 5):", forward_us(scorers, claims))
    for p in ("int8", "bf16"):
        print(f"{p} batch dependence:", batch_dependence(scorers[p], claims[:2000]))


if __name__ == "__main__":
    main()
