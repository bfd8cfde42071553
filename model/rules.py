"""The vocabulary's own rules, one per single-claim fraud pattern: the rule oracle.

Each rule reads a wire-form claim (the JSON dict) against the vocabulary tables and says
whether the claim breaks the link its pattern names. They are what the generator's tests
judge fraud claims by, and `claimscope eval` reports them as `rule_oracle`: the ceiling a
detector that knows our tables could reach, not a competitor (a real insurer has no such
tables for the fraud it has not described yet).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from model.cms.tables import conflicts, mue, ptp_edits
from model.vocabulary import Vocabulary

Rule = Callable[[dict, Vocabulary], bool]
DAILY_SLACK = 1.5  # mg a day above top strength x doses a day before a dose is "wrong"
PRICE_SLACK = 2.0  # x the top of a code's range before a charge is "inflated"


def mismatch(c: dict, v: Vocabulary) -> bool:
    ok_p, ok_d = v.justified_procedures(c["diagnoses"]), v.justified_drugs(c["diagnoses"])
    return (any(p["code"] in v.procedures and p["code"] not in ok_p for p in c["procedures"])
            or any(m["name"] in v.drugs and m["name"] not in ok_d for m in c["medications"]))


def dose_out_of_range(c: dict, v: Vocabulary) -> bool:
    """A strength outside the drug's range, or more mg a day than its top strength taken as
    often as meant (with slack for rounded quantities)."""
    for m in c["medications"]:
        d = v.drugs.get(m["name"])
        if d is None:
            continue
        daily = m["strength_mg"] * m["quantity"] / m["days_supply"]
        if (not d.strength_min_mg <= m["strength_mg"] <= d.strength_max_mg
                or daily > DAILY_SLACK * d.strength_max_mg * d.doses_per_day):
            return True
    return False


def price_inflation(c: dict, v: Vocabulary) -> bool:
    """A line charged over PRICE_SLACK x the top of its range, or billed in more units than
    its medically unlikely edit (MUE) allows."""
    if any((limit := mue(p["code"])) is not None and limit.units and p["units"] > limit.units
           for p in c["procedures"]):
        return True
    place = v.places.get(c["place_of_service"])
    mult = place.charge_multiplier if place else 1.0
    return any((top := v.charge_top(p["code"])) is not None and float(p["charge"]) / p["units"]
               > PRICE_SLACK * top * mult for p in c["procedures"]) or any(
        m["name"] in v.drugs and float(m["charge"]) / m["quantity"]
        > PRICE_SLACK * v.drugs[m["name"]].unit_price_high for m in c["medications"])


def upcoding(c: dict, v: Vocabulary) -> bool:
    """A visit above the level the claim supports (`Vocabulary.max_em_level`: its
    diagnoses, tests, procedures and prescriptions), and above its family's lowest level
    (an admission has no level below 99221's: billing it is never upcoding)."""
    allowed = v.max_em_level(c["diagnoses"], [p["code"] for p in c["procedures"]],
                             len(c["medications"]))
    return any((q := v.procedures[p["code"]]).em_level
               and q.em_level > max(allowed, v.em_floors[q.code[:4]])
               for p in c["procedures"] if p["code"] in v.procedures)


# Modifiers that let a pair of codes the NCCI PTP edits bundle be billed together, where
# the edit's modifier indicator is 1 (CMS NCCI policy manual, chapter I); on a visit
# (column 2 an E/M code) only 25 and 57 do: 59 and the X{EPSU} modifiers may not be used
# with E/M services.
NCCI_MODIFIERS = frozenset({"24", "25", "27", "57", "58", "59", "78", "79", "91", "E1", "E2",
                            "E3", "E4", "FA", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8",
                            "F9", "LC", "LD", "LM", "LT", "RC", "RI", "RT", "TA", "T1", "T2",
                            "T3", "T4", "T5", "T6", "T7", "T8", "T9", "XE", "XP", "XS", "XU"})
VISIT_MODIFIERS = frozenset({"25", "57"})


def ptp_breaks(procedures: list[dict], v: Vocabulary) -> list[tuple[str, str, int]]:
    """The NCCI procedure-to-procedure edits a claim's lines break: (column 1, column 2,
    modifier indicator) for each pair billed together that the edits never allow (0), or
    allow only with a modifier the column-2 line lacks (1)."""
    edits = ptp_edits()
    out = []
    for a in procedures:
        for b in procedures:
            if a["code"] == b["code"] or (ind := edits.indicator(a["code"], b["code"])) is None:
                continue
            q = v.procedures.get(b["code"])
            allow = VISIT_MODIFIERS if q is not None and q.em_level else NCCI_MODIFIERS
            if ind != 1 or not allow & set(b.get("modifiers") or ()):
                out.append((a["code"], b["code"], ind))
    return out


def unbundling(c: dict, v: Vocabulary) -> bool:
    """An NCCI procedure-to-procedure edit broken (`ptp_breaks`): a panel and one of its
    tests, a procedure and the visit it includes, billed together without the modifier
    the edit allows them with."""
    return bool(ptp_breaks(c["procedures"], v))


def demographic_impossibility(c: dict, v: Vocabulary) -> bool:
    """A diagnosis the Medicare Code Editor's age or sex edits rule out for the member."""
    return any(conflicts(x, c["member_age"], c["member_sex"]) for x in c["diagnoses"])


def specialty_mismatch(c: dict, v: Vocabulary) -> bool:
    spec = v.specialties.get(c["provider_specialty"])
    return spec is not None and any(p["code"] in v.procedures and p["code"] not in spec.procedures
                                    for p in c["procedures"])


RULES: dict[str, Rule] = {
    "diagnosis_treatment_mismatch": mismatch, "dose_out_of_range": dose_out_of_range,
    "price_inflation": price_inflation, "upcoding": upcoding, "unbundling": unbundling,
    "demographic_impossibility": demographic_impossibility,
    "specialty_mismatch": specialty_mismatch,
}


def rule_oracle_scores(claims: list[dict], v: Vocabulary) -> np.ndarray:
    """How many of the rules each claim breaks (0-7): the oracle's score."""
    return np.array([sum(rule(c, v) for rule in RULES.values()) for c in claims], dtype=float)
