"""The synthetic claims: valid, reproducible, and each fraud pattern really breaks its link.

The checks below judge claims by the vocabulary's links only, never by the generator's own
bookkeeping: a pattern passes when its claims violate the relationship it names and clean
claims do not.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from model.claims import parse_claim
from model.generator import CLEAN, FRAUDS, PATTERNS, ClaimGenerator
from model.rules import RULES, claim_edits
from model.vocabulary import default_vocabulary

V = default_vocabulary()
ITEMS = list(ClaimGenerator(seed=3, fraud_rate=0.5, size=6000).generate(6000))


def unit_charge(line: dict) -> float:
    return line["charge"] / line["units"]


def dx(code: str):
    """The diagnosis a code reads as: listed, or its ICD-10-CM category's stand-in."""
    d = V.resolve_diagnosis(code)
    assert d is not None, f"{code} is neither listed nor in a listed category"
    return d


def test_every_generated_claim_validates():
    for item in ITEMS:
        parse_claim(json.dumps(item.claim))


def test_every_pattern_appears():
    assert {i.fraud_pattern for i in ITEMS} == {CLEAN, *PATTERNS}


def test_same_seed_same_claims_other_seed_other_claims():
    a = [i.claim for i in ClaimGenerator(seed=9, size=500).generate(500)]
    b = [i.claim for i in ClaimGenerator(seed=9, size=500).generate(500)]
    c = [i.claim for i in ClaimGenerator(seed=10, size=500).generate(500)]
    assert a == b
    assert a != c


