"""Does reading header fields as unknown raise false alarms? Checkpoints side by side.

    python scripts/unknowns_ab.py default runs/blank0 runs/blank5 > out.json

For each checkpoint: the everyday-care suite's clean claims read in full and with age, sex,
specialty and all three unknown (`model.quality.everyday`, seed 0: hand-written care), and
20,000 generated claims (seed 11, 5% fraud) read in full, with all three unknown, with
their diagnoses unknown, with every line's code unknown (as a SNOMED-coded feed reads) and
with both: PR-AUC, clean claims flagged, recall. docs/formats.md ("Unknowns", "Unknown
codes") has the runs and what they show.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from model.claims import Claim
from model.generator import CLEAN, ClaimGenerator
from model.quality.everyday import UNKNOWN_READINGS, everyday, wilson_interval
from model.scorer import Scorer


def codes_unknown(c: Claim) -> Claim:
    """`c` with every line's service code unknown: procedure codes null (their modifiers
    go with them), revenue lines with neither code."""
    return c.model_copy(update={
        "procedures": [p.model_copy(update={"code": None, "modifiers": []})
                       for p in c.procedures],
        "revenue_lines": [r.model_copy(update={"code": None, "revenue_code": None,
                                               "modifiers": []}) for r in c.revenue_lines]})


def main(checkpoints: list[str]) -> dict:
    torch.set_num_threads(2)
    items = list(ClaimGenerator(seed=11, fraud_rate=0.05).generate(20_000))
    y = np.array([it.fraud_pattern != CLEAN for it in items])
    full = [Claim.model_validate(it.claim) for it in items]
    readings = {"full": full,
                "all_unknown": [c.model_copy(update=UNKNOWN_READINGS["all"]) for c in full],
                "diagnoses_unknown": [c.model_copy(update={"diagnoses": None}) for c in full],
                "codes_unknown": [codes_unknown(c) for c in full]}
    readings["diagnoses_and_codes_unknown"] = [
        c.model_copy(update={"diagnoses": None}) for c in readings["codes_unknown"]]
    out = {}
    for ck in checkpoints:
        scorer = Scorer.load(ck, device="cpu")
        ev = everyday(scorer, seed=0, log=lambda _: None)
        row: dict = {"model_version": scorer.model_version,
                     "everyday_clean_flagged": ev.clean_flag_rate,
                     "everyday_read_unknown": {k: u.to_json() for k, u in
                                               ev.read_unknown.items()}}
        for name, claims in readings.items():
            scores = scorer.score(claims)
            s = np.array([x.score for x in scores])
            f = np.array([x.flagged for x in scores])
            row[f"generated_{name}"] = {
                "pr_auc": round(float(average_precision_score(y, s)), 4),
                "clean_flagged": round(float(f[~y].mean()), 4),
                "clean_flagged_95": wilson_interval(int(f[~y].sum()), int((~y).sum())),
                "recall": round(float(f[y].mean()), 4)}
        out[ck] = row
        print(f"{ck}: done", file=sys.stderr)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
