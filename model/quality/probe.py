"""Probes for give-aways: can a classifier that knows no medicine tell fraud from clean claims?

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
(`ELIGIBLE`): a wrong dose needs a drug fill, unbundling a pair of codes an NCCI edit bundles,
upcoding a visit, a specialty mismatch a procedure line, a demographic impossibility a
diagnosis with a Medicare Code Editor edit, and a diagnosis-treatment mismatch a drug or a
procedure besides the visit. "A claim without drugs has no wrong
dose" is a fact about the fraud, not a mark our generator leaves, and a model may use it;
against every clean claim the probe would mostly measure it (`artefact_probe(...,
eligible=False)`, also in `eval`'s JSON).

    >>> shape_features([{"claim_id": "C", "diagnoses": ["E11.9"], "procedures": [
    ...     {"code": "99213", "units": 1, "charge": 120.0, "modifiers": []}],
    ...     "medications": [], "total_charge": 120.0}])[0][:6].tolist()
    [1.0, 1.0, 0.0, 0.0, 10.0, 1.0]

The identity probe (`identity_probe`) asks the same of *which* codes a claim carries: a
logistic regression over the bag of its diagnosis codes, procedure codes, drug names and
the provider's specialty, with no pairs, numbers or context. If fraud bills codes that clean
claims rarely carry (a screening code only in impossible claims, panel components only in
unbundled ones), it finds them, and a model would too without reading any relation. The
codes no clean claim of the stream carries are listed outright (`fraud_only_codes`).

    >>> sorted(code_bag({"provider_specialty": "cardiology", "diagnoses": ["I10"],
    ...     "procedures": [{"code": "93000"}], "medications": [{"name": "lisinopril"}]}))
    ['drug:lisinopril', 'dx:I10', 'proc:93000', 'spec:cardiology']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression

from model.cms.tables import mce_edit, ptp_edits
from model.generator import SINGLE_CLAIM_PATTERNS
from model.metrics import auroc
from model.vocabulary import default_vocabulary

MAX_AUROC = 0.65
SINGLE_CLAIM = frozenset(SINGLE_CLAIM_PATTERNS)
# Which clean claims could carry each pattern (by its definition in model/generator.py).
def _edited(c: dict) -> bool:
    """Whether the claim carries a diagnosis with a Medicare Code Editor age or sex edit."""
    return any(mce_edit(x) is not None for x in c["diagnoses"])


def _treated(c: dict) -> bool:
    """Whether the claim bills a drug or a procedure besides a visit (what can be
    unjustified)."""
    procedures = default_vocabulary().procedures
    return bool(c["medications"]) or any(
        (q := procedures.get(p["code"])) is None or not q.em_level for p in c["procedures"])


def _bundled(c: dict) -> bool:
    """Whether the claim bills a pair of services an NCCI edit bundles, whatever their
    modifiers: what can be unbundled."""
    edits = ptp_edits()
    codes = {p["code"] for p in c["procedures"]}
    return any(a != b and edits.indicator(a, b) is not None for a in codes for b in codes)


def _visit(c: dict) -> bool:
    procedures = default_vocabulary().procedures
    return any((q := procedures.get(p["code"])) is not None and q.em_level
               for p in c["procedures"])


ELIGIBLE = {
    "dose_out_of_range": lambda c: bool(c["medications"]),
    "unbundling": lambda c: _bundled(c),
    "upcoding": _visit,
    "demographic_impossibility": _edited,
    "diagnosis_treatment_mismatch": _treated,
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


def code_bag(c: dict) -> dict[str, int]:
    """The codes a wire-form claim carries, and its specialty, as a bag (counts)."""
    bag: dict[str, int] = {f"spec:{c['provider_specialty']}": 1}
    for key in ([f"dx:{d}" for d in c["diagnoses"]]
                + [f"proc:{p['code']}" for p in c["procedures"]]
                + [f"drug:{m['name']}" for m in c["medications"]]):
        bag[key] = bag.get(key, 0) + 1
    return bag


def _per_pattern(claims: Sequence[dict], patterns: np.ndarray, eligible: bool,
                 fit_score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
                 ) -> dict[str, float]:
    """AUROC per fraud pattern against clean claims (those that could carry the pattern,
    with `eligible`) of a classifier `fit_score(train_rows, y_train, test_rows)` trained on
    the first half of the stream and measured on the second (patterns with < 20 claims in
    either half are left out)."""
    half = np.arange(len(claims)) < len(claims) // 2
    out: dict[str, float] = {}
    for p in sorted(set(patterns) - {"none"}):
        rule = ELIGIBLE.get(p) if eligible else None
        clean = (patterns == "none") & (np.array([rule(c) for c in claims]) if rule
                                        else True)
        mask = (patterns == p) | clean
        train, test = np.flatnonzero(mask & half), np.flatnonzero(mask & ~half)
        y = patterns == p
        if min(y[train].sum(), y[test].sum()) < 20:
            continue
        out[p] = round(auroc(y[test], fit_score(train, y[train], test)), 4)
    return out


def artefact_probe(claims: Sequence[dict], patterns: np.ndarray, seed: int = 0,
                   eligible: bool = True) -> dict[str, float]:
    """AUROC per fraud pattern of a shape-only gradient-boosted classifier (`_per_pattern`)."""
    x = shape_features(claims)

    def fit_score(train: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        gbt = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed,
                                             early_stopping=True, validation_fraction=0.2)
        return gbt.fit(x[train], y).predict_proba(x[test])[:, 1]

    return _per_pattern(claims, patterns, eligible, fit_score)


def identity_probe(claims: Sequence[dict], patterns: np.ndarray, eligible: bool = True
                   ) -> dict[str, float]:
    """AUROC per fraud pattern of a logistic regression over each claim's bag of codes and
    specialty (`code_bag`, `_per_pattern`). Cost: a few seconds per pattern on 100,000
    claims (sparse, liblinear)."""
    x = DictVectorizer().fit_transform(code_bag(c) for c in claims).tocsr()

    def fit_score(train: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        lr = LogisticRegression(C=1.0, solver="liblinear", max_iter=200)
        return lr.fit(x[train], y).decision_function(x[test])

    return _per_pattern(claims, patterns, eligible, fit_score)


def fraud_only_codes(claims: Sequence[dict], patterns: np.ndarray, alpha: float = 1e-3
                     ) -> list[str]:
    """Codes (`code_bag`'s keys) on fraud claims of single-claim patterns and on no clean
    claim of the stream, seen often enough that chance cannot explain it: a code fraud and
    clean claims carry alike lands only on fraud claims n times in a row with probability
    (fraud share)^n, so n is the least with that below `alpha` (3 at a 5% fraud rate).
    Rarer ones are left out: a stream carries thousands of codes seen once or twice, fraud
    or clean, by chance."""
    share = float(np.mean(patterns != "none"))
    need = max(1, math.ceil(math.log(alpha) / math.log(share))) if 0 < share < 1 else 1
    clean: set[str] = set()
    fraud: dict[str, int] = {}
    for c, p in zip(claims, patterns, strict=True):
        if p == "none":
            clean.update(code_bag(c))
        elif p in SINGLE_CLAIM:
            for k in code_bag(c):
                fraud[k] = fraud.get(k, 0) + 1
    return sorted(k for k, n in fraud.items() if n >= need and k not in clean)
