"""Clean false positives on the generated world's facility claims, by checkpoint.

    .venv/bin/python scripts/facility_fp.py runs/v11 default --count 100000 --seed 11

Scores a fresh stream (a test seed, never a training one) with each checkpoint and prints,
as JSON, the share of clean institutional claims and of clean professional claims that any
channel flags, with 95% Wilson intervals: what docs/model.md, "Institutional claims",
reports.
"""

from __future__ import annotations

import argparse
import json

from model.claims import Claim
from model.generator import CLEAN, ClaimGenerator
from model.quality.everyday import wilson_interval
from model.scorer import Scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    items = list(ClaimGenerator(seed=args.seed, size=args.count).generate(args.count))
    clean = [Claim.model_validate(i.claim) for i in items if i.fraud_pattern == CLEAN]
    out = {"count": args.count, "seed": args.seed, "checkpoints": {}}
    for ck in args.checkpoints:
        scorer = Scorer.load(ck, device="cpu")
        scores = scorer.score(clean)
        row = {"model_version": scorer.model_version}
        for kind in ("institutional", "professional"):
            flags = [s.flagged for c, s in zip(clean, scores, strict=True)
                     if c.claim_type == kind]
            row[kind] = {"claims": len(flags), "flagged": sum(flags),
                         "share": round(sum(flags) / max(1, len(flags)), 5),
                         "ci95": wilson_interval(sum(flags), len(flags))}
        out["checkpoints"][ck] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
