"""Typed, cached loaders over the public CMS tables vendored in `model/vocab/cms/`.

Why: the rules, the generator and the explanations need the payer's own edits (which code
pairs NCCI bundles, how many units a day are plausible, which codes are add-ons, what a
service is priced at, which diagnoses conflict with a patient's age or sex) rather than
hand-picked ones. `VERSION.json` beside the files says where each came from;
`scripts/build_cms_tables.py` rebuilds them.

Each table is read once, on first use (`functools.cache`), never at import. Costs measured
on this project's machine (CPython 3.11): the first call in a fresh process, the memory it
keeps (tracemalloc), and a lookup once loaded.

| loader           | rows                     | first call | keeps   | a lookup            |
| ---------------- | ------------------------ | ---------- | ------- | ------------------- |
| `fee_schedule()` | 16,470                   | 30-80 ms   | 4.2 MB  | `price` ~0.9 us     |
| `hcpcs_level2()` | 8,033                    | 15-20 ms   | 2.1 MB  | a dict              |
| `mue_table()`    | 14,677                   | 25-35 ms   | 3.3 MB  | a dict              |
| `addon_table()`  | 668 add-ons (7,465 rows) | 10-15 ms   | 0.9 MB  | a dict              |
| `ptp_edits()`    | 1,669,820 pairs          | 20-95 ms   | 11.7 MB | `indicator` ~0.8 us |
| `mce_table()`    | 4,929                    | 8-17 ms    | 1.0 MB  | `conflicts` ~0.4 us |

The PTP pairs are not a Python dict (built from the same file, one takes 1.9 s and 206 MB):
they stay packed as one sorted uint32 array of `column1 << 16 | column2` code indexes,
searched by bisection (loading peaks at ~25 MB). Codes are HCPCS/CPT codes as billed (5
characters, no modifier); diagnosis codes are ICD-10-CM, with or without the dot.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import functools
import json
from array import array
from collections.abc import Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

__all__ = [
    "AddOn", "FeeEntry", "FeeSchedule", "HcpcsCode", "MceEdit", "Mue", "PtpEdit", "PtpEdits",
    "addon_primaries", "addon_table", "conflicts", "fee_schedule", "hcpcs_level2",
    "is_addon", "mce_edit", "mce_table", "mue", "mue_table", "price", "ptp_edit", "ptp_edits",
    "ptp_indicator", "versions",
]  # fmt: skip

AgeEdit = Literal["newborn", "pediatric", "maternity", "adult"]
_CENT = Decimal("0.01")


def folder() -> Path:
    """The vendored tables' folder (`model/vocab/cms/`)."""
    return Path(str(resources.files("model") / "vocab" / "cms"))


def _rows(name: str, where: Path | None = None) -> Iterator[dict[str, str]]:
    with open((where or folder()) / name, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


@functools.cache
def versions() -> dict[str, Any]:
    """VERSION.json: each file's source, release, licence, row count and sha256."""
    return json.loads((folder() / "VERSION.json").read_text(encoding="utf-8"))


# --- Physician Fee Schedule -----------------------------------------------------------------


class FeeEntry(NamedTuple):
    """One code's 2024 PFS row (global: no modifier)."""

    status: str  # A active, R restricted, T injections, I not valid for Medicare, X, N, B, C...
    global_days: str  # 000, 010, 090, or XXX/YYY/ZZZ/MMM (no global period; see the PFS)
    nonfac_rvu: float | None  # total RVUs outside a facility; None where CMS says NA
    fac_rvu: float | None  # total RVUs in a facility; None where CMS says NA


class FeeSchedule:
    """The 2024 Physician Fee Schedule (July 2024 file): total RVUs times the conversion
    factor. National amounts: no GPCI locality adjustment."""

    def __init__(self, entries: dict[str, FeeEntry], conversion_factor: float) -> None:
        self.entries = entries
        self.conversion_factor = conversion_factor
        self._cf = Decimal(str(conversion_factor))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, code: object) -> bool:
        return code in self.entries

    def get(self, code: str) -> FeeEntry | None:
        return self.entries.get(code)

    def price(self, code: str, facility: bool = False) -> float | None:
        """National payment in USD: total RVU x conversion factor, to the cent (half up).

        None for an unknown code, a setting CMS marks NA, or a zero RVU (carrier-priced,
        bundled or excluded codes have no national price). The status is not checked:
        `get(code).status` says whether Medicare pays the code (e.g. 99417 is `I`)."""
        entry = self.entries.get(code)
        if entry is None:
            return None
        rvu = entry.fac_rvu if facility else entry.nonfac_rvu
        if not rvu:
            return None
        return float((Decimal(str(rvu)) * self._cf).quantize(_CENT, ROUND_HALF_UP))


def _rvu(text: str) -> float | None:
    return float(text) if text else None


