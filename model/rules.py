"""The vocabulary's own rules, one per single-claim fraud pattern: the rule oracle.

Each rule reads a wire-form claim (the JSON dict) against the vocabulary tables and says
whether the claim breaks the link its pattern names. They are what the generator's tests
judge fraud claims by, and `claimscope eval` reports them as `rule_oracle`: the ceiling a
detector that knows our tables could reach, not a competitor (a real insurer has no such
tables for the fraud it has not described yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from model.claims import Claim
from model.cms.tables import conflicts, mue
from model.edits import ptp_breaks
from model.vocabulary import Vocabulary, fill_daily_mg, fill_price_ratio

Rule = Callable[[dict, Vocabulary], bool]
DAILY_SLACK = 1.5  # mg a day above top strength x doses a day before a dose is "wrong"
PRICE_SLACK = 2.0  # x the top of a code's range before a charge is "inflated"


def mismatch(c: dict, v: Vocabulary) -> bool:
    ok_p, ok_d = v.justified_procedures(c["diagnoses"]), v.justified_drugs(c["diagnoses"])
    return (any(p["code"] in v.procedures and p["code"] not in ok_p for p in c["procedures"])
            or any(m["name"] in v.drugs and m["name"] not in ok_d for m in c["medications"]))


def dose_out_of_range(c: dict, v: Vocabulary) -> bool:
    """A strength outside the drug's range, or more mg a day than its top strength taken as
    often as meant (with slack for rounded quantities; a package to spare for a drug
    dispensed by the package: `fill_daily_mg`)."""
    for m in c["medications"]:
        d = v.drugs.get(m["name"])
        if d is None:
            continue
        top = DAILY_SLACK * d.daily_max_mg
        daily = fill_daily_mg(m["strength_mg"], m["quantity"], m["days_supply"], d.package, top)
        if not d.strength_min_mg <= m["strength_mg"] <= d.strength_max_mg or daily > top:
            return True
    return False


def price_inflation(c: dict, v: Vocabulary) -> bool:
    """A line charged over PRICE_SLACK x the top of its range (a fill: of a typical fill,
    `fill_price_ratio`), or billed in more units than its medically unlikely edit (MUE)
    allows."""
    if over_mue((p["code"], p["units"]) for p in c["procedures"]):
        return True
    place = v.places.get(c["place_of_service"])
    mult = place.charge_multiplier if place else 1.0
    return any((top := v.charge_top(p["code"])) is not None and float(p["charge"]) / p["units"]
               > PRICE_SLACK * top * mult for p in c["procedures"]) or any(
        m["name"] in v.drugs and fill_price_ratio(float(m["charge"]), m["quantity"],
                                                  v.drugs[m["name"]].unit_price_high)
        > PRICE_SLACK for m in c["medications"])


def upcoding(c: dict, v: Vocabulary) -> bool:
    """A visit above the level the claim supports (`Vocabulary.max_em_level`: its
    diagnoses, tests, procedures and prescriptions) by more than time could explain, and
    above its family's lowest level (an admission has no level below 99221's: billing it
    is never upcoding); `Vocabulary.em_ceiling`."""
    return above_mdm(c["diagnoses"], [p["code"] for p in c["procedures"]],
                     len(c["medications"]), v)


def above_mdm(diagnoses: Sequence[str], codes: Sequence[str], prescriptions: int,
              v: Vocabulary) -> bool:
    """Whether a visit among `codes` is above the level the claim supports (`upcoding`)."""
    visits = [q for c in codes if (q := v.procedures.get(c)) is not None and q.em_level]
    if not visits:
        return False
    allowed = v.max_em_level(diagnoses, codes, prescriptions)
    return any(q.em_level > v.em_ceiling(q.code, allowed) for q in visits)


def over_mue(lines: Iterable[tuple[str, int]]) -> bool:
    """Whether a (code, units) line is billed in more units than its practitioner MUE."""
    return any((limit := mue(code)) is not None and limit.units and units > limit.units
               for code, units in lines)


def unbundling(c: dict, v: Vocabulary) -> bool:
    """An NCCI procedure-to-procedure edit broken (`ptp_breaks`): a panel and one of its
    tests, a procedure and the visit it includes, billed together without the modifier
    the edit allows them with."""
    return bool(ptp_breaks([(p["code"], p.get("modifiers")) for p in c["procedures"]]))


def demographic_impossibility(c: dict, v: Vocabulary) -> bool:
    """A diagnosis the Medicare Code Editor's age or sex edits rule out for the member."""
    return mce_conflict(c["diagnoses"], c["member_age"], c["member_sex"])


def mce_conflict(diagnoses: Iterable[str], age: int | None, sex: str) -> bool:
    """Whether the MCE's age or sex edits rule out one of `diagnoses` for the member."""
    return any(conflicts(x, age, sex) for x in diagnoses)


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


# The payer edits a claim can break, as the tokenizer reads them (`claim_edits`): the CMS
# tables every US payer runs before any model, NCCI procedure-to-procedure pairs, MUE
# units, the MCE's age and sex edits, and the visit level the 2021 E/M grid supports.
EDITS = ("ptp", "mue", "mce", "em")


def claim_edits(claim: Claim, v: Vocabulary) -> tuple[str, ...]:
    """Which `EDITS` a claim breaks, in that order: the same tests as the rules
    `unbundling`, `price_inflation` (its units part), `demographic_impossibility` and
    `upcoding`, on a parsed claim. ~20 µs a claim of a few lines."""
    lines = claim.coded_procedures
    codes = [p.code for p in lines]
    broken = (bool(ptp_breaks([(p.code, p.modifiers) for p in lines])),
              over_mue((p.code, p.units) for p in lines),
              mce_conflict(claim.diagnosis_codes, claim.member_age, claim.member_sex),
              above_mdm(claim.diagnosis_codes, codes, len(claim.medications), v))
    return tuple(e for e, b in zip(EDITS, broken, strict=True) if b)
