"""The claim contract: what a valid health-insurance claim is, on the wire and in code.

This is the public input contract of ClaimScope (topic `claims`, one JSON claim per
message). `stream` re-exports it; `model` reads it. Decisions written down once:

- Unknown fields are **rejected** (`extra="forbid"`): a producer that misspells
  `total_charge` as `totalCharge` gets a dead letter naming the field instead of a claim
  silently scored without it.
- Charge consistency: `total_charge` must equal the sum of every procedure line's
  `charge` plus every medication's `charge`, to the cent (|difference| <= 0.01).
  A line's `charge` is the line total (all units), not a unit price.
- Unknowns are written explicitly: `member_age` and `provider_specialty` are `null` when the
  producer does not know them (a member or provider missing from its reference data),
  `member_sex` is `"U"`. The keys stay required, so a producer that forgets one gets a
  dead letter, not a claim silently read as unknown. The model reads an unknown as its
  field's unknown token and the Score lists it (`Score.unknown`).
- Codes are checked for *format* (ICD-10-CM, CPT/HCPCS Level II, CMS POS). Whether a code
  is one the model knows is the tokenizer's business: unknown-but-well-formed codes are
  valid claims and read as their nearest ancestor in their code system (model.codes).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
# ICD-10-CM: letter, digit, alphanumeric category; optional dot and 1-4 more characters.
ICD10CM_PATTERN = r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$"
# CPT Category I (5 digits; vaccine products and administrations 4 digits + A; MAAA
# 4 digits + M), II (+F), III (+T), PLA (+U); HCPCS Level II (A-V + 4 digits). The CMS edit
# tables carry every one of these kinds (0001A, 0015M).
PROCEDURE_PATTERN = r"^([0-9]{4}[0-9AFMTU]|[A-V][0-9]{4})$"
MODIFIER_PATTERN = r"^[0-9A-Z]{2}$"
# CMS place-of-service codes that are assigned (the rest of 01-99 are unassigned).
ASSIGNED_POS = frozenset(
    f"{n:02d}"
    for n in [*range(1, 28), *range(31, 35), 41, 42, *range(49, 59), *range(60, 63), 65, 66,
              71, 72, 81, 99]
)
CHARGE_TOLERANCE = Decimal("0.01")
# How claims arrive: contract JSON (a message, or JSONL a claim a line), FHIR R4, X12 837P.
# The one list of input formats; model.formats converts the other two to the contract.
Format = Literal["claim", "fhir", "x12"]

Ident = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("10000000"), max_digits=12, decimal_places=2)]


class ClaimModel(BaseModel):
    """Shared config: strict about unknown fields, frozen so a validated claim stays valid."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ProcedureLine(ClaimModel):
    code: Annotated[str, StringConstraints(pattern=PROCEDURE_PATTERN)]
    units: Annotated[int, Field(ge=1, le=999, strict=True)]
    charge: Money
    modifiers: Annotated[list[Annotated[str, StringConstraints(pattern=MODIFIER_PATTERN)]],
                         Field(max_length=4)] = []
    # A service billed by time, not by units (anesthesia: X12 SV103 "MJ", a FHIR quantity in
    # minutes): the minutes it took, with `units` 1. Absent for a service billed in units.
    minutes: Annotated[int, Field(ge=1, le=1440, strict=True)] | None = None

    @model_validator(mode="after")
    def _one_unit_when_timed(self) -> ProcedureLine:
        if self.minutes is not None and self.units != 1:
            raise ValueError("a line billed in minutes has units 1")
        return self