@functools.cache
def fee_schedule() -> FeeSchedule:
    """The fee schedule, loaded once (30-80 ms, 4.2 MB)."""
    entries = {
        row["code"]: FeeEntry(row["status"], row["global_days"], _rvu(row["nonfac_rvu"]),
                              _rvu(row["fac_rvu"]))
        for row in _rows("fee_schedule.csv")
    }
    cf = versions()["tables"]["fee_schedule.csv"]["conversion_factor"]
    return FeeSchedule(entries, float(cf))


def price(code: str, facility: bool = False) -> float | None:
    """`fee_schedule().price(code, facility)`."""
    return fee_schedule().price(code, facility)


# --- HCPCS Level II -------------------------------------------------------------------------


class HcpcsCode(NamedTuple):
    short_description: str  # CMS's own (public domain), at most 28 characters
    added: dt.date | None
    terminated: dt.date | None  # None while the code is valid


@functools.cache
def hcpcs_level2() -> dict[str, HcpcsCode]:
    """HCPCS Level II codes (letter + 4 digits) of the July 2024 file, terminated ones
    included (15-20 ms, 2.1 MB)."""

    def day(text: str) -> dt.date | None:
        return dt.date.fromisoformat(text) if text else None

    return {row["code"]: HcpcsCode(row["short_description"], day(row["added"]),
                                   day(row["terminated"]))
            for row in _rows("hcpcs_level2.csv")}  # fmt: skip


# --- Medically Unlikely Edits ---------------------------------------------------------------


class Mue(NamedTuple):
    """A practitioner MUE: the most units of the code one provider bills one patient on one
    date of service. MAI 1 = a claim-line edit; 2 = an absolute date-of-service limit
    (policy); 3 = a date-of-service edit a contractor may override with documentation."""

    units: int
    mai: int
    rationale: str


@functools.cache
def mue_table(where: Path | None = None) -> dict[str, Mue]:
    """Practitioner MUEs of 2024-07-01, by code (25-35 ms, 3.3 MB). `where`: another
    folder of tables, e.g. one `claimscope edits update --out` wrote."""
    return {row["code"]: Mue(int(row["mue"]), int(row["mai"]), row["rationale"])
            for row in _rows("mue_practitioner.csv", where)}  # fmt: skip


def mue(code: str) -> Mue | None:
    """The code's practitioner MUE; None where it has none."""
    return mue_table().get(code)


# --- Add-on codes ---------------------------------------------------------------------------


class AddOn(NamedTuple):
    """An add-on code's NCCI edit. Type 1: only the listed primaries; type 2: CMS names no
    primary (the contractor decides; `primaries` empty); type 3: the listed primaries and
    others the contractor accepts."""

    edit_type: int
    primaries: frozenset[str]


@functools.cache
def addon_table(where: Path | None = None) -> dict[str, AddOn]:
    """NCCI add-on code edits (2024-06-03), by add-on code (10-15 ms, 0.9 MB). `where`:
    another folder of tables, as for `mue_table`."""
    kinds: dict[str, int] = {}
    primaries: dict[str, set[str]] = {}
    for row in _rows("addon.csv", where):
        kinds[row["addon"]] = int(row["edit_type"])
        found = primaries.setdefault(row["addon"], set())
        if row["primary"]:
            found.add(row["primary"])
    return {code: AddOn(kinds[code], frozenset(found)) for code, found in primaries.items()}


def is_addon(code: str) -> bool:
    return code in addon_table()


def addon_primaries(code: str) -> frozenset[str]:
    """The primary codes NCCI lists for add-on `code` (empty if none or not an add-on)."""
    entry = addon_table().get(code)
    return entry.primaries if entry else frozenset()


# --- NCCI procedure-to-procedure edits ------------------------------------------------------


class PtpEdit(NamedTuple):
    """An active NCCI pair: `column2` is not paid with `column1` on the same date of service
    unless (modifier 1) an NCCI-associated modifier shows the services were distinct;
    modifier 0: never."""

    column1: str
    column2: str
    modifier: int
    rationale: str


