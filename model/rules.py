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
    place = v.places.get(c["place_of_service"])
    mult = place.charge_multiplier if place else 1.0
    return any(p["code"] in v.procedures and float(p["charge"]) / p["units"]
               > PRICE_SLACK * v.procedures[p["code"]].charge_high * mult
               for p in c["procedures"]) or any(
        m["name"] in v.drugs and float(m["charge"]) / m["quantity"]
        > PRICE_SLACK * v.drugs[m["name"]].unit_price_high for m in c["medications"])


def upcoding(c: dict, v: Vocabulary) -> bool:
    allowed = v.max_em_level(c["diagnoses"])
    return any((v.procedures[p["code"]].em_level or 0) >= allowed + 2
               for p in c["procedures"] if p["code"] in v.procedures)


def unbundling(c: dict, v: Vocabulary) -> bool:
    codes = {p["code"] for p in c["procedures"]}
    return any(len(codes & set(parts)) >= min(3, len(parts)) and len(codes & set(parts)) >= 2
               for parts in v.bundles.values())


def demographic_impossibility(c: dict, v: Vocabulary) -> bool:
    age, sex = c["member_age"], c["member_sex"]
    items = ([d for x in c["diagnoses"] if (d := v.resolve_diagnosis(x)) is not None]
             + [v.procedures[p["code"]] for p in c["procedures"] if p["code"] in v.procedures]
             + [v.drugs[m["name"]] for m in c["medications"] if m["name"] in v.drugs])
    return any(not x.who.fits(age, sex) for x in items)


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
