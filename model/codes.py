"""Where a code sits in its code system: the ancestors a token reads through.

A diagnosis reads as its ICD-10-CM chapter, block, category and subcategory as well as
itself, so that an unseen code still reads as its family: `E11.649` is "a type 2 diabetes
code with hypoglycaemia" (subcategory `E11.6`, category `E11`, block `E08-E13`, chapter 4)
even though no claim the model learned from carried it. The hierarchy is the CMS/CDC
tabular list as `simple-icd-10-cm` ships it.

A procedure reads as its CPT section and range (`vocab/cpt_ranges.csv`: "surgery,
cardiovascular system" for 33016-37799) or, for a HCPCS Level II code, its letter's
section. CPT category II, III and PLA codes (`1234F`, `0042T`, `0001U`) have a section each.
The ranges are the CPT code set's published structure; the codes' descriptors are the AMA's
and are not reproduced.
"""

from __future__ import annotations

import bisect
import csv
import functools
from importlib import resources
from typing import NamedTuple


class IcdLevels(NamedTuple):
    """A diagnosis code's ancestors, nearest first; None where the level does not apply
    (a 3-character code has no subcategory) or the code is not in ICD-10-CM."""

    subcategory: str | None  # e.g. E11.6, the first level below the category
    category: str | None  # E11
    block: str | None  # E08-E13, the innermost block
    chapter: str | None  # 4


@functools.cache
def icd_levels(code: str) -> IcdLevels:
    """ICD-10-CM ancestors of `code` (with or without its dot); all None when the code is
    not valid."""
    import simple_icd_10_cm as icd  # ~1 s to load its tables: only when a vocabulary is built

    if not icd.is_valid_item(code):
        return IcdLevels(None, None, None, None)
    chain = [code, *icd.get_ancestors(code)]
    category = next((c for c in chain if icd.is_category(c)), None)
    block = next((c for c in chain if icd.is_block(c)), None)
    chapter = next((c for c in chain if icd.is_chapter(c)), None)
    subs = [c for c in chain if icd.is_subcategory(c)]
    sub = subs[-1] if subs and subs[-1] != icd.add_dot(code) else None  # nearest the category
    return IcdLevels(sub, category, block, chapter)


@functools.cache
def icd_categories() -> tuple[str, ...]:
    """Every ICD-10-CM category (about 1,900): each gets a token, so a valid code of a
    category no claim carried still reads as its category, block and chapter."""
    import simple_icd_10_cm as icd

    return tuple(sorted(c for c in icd.get_all_codes(with_dots=True) if icd.is_category(c)))


class ProcedureLevels(NamedTuple):
    range: str  # "cardiovascular system", "HCPCS J"
    section: str  # "surgery", "HCPCS"


HCPCS_SECTIONS = {"A": "transport and supplies", "B": "enteral and parenteral therapy",
                  "C": "outpatient prospective payment", "E": "durable medical equipment",
                  "G": "procedures and professional services", "H": "behavioral health",
                  "J": "drugs administered other than orally", "K": "durable medical equipment",
                  "L": "orthotics and prosthetics", "M": "medical services", "P": "pathology",
                  "Q": "temporary codes", "R": "diagnostic radiology", "S": "private payer codes",
                  "T": "state Medicaid codes", "U": "coronavirus laboratory tests",
                  "V": "vision and hearing"}
CPT_SUFFIX_SECTIONS = {"F": "CPT category II", "T": "CPT category III",
                       "U": "proprietary laboratory analyses"}


@functools.cache
def _cpt_ranges() -> tuple[list[int], list[tuple[int, str, str]]]:
    path = resources.files("model") / "vocab" / "cpt_ranges.csv"
    with path.open() as fh:
        rows = sorted((int(r["start"]), int(r["end"]), r["section"], r["range"])
                      for r in csv.DictReader(fh))
    return [r[0] for r in rows], [r[1:] for r in rows]


def procedure_ranges() -> list[ProcedureLevels]:
    """Every range `procedure_levels` can give: each gets a token."""
    return ([ProcedureLevels(name, section) for _, section, name in _cpt_ranges()[1]]
            + [ProcedureLevels(f"HCPCS {letter}", "HCPCS") for letter in HCPCS_SECTIONS]
            + [ProcedureLevels(s, s) for s in CPT_SUFFIX_SECTIONS.values()])


def range_span(code: str) -> tuple[str, int, int] | None:
    """The codes of `code`'s range as (prefix, first, last number): ("", 33016, 37799) for
    a CPT code, ("G", 0, 9999) for a HCPCS one; None for other shapes (CPT category II,
    III and PLA codes) and codes in no range. The yardstick draws unlisted codes from it."""
    if procedure_levels(code) is None or not code[1:].isdigit():
        return None
    if code[0].isalpha():
        return code[0].upper(), 0, 9999
    starts, rows = _cpt_ranges()
    k = bisect.bisect_right(starts, int(code)) - 1
    return "", starts[k], rows[k][0]


def procedure_levels(code: str) -> ProcedureLevels | None:
    """The section and range of a CPT or HCPCS Level II code; None for anything else
    (a code of no known shape, or a CPT number in no range)."""
    if len(code) != 5 or not code.isascii():
        return None
    if code[0].isalpha() and code[1:].isdigit():
        section = HCPCS_SECTIONS.get(code[0].upper())
        return ProcedureLevels(f"HCPCS {code[0].upper()}", "HCPCS") if section else None
    if code[:4].isdigit() and code[4].upper() in CPT_SUFFIX_SECTIONS:
        section = CPT_SUFFIX_SECTIONS[code[4].upper()]
        return ProcedureLevels(section, section)
    if not code.isdigit():
        return None
    starts, rows = _cpt_ranges()
    k = bisect.bisect_right(starts, int(code)) - 1
    if k < 0 or int(code) > rows[k][0]:
        return None
    _, section, name = rows[k]
    return ProcedureLevels(name, section)