class PtpEdits:
    """NCCI PTP practitioner edits active on 2024-07-01 (1,669,820 pairs).

    Held as the sorted uint32 keys `index(column1) << 16 | index(column2)` over a table of
    the 10,858 codes that occur, plus a uint8 modifier indicator and rationale index per
    pair: 20-95 ms to load and 11.7 MB kept, against 1.9 s and 206 MB for a dict."""

    def __init__(self, path: Path) -> None:
        with np.load(path, allow_pickle=False) as npz:
            codes = npz["codes"].tolist()
            keys = npz["column1"].astype(np.uint32) << 16 | npz["column2"]
            self._modifier = npz["modifier"].tobytes()
            self._rationale = npz["rationale"].tobytes()
            self._rationales: list[str] = npz["rationales"].tolist()
        self._codes: list[str] = codes
        self._index = {code: i for i, code in enumerate(codes)}
        self._keys = array("I", keys.tobytes())  # bisect over it: no NumPy call per lookup

    def __len__(self) -> int:
        return len(self._keys)

    def _find(self, column1: str, column2: str) -> int | None:
        i, j = self._index.get(column1), self._index.get(column2)
        if i is None or j is None:
            return None
        key = i << 16 | j
        pos = bisect.bisect_left(self._keys, key)
        return pos if pos < len(self._keys) and self._keys[pos] == key else None

    def indicator(self, column1: str, column2: str) -> int | None:
        """The modifier indicator of the pair (0 or 1), None if no active edit. Order
        matters: column 1 is the comprehensive code."""
        pos = self._find(column1, column2)
        return None if pos is None else self._modifier[pos]

    def edit(self, column1: str, column2: str) -> PtpEdit | None:
        pos = self._find(column1, column2)
        if pos is None:
            return None
        return PtpEdit(column1, column2, self._modifier[pos],
                       self._rationales[self._rationale[pos]])

    def column2_codes(self, column1: str) -> list[str]:
        """Every code bundled into `column1` (its column-2 codes), in code order."""
        i = self._index.get(column1)
        if i is None:
            return []
        lo = bisect.bisect_left(self._keys, i << 16)
        hi = bisect.bisect_left(self._keys, (i + 1) << 16)
        return [self._codes[k & 0xFFFF] for k in self._keys[lo:hi]]

    def edits_among(self, codes: Iterable[str]) -> list[PtpEdit]:
        """The active edits between any two of `codes` (a claim's lines), both orders."""
        unique = sorted(set(codes))
        found = (self.edit(a, b) for a in unique for b in unique if a != b)
        return [e for e in found if e is not None]


@functools.cache
def ptp_edits() -> PtpEdits:
    """The practitioner PTP edits, loaded once (20-95 ms, 11.7 MB)."""
    return PtpEdits(folder() / "ncci_ptp_practitioner.npz")


@functools.lru_cache(maxsize=1 << 16)
def ptp_edit(column1: str, column2: str) -> PtpEdit | None:
    """`ptp_edits().edit(column1, column2)`, remembered: the payer edits and the tokenizer
    look up every ordered pair of a claim's lines, ~16 lookups a claim, and claims repeat
    their pairs. A remembered pair is a dict hit, not a bisect over 1.7 M keys (~2 µs);
    65,536 pairs take 10-20 MB a process."""
    return ptp_edits().edit(column1, column2)


def ptp_indicator(column1: str, column2: str) -> int | None:
    """`ptp_edits().indicator(column1, column2)`."""
    return ptp_edits().indicator(column1, column2)


# --- Medicare Code Editor -------------------------------------------------------------------


class MceEdit(NamedTuple):
    """A diagnosis code's MCE edits: its age group and inclusive age range (FY2026 MCE:
    newborn 0, pediatric 0-17, maternity 9-64, adult 15-124), and the one sex it belongs
    to under the FY2024 MCE (CMS dropped sex edits from 2024-10-01; they still mark
    implausible claims)."""

    age_edit: AgeEdit | None
    min_age: int | None
    max_age: int | None
    sex: Literal["F", "M"] | None


@functools.cache
def mce_table() -> dict[str, MceEdit]:
    """Every ICD-10-CM code with an age or sex edit, dotted (8-17 ms, 1.0 MB)."""
    return {
        row["code"]: MceEdit(row["age_edit"] or None,  # type: ignore[arg-type]
                             int(row["min_age"]) if row["min_age"] else None,
                             int(row["max_age"]) if row["max_age"] else None,
                             row["sex"] or None)  # type: ignore[arg-type]
        for row in _rows("mce.csv")
    }


def _dotted(code: str) -> str:
    code = code.strip().upper()
    return code if "." in code or len(code) <= 3 else f"{code[:3]}.{code[3:]}"


def mce_edit(code: str) -> MceEdit | None:
    """The code's MCE edits (`E11.9` or `E119`); None where it has none."""
    return mce_table().get(_dotted(code))


def conflicts(code: str, age: int | None, sex: str | None) -> list[Literal["age", "sex"]]:
    """Which of the code's MCE edits the patient trips: `age` in whole years (None, an
    unknown age, trips no age edit); `sex` "F" or "M" (anything else, e.g. None or "U",
    trips no sex edit)."""
    edit = mce_edit(code)
    if edit is None:
        return []
    out: list[Literal["age", "sex"]] = []
    if edit.age_edit and age is not None and not (
            (edit.min_age or 0) <= age <= (edit.max_age or 0)):
        out.append("age")
    if edit.sex and sex in ("F", "M") and sex != edit.sex:
        out.append("sex")
    return out
