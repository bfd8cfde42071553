"""`claimscope eval`: the model against two baselines on fresh labelled claims.

Protocol: generate `count` claims with `seed` at `fraud_rate` (never the training seeds);
run the full scorer over all of them in order (the cross-claim checks see the stream as a
worker would); split by position, first half / second half. Baselines fit on the first
half; every method is measured on the second half:

- AUROC, PR-AUC (average precision), recall at 1% false-positive rate;
- per fraud pattern: AUROC of that pattern against clean claims, and recall at the
  threshold that gives 1% false positives on clean claims;
- explanations (the model only): `top3_hit_rate`, on flagged claims of the mismatch
  patterns, the share whose injected token (found from the vocabulary's links, not from
  the generator's label) is among the three most surprising tokens; `faithfulness_rate`,
  on claims the model flags by itself, the share where masking the most surprising token
  moves the score more than masking a random content token. Masking removes the token
  (it becomes padding, which attention ignores) rather than swapping in an OOV token,
  which would itself be a surprise.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from model.baselines import FlatEncoder, gradient_boosting_scores, isolation_forest_scores
from model.checks import CrossClaimChecks, MemoryState
from model.dataset import ClaimSet, make_claim_set
from model.generator import CLEAN, PATTERNS
from model.scorer import Scorer
from model.vocabulary import default_vocabulary

MISMATCH_PATTERNS = ("diagnosis_treatment_mismatch", "specialty_mismatch")


def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr_max: float = 0.01) -> float:
    fpr, tpr, _ = roc_curve(y, s)
    return float(tpr[fpr <= fpr_max].max())


def method_metrics(patterns: np.ndarray, scores: np.ndarray) -> dict:
    y = (patterns != CLEAN).astype(int)
    clean = scores[patterns == CLEAN]
    cut = float(np.quantile(clean, 0.99))  # 1% of clean claims score above this
    per = {}
    for p in PATTERNS:
        mask = patterns == p
        if mask.sum() == 0:
            continue
        both = mask | (patterns == CLEAN)
        per[p] = {"auroc": round(float(roc_auc_score(mask[both], scores[both])), 4),
                  "recall": round(float((scores[mask] > cut).mean()), 4),
                  "count": int(mask.sum())}
    return {"auroc": round(float(roc_auc_score(y, scores)), 4),
            "pr_auc": round(float(average_precision_score(y, scores)), 4),
            "recall_at_1pct_fpr": round(recall_at_fpr(y, scores), 4),
            "per_pattern": per}


def injected_values(scorer: Scorer, data: ClaimSet, i: int) -> set[int]:
    """Token ids the vocabulary's links say do not belong on mismatch claim `i`."""
    v, tok, c = scorer.vocab, scorer.tokenizer, data.claims[i]
    ok_p, ok_d = v.justified_procedures(c.diagnoses), v.justified_drugs(c.diagnoses)
    spec = v.specialties.get(c.provider_specialty)
    out = set()
    if data.patterns[i] == "diagnosis_treatment_mismatch":
        out |= {tok.index[f"proc:{p.code}"] for p in c.procedures
                if p.code not in ok_p and f"proc:{p.code}" in tok.index}
        out |= {tok.index[f"drug:{m.name}"] for m in c.medications
                if m.name not in ok_d and f"drug:{m.name}" in tok.index}
    elif spec is not None:  # specialty mismatch: the specialty, or the code it doesn't do
        out.add(tok.index[f"spec:{spec.id}"])
        out |= {tok.index[f"proc:{p.code}"] for p in c.procedures
                if p.code not in spec.procedures and f"proc:{p.code}" in tok.index}
    return out


def explanation_metrics(scorer: Scorer, data: ClaimSet, flagged: np.ndarray,
                        surprise: np.ndarray, base: np.ndarray, seed: int) -> dict:
    """`surprise` (token logits) and `base` (combined score, no checks) are the model's
    outputs on `data`, already computed by the caller."""
    rng = np.random.default_rng(seed)
    top3 = np.argsort(-surprise, axis=1)[:, :3]
    hits = [bool(set(data.values[i, top3[i]]) & injected_values(scorer, data, i))
            for i in np.flatnonzero(flagged & np.isin(data.patterns, MISMATCH_PATTERNS))]
    own = np.flatnonzero(base >= scorer.threshold)  # flagged by the model itself
    faithful = []
    for start in range(0, len(own), 512):
        idx = own[start:start + 512]
        v, f = data.values[idx].copy(), data.fields[idx]
        v_top, v_rand = v.copy(), v.copy()
        for r, i in enumerate(idx):
            n = int((data.values[i] != 0).sum())
            v_top[r, top3[i, 0]] = 0
            v_rand[r, rng.integers(1, n)] = 0
        _, _, s_top = scorer.combine(scorer.raw(v_top, f, attention=False))
        _, _, s_rand = scorer.combine(scorer.raw(v_rand, f, attention=False))
        faithful += list(np.abs(base[idx] - s_top) > np.abs(base[idx] - s_rand))
    return {"top3_hit_rate": round(float(np.mean(hits)), 4) if hits else None,
            "top3_claims": len(hits),
            "faithfulness_rate": round(float(np.mean(faithful)), 4) if faithful else None,
            "faithfulness_claims": len(faithful)}