def test_claim_ids_are_unique():
    ids = [i.claim["claim_id"] for i in ITEMS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("pattern", sorted(RULES))
def test_pattern_breaks_its_link_and_clean_claims_do_not(pattern):
    """Judged by the vocabulary's rules (model/rules.py), not the generator's bookkeeping."""
    rule = RULES[pattern]
    injected = [i.claim for i in ITEMS if i.fraud_pattern == pattern]
    clean = [i.claim for i in ITEMS if i.fraud_pattern == CLEAN]
    assert injected and all(rule(c, V) for c in injected)
    assert not any(rule(c, V) for c in clean)


def test_duplicates_repeat_an_earlier_claims_member_provider_date_and_procedure():
    seen: dict[tuple, str] = {}
    for item in ITEMS:
        c = item.claim
        keys = [(c["member_id"], c["provider_id"], c["service_date"], p["code"])
                for p in c["procedures"]]
        if item.fraud_pattern == "duplicate_billing":
            assert any(k in seen for k in keys), c["claim_id"]
        elif item.fraud_pattern == CLEAN:  # only a second session of the day, with 76
            assert not any(k in seen and seen[k] != c["claim_id"] and "76" not in p["modifiers"]
                           for k, p in zip(keys, c["procedures"], strict=True))
        for k in keys:
            seen.setdefault(k, c["claim_id"])


def test_high_velocity_claims_follow_four_recent_claims_of_the_member():
    days: dict[str, list[dt.date]] = defaultdict(list)
    for item in ITEMS:
        c = item.claim
        d = dt.date.fromisoformat(c["service_date"])
        if item.fraud_pattern == "high_velocity_member":
            assert sum(abs((x - d).days) < 7 for x in days[c["member_id"]]) >= 4
        days[c["member_id"]].append(d)


def test_members_keep_their_demographics():
    who: dict[str, tuple] = {}
    for item in ITEMS:
        c = item.claim
        assert who.setdefault(c["member_id"], (c["member_age"], c["member_sex"])) == (
            c["member_age"], c["member_sex"])


def test_unknown_pattern_is_refused():
    with pytest.raises(ValueError, match="unknown fraud pattern"):
        ClaimGenerator(patterns=("nope",))


def test_each_pattern_is_one_registered_function_that_labels_what_it_makes():
    assert list(FRAUDS) == list(PATTERNS)
    for pattern in PATTERNS:
        gen = ClaimGenerator(seed=4, fraud_rate=0.5, patterns=(pattern,), size=300)
        labels = {x.fraud_pattern for x in gen.generate(300)}
        assert labels == {CLEAN, pattern}, pattern


def test_mismatch_is_a_drug_or_a_procedure_and_named():
    """The variant is the line the clean claim had to replace, as often as claims carry
    each (about a quarter are drugs)."""
    variants = [i.variant for i in ITEMS if i.fraud_pattern == "diagnosis_treatment_mismatch"]
    drug, procedure = variants.count("drug"), variants.count("procedure")
    assert drug + procedure == len(variants) and min(drug, procedure) >= 0.15 * len(variants)
    for i in ITEMS:
        c = i.claim
        if i.variant == "drug":
            ok = V.justified_drugs(c["diagnoses"])
            assert any(m["name"] not in ok for m in c["medications"])
        elif i.variant == "procedure":
            ok = V.justified_procedures(c["diagnoses"])
            assert any(p["code"] not in ok for p in c["procedures"])


def test_injected_diagnoses_are_not_always_last():
    """The impossible diagnosis sits anywhere in the list, as any other diagnosis does."""
    where = []
    for i in ITEMS:
        c = i.claim
        if i.fraud_pattern == "demographic_impossibility" and len(c["diagnoses"]) > 1:
            bad = [k for k, d in enumerate(c["diagnoses"])
                   if not dx(d).who.fits(c["member_age"], c["member_sex"])]
            where += [k == len(c["diagnoses"]) - 1 for k in bad]
    assert where and 0.2 < sum(where) / len(where) < 0.8


def whole_dollar_share(lines: list[dict], qty: str | None) -> float:
    units = [x["charge"] / (x[qty] if qty else x["units"]) for x in lines]
    return sum(abs(u - round(u)) < 1e-6 for u in units) / len(units)


def test_inflated_charges_are_whole_dollars_as_often_as_clean_ones():
    inflated, clean = [], []
    for i in ITEMS:
        c = i.claim
        mult = V.places[c["place_of_service"]].charge_multiplier
        for p in c["procedures"]:
            high = unit_charge(p) > 2 * (V.charge_top(p["code"]) or math.inf) * mult
            (inflated if i.fraud_pattern == "price_inflation" and high else clean).append(p)
    a, b = whole_dollar_share(inflated, None), whole_dollar_share(clean, None)
    assert len(inflated) >= 50
    assert abs(a - b) < 3 * math.sqrt(b * (1 - b) / len(inflated)), (a, b, len(inflated))


def test_fills_are_whole_packages_with_a_fee_and_inflated_ones_whole_dollars_as_often():
    """A pharmacy dispenses eye drops, inhalers, tubes and insulin by the package and adds
    a dispensing fee to every fill; an inflated fill's charge is as often whole dollars as a
    clean one's (a shape would give it away)."""
    from model.rules import price_inflation
    from model.vocabulary import fill_price_ratio

    inflated, clean, packaged = [], [], 0
    for i in ITEMS:
        for m in i.claim["medications"]:
            d = V.drugs[m["name"]]
            if d.package:
                assert m["quantity"] % d.package == 0, m
                packaged += 1
            if i.fraud_pattern == CLEAN:
                assert m["charge"] >= d.unit_price_low * m["quantity"] + 1.0, m  # a fee
                assert not price_inflation({**i.claim, "procedures": [],
                                            "medications": [m]}, V), m
                clean.append(m)
            elif i.fraud_pattern == "price_inflation" and fill_price_ratio(
                    m["charge"], m["quantity"], d.unit_price_high) > 2:
                inflated.append(m)
    assert packaged >= 50 and len(inflated) >= 25
    a = sum(m["charge"] == round(m["charge"]) for m in inflated) / len(inflated)
    b = sum(m["charge"] == round(m["charge"]) for m in clean) / len(clean)
    assert abs(a - b) < 3 * math.sqrt(b * (1 - b) / len(inflated)), (a, b, len(inflated))


def test_wrong_doses_are_marketed_strengths():
    for i in ITEMS:
        for m in i.claim["medications"]:
            assert m["strength_mg"] in V.drugs[m["name"]].common_strengths_mg


def test_a_share_of_diagnoses_are_unlisted_siblings_of_listed_codes():
    import simple_icd_10_cm as icd

    codes = [d for i in ITEMS for d in i.claim["diagnoses"]]
    unlisted = [d for d in codes if d not in V.diagnoses]
    assert 0.03 < len(unlisted) / len(codes) < 0.2
    assert all(icd.is_valid_item(d) and icd.is_leaf(d) and d[:3] in V.categories
               for d in unlisted)


def test_specialties_see_the_patients_they_treat():
    for i in ITEMS:
        c = i.claim
        if i.fraud_pattern == CLEAN and c["provider_specialty"]:  # a facility's: unknown
            assert V.specialties[c["provider_specialty"]].patients.fits(
                c["member_age"], c["member_sex"]), c


def test_label_noise_flips_that_share_of_labels_and_no_claim():
    plain = list(ClaimGenerator(seed=5, fraud_rate=0.3, size=2000).generate(2000))
    noisy = list(ClaimGenerator(seed=5, fraud_rate=0.3, size=2000, label_noise=0.1)
                 .generate(2000))
    assert [i.claim for i in plain] == [i.claim for i in noisy]
    flipped = sum(a.fraud_pattern != b.fraud_pattern for a, b in zip(plain, noisy, strict=True))
    assert 120 < flipped < 280


def test_members_get_care_at_the_same_rate_however_long_the_stream():
    from model.generator import CLAIMS_PER_MEMBER_YEAR

    for members, n in ((600, 3_000), (600, 12_000)):
        gen = ClaimGenerator(seed=8, fraud_rate=0.0, members=members)
        days = [dt.date.fromisoformat(x.claim["service_date"]) for x in gen.generate(n)]
        years = (max(days) - min(days)).days / 365
        rate = n / members / years
        assert 0.7 * CLAIMS_PER_MEMBER_YEAR < rate < 1.3 * CLAIMS_PER_MEMBER_YEAR, rate


def test_frequent_care_members_get_their_series_sessions():
    gen = ClaimGenerator(seed=8, fraud_rate=0.0, members=3_000)
    items = [x.claim for x in gen.generate(15_000)]
    dialysis = {m for m, p in gen.plans.items() if p.series.name == "dialysis"}
    assert dialysis
    sessions = [c for c in items if c["member_id"] in dialysis and any(
        x["code"] == "90935" for x in c["procedures"])]
    weeks = {}
    for c in sessions:
        week = dt.date.fromisoformat(c["service_date"]).isocalendar()[:2]
        weeks.setdefault((c["member_id"], week), 0)
        weeks[c["member_id"], week] += 1
    assert np.median(list(weeks.values())) == 3  # three times a week
    assert all("N18.6" in c["diagnoses"] or any(d.startswith("N18") for d in c["diagnoses"])
               for c in sessions)


def test_held_out_codes_are_never_billed_and_a_share_of_each_field():
    from model.training import heldout_codes

    held = heldout_codes(V, 0.1, seed=4)
    assert held == heldout_codes(V, 0.1, seed=4) and held != heldout_codes(V, 0.1, seed=5)
    assert abs(len(held["diagnosis"]) - 0.1 * len(V.diagnoses)) < 0.02 * len(V.diagnoses)
    assert held["drug"] and held["procedure"]
    out = frozenset(c for codes in held.values() for c in codes)
    items = list(ClaimGenerator(seed=8, fraud_rate=0.3, size=4000, heldout=out).generate(4000))
    billed = {x for i in items for x in [*i.claim["diagnoses"],
                                         *(p["code"] for p in i.claim["procedures"]),
                                         *(m["name"] for m in i.claim["medications"])]}
    assert not billed & out
    assert billed & set(held["diagnosis"]) == set()
    full = {x for i in ITEMS for x in i.claim["diagnoses"]}
    assert full & set(held["diagnosis"])  # without holding out, the same codes are billed


def test_clean_care_orders_labs_and_bills_unlisted_codes_of_real_ranges():
    clean = [i.claim for i in ITEMS if i.fraud_pattern == CLEAN]
    labs = [c for c in clean if c["place_of_service"] == "81"]
    assert 0.05 < len(labs) / len(clean) < 0.4
    assert all(c["provider_specialty"] in ("laboratory", "pathology") and not c["medications"]
               for c in labs)
    codes = [p["code"] for c in clean for p in c["procedures"]]
    unlisted = [x for x in codes if x not in V.procedures]
    assert 0.005 < len(unlisted) / len(codes) < 0.15
    assert all(x in V.fees for x in unlisted)  # payable codes, priced from the fee schedule


def test_clean_care_has_pharmacy_refills_and_high_complexity_acute_visits():
    clean = [i.claim for i in ITEMS if i.fraud_pattern == CLEAN]
    fills = [c for c in clean if c["provider_specialty"] == "pharmacy"]
    assert 0.05 < len(fills) / len(clean) < 0.3
    assert all(c["place_of_service"] == "01" and c["medications"] and not c["procedures"]
               for c in fills)
    assert {30, 90} <= {m["days_supply"] for c in fills for m in c["medications"]}
    # the 2021 grid's high complexity: an ER visit or an admission for a serious problem
    codes = {p["code"] for c in clean for p in c["procedures"]}
    assert {"99285", "99223"} <= codes


def test_payer_edits_the_tokenizer_reads_are_the_rules_patterns_break():
    """`claim_edits` on a parsed claim says what the wire-form rules say: clean claims
    break no edit; each edit pattern breaks its own."""
    edits = {"unbundling": "ptp", "demographic_impossibility": "mce", "upcoding": "em"}
    for item in ITEMS:
        broken = claim_edits(parse_claim(json.dumps(item.claim)), V)
        if item.fraud_pattern == CLEAN:
            assert broken == (), item.claim
        elif item.fraud_pattern in edits:
            assert edits[item.fraud_pattern] in broken
        if "mue" in broken:
            assert RULES["price_inflation"](item.claim, V)


def test_office_visits_may_be_billed_a_level_above_their_decision_making_er_visits_not():
    """Time may choose an office level (one above the grid), never an ER one; upcoding is
    past that, and bills visit codes clean claims bill."""
    clean = [i.claim for i in ITEMS if i.fraud_pattern == CLEAN]
    gaps = {"office": set(), "emergency": set()}
    for c in clean:
        allowed = V.max_em_level(c["diagnoses"], [p["code"] for p in c["procedures"]],
                                 len(c["medications"]))
        for p in c["procedures"]:
            if p["code"][:4] in ("9921", "9928"):
                gaps["office" if p["code"][:4] == "9921" else "emergency"].add(
                    V.procedures[p["code"]].em_level - allowed)
    assert 1 in gaps["office"] and max(gaps["office"]) == 1
    assert max(gaps["emergency"]) <= 0
    visits = [p["code"] for c in clean for p in c["procedures"] if p["code"] in V.procedures
              and V.procedures[p["code"]].em_level]
    upcoded = [p["code"] for i in ITEMS if i.fraud_pattern == "upcoding"
               for p in i.claim["procedures"] if p["code"] in V.procedures
               and V.procedures[p["code"]].em_level]
    assert set(upcoded) <= set(visits)
    assert visits.count("99214") > visits.count("99215")  # 99214: the office's commonest


def test_primary_care_draws_its_labs_in_the_office():
    clean = [i.claim for i in ITEMS if i.fraud_pattern == CLEAN
             and i.claim["provider_specialty"] in ("family_medicine", "internal_medicine")]
    with_labs = [c for c in clean if {"80061", "80053", "84443", "85025"}
                 & {p["code"] for p in c["procedures"]}]
    assert 0.1 < len(with_labs) / len(clean) < 0.8


def test_a_stream_opens_with_visits_and_frauds_not_orphaned_orders():
    """The orders of claims made only to borrow from are never billed: early in a stream
    they were 80% of the claims, and frauds 1% at a 20% rate. (Three streams: one stream's
    count of 200 runs from 7 to 30, mean 22.)"""
    frauds = 0
    for seed in (71, 72, 73):
        gen = ClaimGenerator(seed=seed, fraud_rate=0.2)
        frauds += sum(i.fraud_pattern != CLEAN for i in gen.generate(200))
        assert gen.emitted["ancillary"] < gen.emitted["visit"]
    assert frauds >= 30
