"""The claim contract: what a valid health-insurance claim is, on the wire and in code.

This is the public input contract of ClaimScope (topic `claims`, one JSON claim per
message). `stream` re-exports it; `model` reads it. Decisions written down once:

- Unknown fields are **rejected** (`extra="forbid"`): a producer that misspells
  `total_charge` as `totalCharge` gets a dead letter naming the field instead of a claim
  silently scored without it.
- Charge consistency: `total_charge` must equal the sum of every line's `charge`
  (procedures, medications, revenue lines), to the cent (|difference| <= 0.01); where
  revenue lines' charges are unknown, the known ones may not exceed it (a single unknown
  one is no unknown: it is the total less the others', and must be written).
  A line's `charge` is the line total (all units), not a unit price.
- Unknowns are written explicitly: `member_age` and `provider_specialty` are `null` when the
  producer does not know them (a member or provider missing from its reference data),
  `member_sex` is `"U"`. The keys stay required, so a producer that forgets one gets a
  dead letter, not a claim silently read as unknown. The model reads an unknown as its
  field's unknown token and the Score lists it (`Score.unknown`).
- What a claim says in a terminology the model does not read (SNOMED CT, as EHR-made
  claims code services and findings) is unknown the same way, never guessed into a
  billing code: `diagnoses` `null` (none readable), a procedure line's `code` `null` (a
  service, code unknown), a revenue line with neither code, a revenue line's `charge`
  `null` (an inpatient EOB may state only the claim's total), `icd10_pcs` `null` (sent,
  not readable as ICD-10-PCS). Producers that know their codes write none of these.
- Two claim types, as payers receive them: `professional` (the default: a clinician's
  claim, the 837P / CMS-1500, procedure lines and fills) and `institutional` (a
  facility's claim, the 837I / UB-04: NUBC revenue-code lines, each with the HCPCS code of
  its service where it has one, a type of bill, and ICD-10-PCS procedures). A professional
  producer writes none of the institutional fields, and its claims are unchanged.
- Codes are checked for *format* (ICD-10-CM, CPT/HCPCS Level II, CMS POS, NUBC revenue
  codes and types of bill, ICD-10-PCS). Whether a code
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
# NUBC revenue code: 4 digits (0100 room and board ... 0450 emergency room ... 1000+).
REVENUE_PATTERN = r"^[0-9]{4}$"
TOTAL_REVENUE_CODE = "0001"  # UB-04's total-charges line: a sum, not a service
# NUBC type of bill without its leading zero: facility type, care type, frequency ("111":
# hospital, inpatient, admit through discharge).
BILL_TYPE_PATTERN = r"^[1-8][1-9][0-9A-Z]$"
# ICD-10-PCS: 7 characters of digits and letters, never I or O.
ICD10PCS_PATTERN = r"^[0-9A-HJ-NP-Z]{7}$"
ClaimType = Literal["professional", "institutional"]
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
Modifiers = Annotated[list[Annotated[str, StringConstraints(pattern=MODIFIER_PATTERN)]],
                      Field(max_length=4)]
Money = Annotated[Decimal, Field(ge=0, le=Decimal("10000000"), max_digits=12, decimal_places=2)]


class ClaimModel(BaseModel):
    """Shared config: strict about unknown fields, frozen so a validated claim stays valid."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ProcedureLine(ClaimModel):
    # null: a service the sender coded outside CPT/HCPCS (SNOMED CT): unknown to the model
    code: Annotated[str, StringConstraints(pattern=PROCEDURE_PATTERN)] | None
    units: Annotated[int, Field(ge=1, le=999, strict=True)]
    charge: Money
    modifiers: Modifiers = []
    # A service billed by time, not by units (anesthesia: X12 SV103 "MJ", a FHIR quantity in
    # minutes): the minutes it took, with `units` 1. Absent for a service billed in units.
    minutes: Annotated[int, Field(ge=1, le=1440, strict=True)] | None = None

    @model_validator(mode="after")
    def _one_unit_when_timed(self) -> ProcedureLine:
        if self.minutes is not None and self.units != 1:
            raise ValueError("a line billed in minutes has units 1")
        if self.modifiers and self.code is None:
            raise ValueError("modifiers modify a CPT/HCPCS code: a line whose code is unknown "
                             "has none")
        return self


