"""The seed's accuracy-vs-size table, measured: train each architecture the same way,
score the same fresh claims, time the same scorer.

The seed asserted 1 layer/2 heads = 85%, 2/4 = 94%, 6/8 = 95% accuracy and 100 claims/s
for 2/4. Here every row is a model trained with the same data, seed and steps (on the
device asked for), evaluated on one fresh 5%-fraud set of single-claim patterns (the
cross-claim checks do not depend on the architecture), and timed with `Scorer.score`
(explanations included) on this machine's CPU, 2 threads, batch 256.
"""

from __future__ import annotations

import time

import torch
from sklearn.metrics import balanced_accuracy_score

from model.dataset import make_claim_set
from model.generator import SINGLE_CLAIM_PATTERNS
from model.metrics import auroc, pr_auc
from model.quality.results import SweepResult, SweepRow
from model.scorer import Scorer
from model.training import TrainConfig, train

ARCHITECTURES = ((1, 2), (2, 4), (4, 8), (6, 8))  # (layers, heads), d_model 128


def sweep(steps: int, train_count: int, count: int, seed: int, device: str = "cpu",
          log=print) -> SweepResult:
    rows = []
    data = None
    for layers, heads in ARCHITECTURES:
        log(f"training {layers} layer(s), {heads} heads")
        started = time.monotonic()
        ck = train(TrainConfig(steps=steps, train_count=train_count, device=device,
                               model_overrides={"n_layers": layers, "n_heads": heads}),
                   log=log)
        train_s = time.monotonic() - started
        ck.model_version = f"sweep-{layers}x{heads}"
        scorer = Scorer(ck, device="cpu", batch_size=256)
        if data is None:
            data = make_claim_set(scorer.tokenizer, count, seed, 0.05, SINGLE_CLAIM_PATTERNS)
        _, _, combined = scorer.combine(scorer.raw(data.values, data.fields, attention=False))
        y = data.labels
        flagged = combined >= scorer.threshold
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        timed = data.claims[:4096]
        scorer.score(timed[:256])  # warm-up
        t0 = time.monotonic()
        scorer.score(timed)
        per_s = len(timed) / (time.monotonic() - t0)
        torch.set_num_threads(threads)
        rows.append(SweepRow(
            layers=layers, heads=heads, d_model=ck.model.cfg.d_model,
            params=ck.model.n_params(), auroc=round(auroc(y, combined), 4),
            pr_auc=round(pr_auc(y, combined), 4),
            accuracy=round(float((flagged == (y == 1)).mean()), 4),
            balanced_accuracy=round(float(balanced_accuracy_score(y, flagged)), 4),
            cpu_claims_per_s=round(per_s, 1), train_seconds=round(train_s, 1),
            best_step=ck.metrics["best_step"]))
        log(f"  {rows[-1]}")
    return SweepResult(architectures=rows, steps=steps, train_count=train_count, count=count,
                       seed=seed, train_device=device)
