"""Facility (institutional) claims of the generated world: what a hospital, emergency
department or surgical centre bills beside the clinician who saw the patient there.

Every visit at a facility place of service (inpatient 21, outpatient 22, emergency 23,
ambulatory surgical centre 24) gives two claims, as in real billing: the clinician's
professional claim and the facility's institutional one (UB-04 / 837I). The facility
bills the services of an outpatient, emergency or surgical visit under revenue codes with
their HCPCS codes, at a facility fee (FACILITY_FEE times the clinician's), and an
inpatient stay as revenue-code lines without HCPCS codes: room and board a day, pharmacy,
laboratory, supplies.

The revenue codes and their prices are this world's assumptions, not a NUBC or CMS table:
the codes are NUBC's numbers (public in CMS's manuals), the names our own words, the prices
rough ranges of US hospital chargemasters. The generator makes no fraud on facility
claims yet (docs/model.md, "Institutional claims").
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass

from model.vocabulary import Vocabulary

# The CMS place of service a facility's type of bill stands for (its first two digits:
# facility type and type of care), for an institutional claim that states no place (an
# 837I never does). NUBC's facility types against CMS's place-of-service list; a type with
# no one place (a religious non-medical facility, "other") has none here.
PLACE_OF_BILL = {
    "11": "21", "12": "21", "18": "21",  # hospital inpatient, inpatient Part B, swing bed
    "13": "22", "14": "22", "85": "22",  # hospital outpatient, non-patient, CAH outpatient
    "21": "31", "22": "31", "23": "31",  # skilled nursing
    "32": "12", "33": "12", "34": "12",  # home health
    "71": "72", "72": "65", "73": "50", "77": "50",  # RHC, dialysis, FQHC
    "75": "62", "76": "53",  # comprehensive outpatient rehabilitation, mental health centre
    "81": "34", "82": "34", "83": "24",  # hospice, ambulatory surgical centre
}


EMERGENCY_ROOM = "045"  # revenue codes 0450-0459: an outpatient claim of an ER visit


def place_of_bill(bill_type: str, revenue_codes: Iterable[str | None] = ()) -> str | None:
    """The place of service of a type of bill ("111" -> "21"): an outpatient hospital bill
    with an emergency-room line (045x) is the emergency department's, 23. None where no
    place fits.

    >>> place_of_bill("131"), place_of_bill("131", ["0450", "0300"]), place_of_bill("411")
    ('22', '23', None)
    """
    place = PLACE_OF_BILL.get(bill_type[:2])
    if place == "22" and any((c or "").startswith(EMERGENCY_ROOM) for c in revenue_codes):
        return "23"
    return place


# The places of service a facility of the world bills for, and its type of bill there
# (NUBC: facility type, type of care, frequency 1 = admit through discharge). Its claim's
# place is the one its type of bill and lines stand for (`place_of_bill`), as an 837I,
# which states no place, is read; an off-campus department (19) bills as the hospital's
# outpatient one would, so it has no facility claims of its own here.
BILL_TYPE = {"21": "111", "22": "131", "23": "131", "24": "831"}
# A facility fee against the clinician's for the same service: a uniform range
FACILITY_FEE = (1.5, 2.5)
# The revenue code a service bills under at a facility, by the procedure's category
REVENUE_OF_CATEGORY = {
    "em_emergency": "0450", "em_office": "0510", "preventive": "0510", "procedure": "0510",
    "lab": "0300", "pathology": "0310", "imaging": "0320", "surgery": "0360",
    "therapy": "0420", "cardiology_test": "0730", "injection": "0260", "vaccine": "0771",
    "behavioral": "0900", "dme": "0290", "em_hospital": "0510",
}
SURGICAL_CENTRE = "0490"  # an ASC bills its surgery under 049x


@dataclass(frozen=True, slots=True)
class StayLine:
    """A line of an inpatient stay without a HCPCS code: its revenue code, how often a
    stay has it, and its charge range (a day for room and board, else the line)."""

    revenue_code: str
    share: float
    low: float
    high: float
    per_day: bool = False


STAY = (
    StayLine("0120", 0.85, 1_800, 3_500, per_day=True),  # room and board, semi-private
    StayLine("0200", 0.15, 4_000, 9_000, per_day=True),  # intensive care
    StayLine("0250", 0.95, 80, 1_500),  # pharmacy
    StayLine("0270", 0.6, 60, 900),  # medical and surgical supplies
    StayLine("0300", 0.9, 120, 1_200),  # laboratory
    StayLine("0320", 0.4, 200, 1_100),  # diagnostic radiology
    StayLine("0450", 0.5, 600, 2_500),  # admitted through the emergency room
)
ER_FEE = STAY[-1]
# Revenue code groups (the first three digits) the model has a token for: every code
# above, each read as its group (`model.tokenizer`)
REVENUE_GROUPS = tuple(sorted({c[:3] for c in (*REVENUE_OF_CATEGORY.values(),
                                                SURGICAL_CENTRE,
                                                *(s.revenue_code for s in STAY))}))


@dataclass(frozen=True, slots=True)
class Facility:
    id: str
    place: str


def facilities(seed: int, places: dict[str, int]) -> dict[str, list[Facility]]:
    """`places[pos]` facilities for each facility place of service, ids `H<seed>-<pos><k>`."""
    return {pos: [Facility(f"H{seed}-{pos}{k:03d}", pos) for k in range(n)]
            for pos, n in places.items()}


def facility_claim(r: random.Random, v: Vocabulary, facility: Facility, visit: dict
                   ) -> dict:
    """The institutional claim of a facility for a professional `visit` claim (contract
    fields) it hosted: same member, day and diagnoses; its own lines, total and timing."""
    place = facility.place
    if place == "21":
        days = r.choice((1, 2, 2, 3, 3, 4, 5, 7))
        lines = [_stay_line(r, s, days) for s in STAY if r.random() < s.share]
        if not any(x["revenue_code"] in ("0120", "0200") for x in lines):
            lines.insert(0, _stay_line(r, STAY[0], days))
    else:
        lines = []
        for p in visit["procedures"]:
            q = v.procedures.get(p["code"])
            category = q.category if q is not None else ""
            code = SURGICAL_CENTRE if place == "24" and category in ("surgery", "procedure") \
                else "0450" if place == "23" and category.startswith("em_") \
                else REVENUE_OF_CATEGORY.get(category, "0510")
            fee = round(p["charge"] * r.uniform(*FACILITY_FEE), 2)
            lines.append({"revenue_code": code, "code": p["code"], "units": p["units"],
                          "charge": fee, "modifiers": list(p["modifiers"])})
        if place == "23" and not any(x["revenue_code"] == "0450" for x in lines):
            lines.append(_stay_line(r, ER_FEE, 1))  # the ER's own fee, with no visit code
    day = dt.date.fromisoformat(visit["service_date"])
    submitted = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(
        days=r.randrange(3, 30), seconds=r.randrange(86_400))
    dx = list(visit["diagnoses"])
    r.shuffle(dx)
    r.shuffle(lines)
    return {
        "claim_id": f"F{visit['claim_id'][1:]}", "member_id": visit["member_id"],
        "provider_id": facility.id, "provider_specialty": None,  # a hospital's taxonomy
        "member_age": visit["member_age"], "member_sex": visit["member_sex"],
        "service_date": visit["service_date"], "submitted_at": submitted.isoformat(),
        "place_of_service": place_of_bill(BILL_TYPE[place], [x["revenue_code"] for x in lines]),
        "diagnoses": dx,
        "procedures": [], "medications": [],
        "claim_type": "institutional", "bill_type": BILL_TYPE[place], "revenue_lines": lines,
        "total_charge": round(sum(x["charge"] for x in lines), 2),
    }


def _stay_line(r: random.Random, s: StayLine, days: int) -> dict:
    units = days if s.per_day else 1
    return {"revenue_code": s.revenue_code, "units": units,
            "charge": round(r.uniform(s.low, s.high) * units, 2), "modifiers": []}