class RevenueLine(ClaimModel):
    """One line of an institutional claim: what the facility charged under a revenue code
    (room and board, pharmacy, emergency room...), with the HCPCS code of the service
    where the line names one (outpatient lines do; inpatient room lines do not). A line
    names one or both. A revenue code written null is unknown (FHIR examples often leave
    it out), as an unknown age is; a line with neither is a service whose code is unknown
    (coded outside NUBC and CPT/HCPCS), and a charge written null is unknown (the claim's
    total is known)."""

    revenue_code: Annotated[str, StringConstraints(pattern=REVENUE_PATTERN)] | None
    code: Annotated[str, StringConstraints(pattern=PROCEDURE_PATTERN)] | None = None
    units: Annotated[int, Field(ge=1, le=9999, strict=True)]
    charge: Money | None
    modifiers: Modifiers = []

    @field_validator("revenue_code")
    @classmethod
    def _a_service(cls, code: str | None) -> str | None:
        if code == TOTAL_REVENUE_CODE:
            raise ValueError("0001 is the total-charges line, not a service")
        return code

    @model_validator(mode="after")
    def _names_a_service(self) -> RevenueLine:
        if self.modifiers and self.code is None:
            raise ValueError("modifiers modify a HCPCS code: a revenue line without one has "
                             "none")
        return self

    @property
    def names_service(self) -> bool:
        """Whether the line says what it bills for: a revenue code, a HCPCS code or both."""
        return self.revenue_code is not None or self.code is not None


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
    # 12 on a professional claim (837P, CMS-1500); an institutional one up to 25 (UB-04:
    # the principal and 24 others)
    # null: the sender's diagnoses are in no code set the model reads (or it sent none)
    diagnoses: Annotated[
        list[Annotated[str, StringConstraints(pattern=ICD10CM_PATTERN)]],
        Field(min_length=1, max_length=25),
    ] | None
    procedures: Annotated[list[ProcedureLine], Field(max_length=50)] = []
    medications: Annotated[list[MedicationLine], Field(max_length=20)] = []
    total_charge: Money
    description: Annotated[str | None, Field(max_length=2000)] = None
    claim_type: ClaimType = "professional"
    # institutional only: the type of bill (null when the producer does not know it), the
    # revenue-code lines (the facility's lines; it bills no procedure lines or fills), and
    # the ICD-10-PCS procedures performed (inpatient)
    bill_type: Annotated[str, StringConstraints(pattern=BILL_TYPE_PATTERN)] | None = None
    revenue_lines: Annotated[list[RevenueLine], Field(max_length=100)] = []
    # null: a procedure was sent under an ICD-10-PCS system whose code is not one (read by
    # nothing but an investigator: unknown rather than the claim refused)
    icd10_pcs: Annotated[list[Annotated[str, StringConstraints(pattern=ICD10PCS_PATTERN)]],
                         Field(max_length=25)] | None = []

    @field_validator("place_of_service")
    @classmethod
    def _assigned_pos(cls, pos: str) -> str:
        if pos not in ASSIGNED_POS:
            raise ValueError(f"{pos!r} is not an assigned CMS place-of-service code")
        return pos

    @field_validator("diagnoses", "icd10_pcs")
    @classmethod
    def _distinct_codes(cls, codes: list[str] | None) -> list[str] | None:
        if codes is not None and len(set(codes)) != len(codes):
            raise ValueError("codes must be distinct")
        return codes

    @model_validator(mode="after")
    def _claim_rules(self) -> Claim:
        if self.claim_type == "institutional":
            if self.procedures or self.medications:
                raise ValueError("an institutional claim bills revenue_lines, not procedures "
                                 "or medications")
            if not self.revenue_lines:
                raise ValueError("an institutional claim needs at least one revenue line")
        elif self.revenue_lines or self.bill_type is not None or self.icd10_pcs != []:
            raise ValueError("revenue_lines, bill_type and icd10_pcs belong to an "
                             "institutional claim (claim_type \"institutional\")")
        elif not self.procedures and not self.medications:
            raise ValueError("a claim needs at least one procedure or medication")
        elif len(self.diagnoses or ()) > 12:
            raise ValueError(f"{len(self.diagnoses)} diagnoses: a professional claim has at "
                             "most 12")
        if self.service_date > self.submitted_at.date():
            raise ValueError("service_date is after submitted_at")
        charges = [x.charge for x in (*self.procedures, *self.medications,
                                      *self.revenue_lines)]
        lines = sum((c for c in charges if c is not None), Decimal(0))
        if charges.count(None) == 1:
            raise ValueError(f"one line's charge is unknown: it is total_charge less the "
                             f"others' ({self.total_charge - lines:.2f}); write it")
        if None in charges:
            if lines - self.total_charge > CHARGE_TOLERANCE:
                raise ValueError(f"total_charge {self.total_charge:.2f} < the known line "
                                 f"charges' sum {lines:.2f}")
        elif abs(lines - self.total_charge) > CHARGE_TOLERANCE:
            raise ValueError(
                f"total_charge {self.total_charge:.2f} != sum of line charges {lines:.2f}"
            )
        return self

    @property
    def coded_procedures(self) -> list[ProcedureLine]:
        """The procedure lines whose CPT/HCPCS code is known: what a code-based edit,
        check or profile reads (a line of unknown code breaks no edit it cannot name)."""
        return [p for p in self.procedures if p.code is not None]

    @property
    def diagnosis_codes(self) -> list[str]:
        """The ICD-10-CM diagnoses, none when they are unknown."""
        return self.diagnoses or []

    @property
    def unknown(self) -> list[str]:
        """What this claim does not know (written null, or sex "U"): header fields, its
        diagnoses, a line's service code ("services") or charge ("line_charges"), its
        ICD-10-PCS procedures."""
        return [name for name, known in (
            ("member_age", self.member_age is not None),
            ("member_sex", self.member_sex != "U"),
            ("provider_specialty", self.provider_specialty is not None),
            ("diagnoses", self.diagnoses is not None),
            ("services", all(p.code is not None for p in self.procedures)
             and all(r.names_service for r in self.revenue_lines)),
            ("line_charges", all(x.charge is not None for x in self.revenue_lines)),
            ("icd10_pcs", self.icd10_pcs is not None)) if not known]


CLAIM_ADAPTER = TypeAdapter(Claim)


def claim_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of the claim contract, as `claimscope schema` prints it."""
    schema = Claim.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["description"] = (
        "ClaimScope claim (topic `claims`, JSON, one per message, key = member_id). "
        "Unknown fields are rejected. total_charge = sum of line charges (to the cent). "
        "service_date <= submitted_at; at least one procedure or medication (professional) "
        "or revenue line (institutional). "
        "member_age and provider_specialty are null when unknown, member_sex \"U\"; "
        "diagnoses, a line's code, a revenue line's charge and icd10_pcs null when the "
        "sender coded them in no code set the contract reads."
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
    for unknown in ("member_age", "provider_specialty", "diagnoses"):  # required: null
        fields.setdefault(unknown, None)
    if claim.claim_type == "professional":  # written as before institutional claims came
        for institutional in ("claim_type", "revenue_lines", "icd10_pcs"):
            fields.pop(institutional, None)
    else:
        fields.setdefault("icd10_pcs", None)
    for line in fields.get("procedures", []):  # required keys: null when unknown
        line.setdefault("code", None)
    for line in fields.get("revenue_lines", []):
        line.setdefault("revenue_code", None)
        line.setdefault("charge", None)
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
