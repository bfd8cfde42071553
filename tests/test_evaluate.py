"""The yardstick's parts on small inputs: metrics against scikit-learn, the protocol's
guards, and the shape `claimscope eval --json` promises (the typed results' JSON)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from model.checks import CheckLimits
from model.claims import Claim
from model.codes import procedure_levels
from model.generator import ClaimGenerator
from model.metrics import auroc
from model.quality.evaluate import (
    EvalError,
    evaluate,
    recall_at_fpr,
    shuffled,
    with_siblings,
    with_unlisted_procedures,
)
from model.quality.results import (
    CheckFigures,
    CheckReport,
    HeadAblation,
    HeldoutFigures,
    Invariance,
    NoveltyFigures,
    SwapFigures,
)
from model.scorer import Scorer
from model.vocabulary import default_vocabulary


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = np.round(rng.random(2000) + y * 0.3, 1)  # many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(y == 1, s) == auroc(y, s)  # boolean labels, as the probes pass them
    assert np.isnan(auroc(np.ones(5), np.arange(5.0)))  # one class: no AUROC


def test_no_roc_auc_but_the_one():
    """AUROC is computed in one place (model.metrics), never again by hand or by
    scikit-learn elsewhere in the model code."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "model"
    others = [str(f.relative_to(root)) for f in root.rglob("*.py")
              if f.name != "metrics.py" and "roc_auc_score" in f.read_text()]
    assert not others, others


def test_recall_at_one_percent_fpr():
    y = np.array([0] * 100 + [1] * 10)
    s = np.array(list(range(100)) + [98.5] * 5 + [50] * 5, dtype=float)
    assert recall_at_fpr(y, s) == 0.5  # only the five above the 99th clean score


def test_shuffling_and_siblings_keep_the_claim():
    rng = np.random.default_rng(1)
    v = default_vocabulary()
    c = next(i.claim for i in ClaimGenerator(seed=4, size=500).generate(500)
             if len(i.claim["diagnoses"]) > 1)
    s = shuffled(c, rng)
    assert sorted(s["diagnoses"]) == sorted(c["diagnoses"])
    assert sorted(map(str, s["procedures"])) == sorted(map(str, c["procedures"]))
    out, n = with_siblings(c, rng)
    for a, b in zip(c["diagnoses"], out["diagnoses"], strict=False):
        assert a[:3] == b[:3] and (a == b or b not in v.diagnoses)
    assert n == sum(a != b for a, b in zip(c["diagnoses"], out["diagnoses"], strict=False))


def test_unlisted_procedures_stay_in_their_range():
    """The yardstick's unlisted-procedure test swaps each listed code for one of the same
    CPT/HCPCS range that the list lacks, and keeps everything else of the line."""
    rng = np.random.default_rng(2)
    v = default_vocabulary()
    claims = [x.claim for x in ClaimGenerator(seed=3, fraud_rate=0.0).generate(200)]
    total = 0
    for c in claims:
        out, n = with_unlisted_procedures(c, rng)
        Claim.model_validate(out)
        for a, b in zip(c["procedures"], out["procedures"], strict=True):
            assert {**a, "code": b["code"]} == b
            assert a["code"] == b["code"] or (b["code"] not in v.procedures and
                                              procedure_levels(b["code"]).range ==
                                              procedure_levels(a["code"]).range)
        assert n == sum(a["code"] != b["code"]
                        for a, b in zip(c["procedures"], out["procedures"], strict=True))
        total += n
    assert total > 200  # most listed codes have unlisted neighbours


def test_a_training_seed_is_refused_as_the_test_seed():
    scorer = Scorer.load("default", device="cpu")
    with pytest.raises(EvalError, match="training seeds"):
        evaluate(scorer, count=1000, seed=scorer.ck.training["seed"] + 1)


def test_heldout_report_counts_clean_claims_by_the_codes_they_carry():
    from model.quality.evaluate import Stream, heldout_report

    def claim(dx: str, code: str, drug: str | None) -> dict:
        return {"diagnoses": [dx], "procedures": [{"code": code}],
                "medications": [{"name": drug}] if drug else []}

    wire = [claim("E11.9", "99213", "metformin"), claim("E11.65", "99213", None),
            claim("I10", "93000", None), claim("I10", "99213", "lisinopril"),
            claim("E11.65", "99213", None)]
    patterns = np.array(["none", "none", "none", "none", "upcoding"])
    test = Stream(wire, [], patterns, np.array([""] * 5), np.zeros(5, bool))
    flagged = np.array([False, True, False, True, True])
    r = heldout_report(test, flagged, {"diagnosis": ["E11.65"], "procedure": ["93000"],
                                       "drug": ["lisinopril"]})
    assert r.seen_code_fpr == 0.0 and r.seen_code_claims == 1  # the fraud is left out
    assert r.heldout_code_fpr == {"diagnosis": 1.0, "procedure": 0.0, "drug": 1.0}
    assert r.heldout_code_claims == {"diagnosis": 1, "procedure": 1, "drug": 1}


def test_results_print_as_the_json_scripts_read():
    """The typed results' JSON keeps the layout `eval --json` always had: the swaps and
    held-out figures flat in `invariance`, the limits beside each check, a head's AUROC
    changes beside its specialisation."""
    swap = SwapFigures(listed_fpr=0.01, fpr=0.02, anomaly_fpr=0.005, claims=10,
                       codes_swapped=12)
    inv = Invariance(0.001, 0.0005, 100, oov_sibling=swap, unlisted_procedure=swap)
    assert list(inv.to_json()) == [
        "permutation_flag_rate_change", "permutation_flag_rate_delta", "permutation_claims",
        "in_vocab_fpr", "oov_sibling_fpr", "oov_sibling_anomaly_fpr", "oov_sibling_claims",
        "oov_sibling_codes_swapped", "unlisted_procedure_listed_fpr", "unlisted_procedure_fpr",
        "unlisted_procedure_anomaly_fpr", "unlisted_procedure_claims",
        "unlisted_procedure_codes_swapped"]
    held = HeldoutFigures(0.01, 5, {"drug": None}, {"drug": 0}, {"drug": 3})
    assert held.to_json()["heldout_code_fpr"] == {"drug": None}
    checks = CheckReport(CheckLimits(repeat_codes=frozenset({"b", "a"})),
                         {"duplicate_billing": CheckFigures(0.9, 0.001, 0.002, 40)})
    assert checks.to_json() == {
        "limits": {"window_days": 7, "velocity_limit": 3, "per_kind": {},
                   "repeat_codes": ["a", "b"]},
        "duplicate_billing": {"recall": 0.9, "clean_fpr": 0.001, "frequent_care_fpr": 0.002,
                              "frequent_care_claims": 40}}
    assert HeadAblation({"upcoding": -0.01}, None).to_json() == {
        "upcoding": -0.01, "specialisation": None}
    assert NoveltyFigures(50, 0.8, 0.3, 0.9, 1.5).to_json()["recall_at_1pct_fpr"] == 0.3
