"""The claim contract: a valid claim passes, and each kind of bad claim fails for its reason."""

from __future__ import annotations

import copy
import json

import pytest
from pydantic import ValidationError

from model.claims import claim_json_schema, describe_errors, parse_claim

BASE = {
    "claim_id": "C-1", "member_id": "M-1", "provider_id": "P-1",
    "provider_specialty": "endocrinology", "member_age": 54, "member_sex": "F",
    "service_date": "2026-03-02", "submitted_at": "2026-03-05T10:00:00+00:00",
    "place_of_service": "11", "diagnoses": ["E11.9", "I10"],
    "procedures": [{"code": "99213", "units": 1, "charge": 150.0, "modifiers": []},
                   {"code": "83036", "units": 1, "charge": 40.5, "modifiers": ["QW"]}],
    "medications": [{"name": "metformin", "strength_mg": 500, "quantity": 60,
                     "days_supply": 30, "charge": 12.0}],
    "total_charge": 202.5,
    "description": "follow-up visit",
}


def errors_for(claim: dict | str | bytes) -> list[str]:
    raw = claim if isinstance(claim, str | bytes) else json.dumps(claim)
    with pytest.raises(ValidationError) as e:
        parse_claim(raw)
    return describe_errors(e.value)


def with_(path: str, value) -> dict:
    """BASE with one field (dotted path, list indices allowed) set; `...` deletes it."""
    c = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = c
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    key = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return c


def test_base_claim_is_valid():
    claim = parse_claim(json.dumps(BASE))
    assert claim.claim_id == "C-1" and claim.total_charge == 202.5


BAD = [
    ("claim_id with a space", with_("claim_id", "C 1"), "claim_id", "pattern"),
    ("claim_id too long", with_("claim_id", "C" * 65), "claim_id", "pattern"),
    ("empty member_id", with_("member_id", ""), "member_id", "pattern"),
    ("missing provider_id", with_("provider_id", ...), "provider_id", "Field required"),
    ("negative age", with_("member_age", -3), "member_age", "greater than or equal to 0"),
    ("age over 120", with_("member_age", 121), "member_age", "less than or equal to 120"),
    ("age as a string", with_("member_age", "54"), "member_age", "valid integer"),
    ("unknown sex", with_("member_sex", "X"), "member_sex", "'F', 'M' or 'U'"),
    ("naive submitted_at", with_("submitted_at", "2026-03-05T10:00:00"), "submitted_at",
     "timezone"),
    ("service after submission", with_("service_date", "2026-03-06"), "claim",
     "service_date is after submitted_at"),
    ("bad date", with_("service_date", "2026-02-30"), "service_date", "date"),
    ("one-digit POS", with_("place_of_service", "1"), "place_of_service", "pattern"),
    ("unassigned POS", with_("place_of_service", "30"), "place_of_service",
     "not an assigned CMS place-of-service code"),
    ("no diagnoses", with_("diagnoses", []), "diagnoses", "at least 1 item"),
    ("13 diagnoses", with_("diagnoses", [f"E11.{i}" for i in range(10)] + ["I10", "J45",
                                                                          "K21.9"]),
     "claim", "13 diagnoses: a professional claim has at most 12"),
    ("ICD-9 code", with_("diagnoses", ["250.00"]), "diagnoses.0", "pattern"),
    ("lowercase ICD", with_("diagnoses", ["e11.9"]), "diagnoses.0", "pattern"),
    ("duplicate diagnoses", with_("diagnoses", ["E11.9", "E11.9"]), "diagnoses",
     "distinct"),
    ("bad CPT", with_("procedures.0.code", "9921"), "procedures.0.code", "pattern"),
    ("zero units", with_("procedures.0.units", 0), "procedures.0.units",
     "greater than or equal to 1"),
    ("negative charge", with_("procedures.0.charge", -1), "procedures.0.charge",
     "greater than or equal to 0"),
    ("sub-cent charge", with_("procedures.0.charge", 150.001), "procedures.0.charge",
     "decimal places"),
    ("long modifier", with_("procedures.1.modifiers", ["QWX"]), "procedures.1.modifiers.0",
     "pattern"),
    ("zero strength", with_("medications.0.strength_mg", 0), "medications.0.strength_mg",
     "greater than 0"),
    ("days supply 400", with_("medications.0.days_supply", 400), "medications.0.days_supply",
     "less than or equal to 365"),
    ("no service lines", {**with_("procedures", []), "medications": [], "total_charge": 0},
     "claim", "at least one procedure or medication"),
    ("total mismatch", with_("total_charge", 300.0), "claim",
     "total_charge 300.00 != sum of line charges 202.50"),
    ("unknown field", {**BASE, "totalCharge": 1}, "totalCharge", "Extra inputs"),
    ("description too long", with_("description", "x" * 2001), "description",
     "at most 2000 characters"),
    ("51 procedures", {**with_("procedures", [BASE["procedures"][0]] * 51),
                       "total_charge": 51 * 150.0 + 12.0}, "procedures", "at most 50 items"),
    ("specialty with spaces", with_("provider_specialty", "family medicine"),
     "provider_specialty", "pattern"),
]


@pytest.mark.parametrize(("case", "claim", "field", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_claim_is_rejected_with_its_reason(case, claim, field, reason):
    errors = errors_for(claim)
    assert any(e.startswith(f"{field}:") and reason in e for e in errors), errors


@pytest.mark.parametrize("raw", ['{"claim_id": "C1", "this is": not json', "[1, 2, 3]", "",
                                 b"\xff\xfe\x00", "null"])
def test_non_claims_are_rejected(raw):
    assert errors_for(raw)


def test_json_schema_describes_the_contract():
    schema = claim_json_schema()
    assert schema["additionalProperties"] is False
    assert {"claim_id", "diagnoses", "total_charge"} <= set(schema["required"])
    age = schema["properties"]["member_age"]
    assert {"type": "null"} in age["anyOf"] and "member_age" in schema["required"]
    assert next(t for t in age["anyOf"] if t.get("type") == "integer")["maximum"] == 120
