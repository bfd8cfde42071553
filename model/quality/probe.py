"""The artefact probe: can a classifier that knows no medicine tell fraud from clean claims?

Our generator is our own: whatever it does differently for fraud than for clean claims, a
model will find, and an AUROC bought with it measures the generator, not the model. So a
gradient-boosted classifier is given only what carries no clinical meaning: how many
diagnoses, procedure lines, drug fills, modifiers and tokens a claim has; where in its lists
the most expensive line, the line with the most units and the largest fill sit (first, last,
in between); and the shapes of its numbers (whole dollars, cents, decimals of strengths and
quantities). It is trained per pattern against clean claims on one half and scored on the
other. An AUROC near 0.5 says the pattern leaves no such mark; `claimscope eval` reports it
for every pattern, and the single-claim patterns must stay at or below `MAX_AUROC`. (The
cross-claim patterns are exempt: a duplicate or a burst is a mark by definition.)

The clean claims it is measured against are those that could carry the pattern at all
(`ELIGIBLE`): a wrong dose needs a drug fill, unbundling three or more procedure lines,
upcoding and a specialty mismatch a procedure line. "A claim without drugs has no wrong
dose" is a fact about the fraud, not a mark our generator leaves, and a model may use it;
against every clean claim the probe would mostly measure it (`artefact_probe(...,
eligible=False)`, also in `eval`'s JSON).

    >>> shape_features([{"claim_id": "C", "diagnoses": ["E11.9"], "procedures": [
    ...     {"code": "99213", "units": 1, "charge": 120.0, "modifiers": []}],
    ...     "medications": [], "total_charge": 120.0}])[0][:6].tolist()
    [1.0, 1.0, 0.0, 0.0, 10.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

MAX_AUROC = 0.65
# Which clean claims could carry each pattern (by its definition in model/generator.py).
ELIGIBLE = {
    "dose_out_of_range": lambda c: bool(c["medications"]),
    "unbundling": lambda c: len(c["procedures"]) >= 3,
    "upcoding": lambda c: bool(c["procedures"]),
    "specialty_mismatch": lambda c: bool(c["procedures"]),
    "duplicate_billing": lambda c: bool(c["procedures"]),
}
NAMES = ("n_diagnoses", "n_procedures", "n_medications", "n_modifiers", "n_tokens",
         "whole_dollar_share", "total_whole_dollars", "total_cents_mod_10",
         "max_charge_position", "max_units_position", "max_fill_position",
         "last_procedure_is_max_charge", "strength_decimals", "quantity_decimals",
         "quantity_per_day_is_whole", "max_units")


def _decimals(x: float) -> int:
    text = f"{x:.6f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def _position(values: Sequence[float]) -> float:
    """Where the largest value sits: 0 first, 1 last, 0.5 alone or none."""
    if len(values) < 2:
        return 0.5
    return int(np.argmax(values)) / (len(values) - 1)


def shape_features(claims: Sequence[dict]) -> np.ndarray:
    """(N, len(NAMES)) float32: counts, positions and number shapes of wire-form claims."""
    out = np.zeros((len(claims), len(NAMES)), dtype=np.float32)
    for i, c in enumerate(claims):
        procs, meds = c["procedures"], c["medications"]
        proc_charges = [float(p["charge"]) for p in procs]
        charges = proc_charges + [float(m["charge"]) for m in meds]
        units = [p["units"] for p in procs]
        whole = [abs(x - round(x)) < 1e-9 for x in charges]
        total = float(c["total_charge"])
        out[i] = [
            len(c["diagnoses"]), len(procs), len(meds),
            sum(len(p.get("modifiers") or []) for p in procs),
            6 + min(len(c["diagnoses"]), 8) + 3 * len(procs) + 4 * len(meds),
            sum(whole) / max(1, len(whole)), abs(total - round(total)) < 1e-9,
            round(total * 100) % 10,
            _position(proc_charges), _position(units),
            _position([float(m["charge"]) for m in meds]),
            bool(procs) and int(np.argmax(proc_charges)) == len(procs) - 1,
            max((_decimals(m["strength_mg"]) for m in meds), default=0),
            max((_decimals(m["quantity"]) for m in meds), default=0),
            all(float(m["quantity"]) % m["days_supply"] == 0 for m in meds) if meds else 1,
            max(units, default=0),
        ]
    return out


def artefact_probe(claims: Sequence[dict], patterns: np.ndarray, seed: int = 0,
                   eligible: bool = True) -> dict[str, float]:
    """AUROC per fraud pattern of a shape-only classifier against clean claims (those that
    could carry the pattern, with `eligible`): trained on the first half of the stream,
    measured on the second (patterns with < 20 claims in either half are left out)."""
    x = shape_features(claims)
    half = np.arange(len(claims)) < len(claims) // 2
    out: dict[str, float] = {}
    for p in sorted(set(patterns) - {"none"}):
        rule = ELIGIBLE.get(p) if eligible else None
        clean = (patterns == "none") & (np.array([rule(c) for c in claims]) if rule
                                        else True)
        mask = (patterns == p) | clean
        train, test = mask & half, mask & ~half
        y = patterns == p
        if min(y[train].sum(), y[test].sum()) < 20:
            continue
        gbt = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed,
                                             early_stopping=True, validation_fraction=0.2)
        gbt.fit(x[train], y[train])
        out[p] = round(float(roc_auc_score(y[test], gbt.predict_proba(x[test])[:, 1])), 4)
    return out
