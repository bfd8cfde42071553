"""What the FHIR and X12 adapters share: the error type, code tables, drug names, ages.

Both adapters build a plain dict in the contract's shape and hand it to `finish`, so the
contract's own rules (charge totals, code formats, dates) judge a converted claim exactly
as they judge a JSON one, and a rule the contract breaks comes back as a
`ConversionError` with the source path of the field instead of the contract's name.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import ValidationError

from model import taxonomy
from model.claims import Claim
from model.vocabulary import default_vocabulary

# Identifier systems that FHIR claims and the reference data (model.formats.references)
# both read. `.example` is reserved: ClaimScope's own slots name its definitions and
# resolve nowhere.
CLAIMSCOPE_FHIR = "https://claimscope.example/fhir"
MEMBER = f"{CLAIMSCOPE_FHIR}/sid/member-id"
NPI = "http://hl7.org/fhir/sid/us-npi"
NUCC = "http://nucc.org/provider-taxonomy"

UNKNOWN_STRENGTH_MG = 1.0  # an unknown drug's strength: its dose reads as unknown anyway
DEFAULT_DAYS_SUPPLY = 30   # a fill that states no days supply: the commonest US fill

STRENGTH = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(MG|MCG|G)(?![a-z])", re.IGNORECASE)
UNIT_MG = {"mg": Decimal(1), "mcg": Decimal("0.001"), "g": Decimal(1000)}


@dataclass(frozen=True, slots=True)
class ConversionError:
    """One record of an input that did not become a claim, and where in it the cause is.

    `index` is the record's 1-based position in its input (the k-th resource of a Bundle
    or NDJSON file, the k-th CLM of an interchange); `path` is a FHIRPath
    (`Claim.item[1].productOrService`, 0-based like FHIRPath) or an X12 location
    (`2400[2].SV1-01`, loops 1-based like the TR3's LX numbers), empty where the record
    has no inner place to name (a line that is not JSON). Index 0 stands for the input as
    a whole (not JSON, not UTF-8, an X12 envelope that does not hold). A stream worker can put
    `str(error)` or the fields themselves on a dead letter.

    `skipped` marks a record left out on purpose because it is not a claim to score (a
    FHIR prior authorisation or predetermination: `use` other than `claim`): a note to
    report, not a failure to count. `str()` says "skipped".
    """

    index: int
    path: str
    message: str
    record_id: str | None = None  # the claim's id when the record names one
    unit: Literal["claim", "line"] = "claim"  # what `index` counts: JSONL counts lines
    skipped: bool = False  # a record left out on purpose, not a failure (see above)

    def __post_init__(self) -> None:
        # hostile input must not come back whole in its own error (a 10 MB CLM01)
        if self.record_id is not None and len(self.record_id) > 64:
            object.__setattr__(self, "record_id", self.record_id[:64] + "…")
        if len(self.message) > 500:
            object.__setattr__(self, "message", self.message[:500] + "…")

    def __str__(self) -> str:
        named = "" if not self.record_id else (
            f" (claim_id {self.record_id})" if self.unit == "line" else f" ({self.record_id})")
        where = f"{self.unit} {self.index}{named}" if self.index else "input"
        where += ": skipped" if self.skipped else ""
        return f"{where}: {self.path}: {self.message}" if self.path else \
            f"{where}: {self.message}"


class Unmappable(Exception):
    """Raised inside an adapter for a field with no contract value; becomes a ConversionError."""

    def __init__(self, path: str, message: str, skipped: bool = False) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message
        self.skipped = skipped  # not a claim to score (a void): a note, not a failure


def finish(index: int, record_id: str | None, fields: dict, paths: dict[str, str]
           ) -> Claim | ConversionError:
    """Validate a converted claim against the contract; a broken rule names its source path.

    `paths` maps contract field names (`procedures`, `total_charge`) to where the adapter
    read them, so `procedures.1.code` becomes e.g. `Claim.item[3].productOrService`.
    """
    try:
        return Claim.model_validate(fields)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = [str(p) for p in err["loc"]]
        where = paths.get(".".join(loc[:2])) or (paths.get(loc[0]) if loc else None)
        if not loc:  # a whole-claim rule: name the field it is about
            where = next((paths[f] for f in ("total_charge", "service_date") if f in err["msg"]
                          and f in paths), None)
        path = where or paths.get("", "claim")
        msg = err["msg"].removeprefix("Value error, ")
        return ConversionError(index, path, f"{'.'.join(loc)}: {msg}" if loc else msg,
                               record_id)


def number_text(x: float | Decimal) -> str:
    """The shortest decimal text that reads back as exactly `x` (no exponent): 2.5, 500."""
    text = format(Decimal(repr(x)) if isinstance(x, float) else x, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(value: Decimal | float | int | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def dotted_icd10(code: str) -> str:
    """X12 carries ICD-10-CM without its dot (E119); the contract with it (E11.9)."""
    code = code.strip().upper()
    return f"{code[:3]}.{code[3:]}" if len(code) > 3 and "." not in code else code


def age_on(birth: dt.date, day: dt.date) -> int:
    """Whole years from birth to day."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def birth_date_for(age: int, day: dt.date, member_id: str) -> dt.date:
    """A birth date that makes the member exactly `age` on `day`: the `age`-th birthday
    falls 0-299 days before `day` (chosen from the member id, so a member's claims mostly
    agree). Feb 29 anniversaries fall on Feb 28."""
    year = day.year - age
    anniversary = day.replace(year=year) if not (day.month == 2 and day.day == 29) else \
        dt.date(year, 2, 28)
    birth = anniversary - dt.timedelta(days=zlib.crc32(member_id.encode()) % 300)
    return birth if age_on(birth, day) == age else anniversary


@functools.cache
def _drug_names() -> re.Pattern[str]:
    names = sorted(default_vocabulary().drugs, key=len, reverse=True)  # longest wins a tie
    return re.compile(r"(?<![a-z])(" + "|".join(re.escape(n) for n in names) + r")(?![a-z])")


def strength_in(text: str, start: int = 0) -> float | None:
    """The first strength (MG, MCG or G, in mg) in `text` from `start`, or None."""
    found = STRENGTH.search(text, start)
    if found is None:
        return None
    mg = Decimal(found.group(1)) * UNIT_MG[found.group(2).lower()]
    return float(mg) if mg > 0 else None


def drug_from_text(text: str) -> tuple[str, float] | None:
    """(vocabulary name, strength in mg) from a drug description, or None.

    "metformin hydrochloride 500 MG Oral Tablet" -> ("metformin", 500.0): the first drug
    of the vocabulary named in the text, and the first strength after its name (MG, MCG
    or G). None when no listed drug is named or no strength follows it.
    """
    found = _drug_names().search(text.lower())
    if found is None:
        return None
    strength = strength_in(text, found.end())
    return None if strength is None else (found.group(1), strength)


def drug_text(name: str, strength_mg: float) -> str:
    """How the writers name a fill: "metformin 500 MG", the form `drug_from_text` reads."""
    return f"{name} {number_text(strength_mg)} MG"


def usual_days_supply(name: str) -> int:
    """Days supply for a fill that states none: the drug's usual fill, else 30 days."""
    drug = default_vocabulary().drugs.get(name)
    return drug.days_supply[0] if drug and drug.days_supply else DEFAULT_DAYS_SUPPLY


def taxonomy_of(specialty: str) -> str:
    """The NUCC code the writers give a specialty; ValueError for one without a code."""
    return taxonomy.code_of(specialty)


def specialty_of(code: str | None) -> str | None:
    """The specialty a NUCC taxonomy code reads as (model/taxonomy.py's rules); None, an
    unknown specialty, for no code, a code NUCC lacks, or one with no specialty of ours.
    A wrong or missing taxonomy is common in real claims and says nothing against the
    claim itself, so it is scored, not rejected."""
    return taxonomy.specialty(code) if code else None