def evaluate(scorer: Scorer, count: int, seed: int, fraud_rate: float = 0.05, log=print
             ) -> dict:
    """The full comparison; `scorer` gets fresh in-memory cross-claim checks."""
    started = time.monotonic()
    scorer.checks = CrossClaimChecks(MemoryState())
    log(f"generating {count:,} claims (seed {seed}, fraud rate {fraud_rate})")
    data = make_claim_set(scorer.tokenizer, count, seed, fraud_rate)
    log("scoring")
    scores = scorer.score(data.claims)
    s = np.array([x.score for x in scores])
    flagged = np.array([x.flagged for x in scores])
    anomaly = np.array([x.components.anomaly for x in scores])
    raw = scorer.raw(data.values, data.fields, attention=False)  # the network alone
    _, _, without_checks = scorer.combine(raw)
    half = count // 2
    train, test = np.arange(count) < half, np.arange(count) >= half
    log("baselines")
    enc = FlatEncoder(default_vocabulary())
    x = enc.encode(data.claims)
    y = data.labels
    gbt = gradient_boosting_scores(x[train], y[train], x[test], seed)
    iso = isolation_forest_scores(x[train], x[test], seed)
    pt = data.patterns[test]
    log("explanations")
    result = {
        "model": {**method_metrics(pt, s[test]),
                  "flagged_precision": round(float(y[test][flagged[test]].mean()), 4)
                  if flagged[test].any() else None,
                  "flagged_recall": round(float(flagged[test][y[test] == 1].mean()), 4),
                  "threshold": scorer.threshold,
                  "without_checks": method_metrics(pt, without_checks[test]),
                  "anomaly_only": method_metrics(pt, anomaly[test])},
        "baselines": {"isolation_forest": method_metrics(pt, iso),
                      "gradient_boosting": method_metrics(pt, gbt)},
        "explanations": explanation_metrics(scorer, data.subset(test), flagged[test],
                                            raw.surprise[test], without_checks[test], seed),
        "count": count, "seed": seed, "fraud_rate": fraud_rate, "test_count": int(test.sum()),
        "model_version": scorer.model_version,
        "throughput": throughput(scorer, data.claims),
        "seconds": round(time.monotonic() - started, 1),
    }
    return result


def novelty(pattern: str, count: int, seed: int, steps: int, log=print) -> dict:
    """Train without `pattern`, then score fresh claims of only that pattern and clean ones.

    The anomaly score never saw a label, and the fraud head never saw this pattern: the
    anomaly AUROC says whether the surprise head catches a fraud type nobody described.
    """
    from model.checkpoint import Checkpoint
    from model.training import TrainConfig, train

    started = time.monotonic()
    ck: Checkpoint = train(TrainConfig(steps=steps, train_count=30_000, holdout_pattern=pattern),
                           log=log)
    ck.model_version = f"holdout-{pattern}"
    scorer = Scorer(ck, device="cpu")
    data = make_claim_set(scorer.tokenizer, count, seed, 0.05, patterns=(pattern,))
    fraud, anomaly, combined = scorer.combine(scorer.raw(data.values, data.fields,
                                                         attention=False))
    y = data.labels
    return {"novelty": {"pattern": pattern, "count": count, "positives": int(y.sum()),
                        "anomaly_auroc": round(float(roc_auc_score(y, anomaly)), 4),
                        "fraud_head_auroc": round(float(roc_auc_score(y, fraud)), 4),
                        "combined_auroc": round(float(roc_auc_score(y, combined)), 4)},
            "seed": seed, "train_steps": steps, "seconds": round(time.monotonic() - started, 1)}


def throughput(scorer: Scorer, claims: list, batch: int = 256, n: int = 8192) -> dict:
    """`Scorer.score` claims/s as a service calls it: `batch` claims a call, explanations
    for flagged claims, no cross-claim checks (those are a Redis round trip in the worker),
    after a warm-up, with the long-lived objects frozen out of the garbage collector."""
    import gc

    import torch

    checks, scorer.checks = scorer.checks, None
    part = claims[:n]
    scorer.score(part[:batch])
    gc.collect()
    gc.freeze()
    t0 = time.perf_counter()
    for i in range(0, len(part), batch):
        scorer.score(part[i:i + batch])
    per_s = len(part) / (time.perf_counter() - t0)
    gc.unfreeze()
    scorer.checks = checks
    return {"claims_per_s": round(per_s, 1), "batch": batch, "claims": len(part),
            "threads": torch.get_num_threads(), "device": str(scorer.device),
            "bf16": scorer.bf16, "explain": "all" if scorer.explain_all else "flagged"}