class MedicationLine(ClaimModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    strength_mg: Annotated[float, Field(gt=0, le=1_000_000, allow_inf_nan=False)]
    quantity: Annotated[float, Field(gt=0, le=10_000, allow_inf_nan=False)]
    days_supply: Annotated[int, Field(ge=1, le=365, strict=True)]
    charge: Money


class Claim(ClaimModel):
    """One health-insurance claim: who, by whom, where, why (diagnoses) and what (lines)."""

    claim_id: Ident
    member_id: Ident
    provider_id: Ident
    provider_specialty: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{1,47}$")] | None
    member_age: Annotated[int, Field(ge=0, le=120, strict=True)] | None
    member_sex: Literal["F", "M", "U"]
    service_date: dt.date
    submitted_at: AwareDatetime
    place_of_service: Annotated[str, StringConstraints(pattern=r"^[0-9]{2}$")]
    diagnoses: Annotated[
        list[Annotated[str, StringConstraints(pattern=ICD10CM_PATTERN)]],
        Field(min_length=1, max_length=12),
    ]
    procedures: Annotated[list[ProcedureLine], Field(max_length=50)] = []
    medications: Annotated[list[MedicationLine], Field(max_length=20)] = []
    total_charge: Money
    description: Annotated[str | None, Field(max_length=2000)] = None

    @field_validator("place_of_service")
    @classmethod
    def _assigned_pos(cls, pos: str) -> str:
        if pos not in ASSIGNED_POS:
            raise ValueError(f"{pos!r} is not an assigned CMS place-of-service code")
        return pos

    @field_validator("diagnoses")
    @classmethod
    def _distinct_diagnoses(cls, codes: list[str]) -> list[str]:
        if len(set(codes)) != len(codes):
            raise ValueError("diagnosis codes must be distinct")
        return codes

    @model_validator(mode="after")
    def _claim_rules(self) -> Claim:
        if not self.procedures and not self.medications:
            raise ValueError("a claim needs at least one procedure or medication")
        if self.service_date > self.submitted_at.date():
            raise ValueError("service_date is after submitted_at")
        lines = sum((p.charge for p in self.procedures), Decimal(0)) + sum(
            (m.charge for m in self.medications), Decimal(0)
        )
        if abs(lines - self.total_charge) > CHARGE_TOLERANCE:
            raise ValueError(
                f"total_charge {self.total_charge:.2f} != sum of line charges {lines:.2f}"
            )
        return self

    @property
    def unknown(self) -> list[str]:
        """The header fields this claim does not know (written null, or sex "U")."""
        return [name for name, known in (("member_age", self.member_age is not None),
                                         ("member_sex", self.member_sex != "U"),
                                         ("provider_specialty",
                                          self.provider_specialty is not None)) if not known]


CLAIM_ADAPTER = TypeAdapter(Claim)


def claim_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of the claim contract, as `claimscope schema` prints it."""
    schema = Claim.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "ClaimScope claim (topic `claims`, JSON, one per message, key = member_id). "
        "Unknown fields are rejected. total_charge = sum of line charges (to the cent). "
        "service_date <= submitted_at; at least one procedure or medication. "
        "member_age and provider_specialty are null when unknown, member_sex \"U\"."
    )
    return schema


def claim_json(claim: Claim) -> str:
    """Contract JSON of a claim: charges and strengths as JSON numbers, dates ISO.

    >>> from model.generator import ClaimGenerator
    >>> claim = Claim(**next(iter(ClaimGenerator(seed=1).generate(1))).claim)
    >>> parse_claim(claim_json(claim)) == claim
    True
    """
    fields = claim.model_dump(exclude_none=True)  # optional fields left out when absent
    for unknown in ("member_age", "provider_specialty"):  # required keys: null when unknown
        fields.setdefault(unknown, None)
    return json.dumps(fields, default=_plain)


def _plain(v: object) -> object:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    raise TypeError(f"cannot encode {type(v).__name__}")


def describe_errors(err: ValidationError) -> list[str]:
    """One `field: reason` string per problem, with list positions (`procedures.2.units`)."""
    out = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "claim"
        msg = e["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out


def parse_claim(raw: bytes | str) -> Claim:
    """Parse and validate one JSON claim. Raises `ValidationError` (bad JSON included)."""
    return CLAIM_ADAPTER.validate_json(raw)
