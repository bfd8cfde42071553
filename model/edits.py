"""Payer edits: the CMS edits every US payer runs before a model looks at a claim, each a
channel of its own that cites the rule it applies (`Score.explanation.edits`).

An SIU reviewer cannot act on "score 0.97"; they can act on "NCCI PTP 45380/45378,
modifier indicator 0". The edits follow CMS's rules as written, from the vendored tables
(`model.cms.tables`, versions in `model/vocab/cms/VERSION.json`):

| channel    | fires when                                                               |
| ---------- | ------------------------------------------------------------------------ |
| `ncci_ptp` | a column-2 code is billed with its column-1 code on one claim: modifier  |
|            | indicator 0 always; indicator 1 unless the column-2 line carries an      |
|            | NCCI-associated modifier (only 25 or 57 when it is an E/M visit)         |
| `mue`      | a code's units pass its MUE: MAI 1 on one line; MAI 2 and 3 per day, the |
|            | provider's lines for the member that day across claims (cross-claim      |
|            | state, `CheckState.day_units`)                                           |
| `add_on`   | a type-1 add-on code billed without any of the primaries NCCI lists for  |
|            | it on the claim (types 2 and 3 let the contractor accept others)         |
| `mce_age`  | a diagnosis the Medicare Code Editor's age edits rule out for the member |
| `mce_sex`  | a diagnosis of the other sex under the FY2024 MCE                        |

An MUE of 0 is not a units limit: CMS gives it to services Medicare does not pay at all
(consultations, preventive visits), which other payers do pay. `mue` leaves them alone, as
the rules that build the generator's stream do (`model.rules.over_mue`). 2,667 codes have an
MUE of 0 in the 2024-07-01 table. This departs from CMS's own edit, which denies them.

CMS has applied no MCE sex edits since 2024-10-01. A conflict is still worth an SIU's
look (a prostate code on a woman's claim is a wrong member or a made-up claim), so
`mce_sex` still fires; its citation says CMS denies it for a date of service before then
and no longer does after.

Add-on primaries are looked for on the claim itself, not on the provider's other claims of
that day: an add-on billed on a claim of its own beside its primary on another fires.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from model.checks import CheckState
from model.claims import Claim
from model.cms.tables import addon_table, conflicts, mce_edit, mue, ptp_edits, versions

# NCCI-associated modifiers (NCCI Policy Manual, ch. I, E.1): anatomic, global surgery, 59
# and its X{EPSU} subsets, 91, and 25/57 for E/M services. On a column-2 E/M code only 25
# and 57 count: 59 and the X modifiers may not be used with E/M services.
NCCI_MODIFIERS = frozenset({"24", "25", "27", "57", "58", "59", "78", "79", "91", "E1", "E2",
                            "E3", "E4", "FA", "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8",
                            "F9", "LC", "LD", "LM", "LT", "RC", "RI", "RT", "TA", "T1", "T2",
                            "T3", "T4", "T5", "T6", "T7", "T8", "T9", "XE", "XP", "XS", "XU"})
VISIT_MODIFIERS = frozenset({"25", "57"})
MAI = {1: "per claim line", 2: "per day, a CMS policy limit",
       3: "per day, clinical: documentation may override"}
AGE_GROUP = {"newborn": "newborn (age 0)", "pediatric": "pediatric (0-17)",
             "maternity": "maternity (9-64)", "adult": "adult (15-124)"}


class EditHit(NamedTuple):
    """One edit a claim breaks, as its citation: the channel, the codes it names, what the
    rule says, and the table it is from."""

    edit: str
    codes: tuple[str, ...]
    detail: str
    table_version: str


def is_visit(code: str) -> bool:
    """E/M services (99202-99499): NCCI lets only 25 and 57 bypass an edit on them."""
    return code.isdigit() and 99202 <= int(code) <= 99499


def _version(table: str) -> str:
    return versions()["tables"][table]["release"]


class PtpBreak(NamedTuple):
    """A pair of a claim's lines an NCCI PTP edit does not allow as billed."""

    column1: str
    column2: str
    indicator: int  # 0: never together; 1: together only with an NCCI-associated modifier
    rationale: str


def ptp_breaks(lines: Sequence[tuple[str, Sequence[str] | None]]) -> list[PtpBreak]:
    """The NCCI PTP edits a claim's (code, modifiers) lines break, once per pair: the one
    judgement the edit channel, the rules and the generator's billers share."""
    edits, out, seen = ptp_edits(), [], set()
    for a, _ in lines:
        for b, modifiers in lines:
            if a == b or (a, b) in seen or (edit := edits.edit(a, b)) is None:
                continue
            if edit.modifier not in (0, 1):  # 9: CMS marks the edit not applicable
                continue
            allow = VISIT_MODIFIERS if is_visit(b) else NCCI_MODIFIERS
            if edit.modifier == 1 and allow.intersection(modifiers or ()):
                continue
            seen.add((a, b))
            out.append(PtpBreak(a, b, edit.modifier, edit.rationale))
    return out


def ptp_hits(lines: Sequence[tuple[str, Sequence[str] | None]]) -> list[EditHit]:
    """`ptp_breaks` as citations."""
    out = []
    for a, b, indicator, rationale in ptp_breaks(lines):
        why = ("modifier indicator 0: never paid together" if indicator == 0 else
               f"modifier indicator 1: {b} needs one of "
               f"{'25, 57' if is_visit(b) else '59, XE, XP, XS, XU or an anatomic one'}"
               " to be paid with it")
        out.append(EditHit("ncci_ptp", (a, b), f"NCCI PTP {a}/{b}, {why}; {b} is included "
                           f"in {a} ({rationale})", _version("ncci_ptp_practitioner.npz")))
    return out


def units_by_code(claim: Claim) -> dict[str, int]:
    """Units billed per code on the claim, over all its lines."""
    out: dict[str, int] = {}
    for p in claim.procedures:
        out[p.code] = out.get(p.code, 0) + p.units
    return out


def mue_hits(claim: Claim, day_units: dict[str, int] | None = None) -> list[EditHit]:
    """The MUEs the claim passes: a line over a MAI-1 MUE; a day over a MAI-2/3 one, counting
    `day_units` (code -> the provider's units for the member that day, this claim's
    included; None: this claim's alone)."""
    out, day = [], day_units or units_by_code(claim)
    for code, units in sorted(units_by_code(claim).items()):
        edit = mue(code)
        if edit is None or edit.units == 0:  # 0: Medicare pays none (module docstring)
            continue
        if edit.mai == 1:
            worst = max(p.units for p in claim.procedures if p.code == code)
            over, unit = worst > edit.units, f"{worst} units on one line"
        else:
            total = max(day.get(code, units), units)
            over = total > edit.units
            unit = (f"{total} units that day" if total == units else
                    f"{total} units that day over this and earlier claims")
        if over:
            out.append(EditHit("mue", (code,), f"MUE {code}: {unit}, the most is {edit.units}"
                               f" ({MAI.get(edit.mai, f'MAI {edit.mai}')}; {edit.rationale})",
                               _version("mue_practitioner.csv")))
    return out


def addon_hits(codes: Sequence[str]) -> list[EditHit]:
    """Type-1 add-on codes billed without any of the primaries NCCI lists for them (a
    type-3 add-on may go with primaries the contractor accepts beyond its list, a type-2
    one has no list: neither is an edit a claim can be seen to break)."""
    table, billed, out = addon_table(), set(codes), []
    for code in sorted(billed):
        entry = table.get(code)
        if entry is None or entry.edit_type != 1 or billed & entry.primaries:
            continue
        shown = ", ".join(sorted(entry.primaries)[:6]) + (
            f" and {len(entry.primaries) - 6} more" if len(entry.primaries) > 6 else "")
        out.append(EditHit("add_on", (code,), f"add-on {code} billed without a primary "
                           f"procedure (type 1, only with: {shown})",
                           _version("addon.csv")))
    return out


SEX_EDITS_END = dt.date(2024, 10, 1)  # CMS applies no MCE sex edit from this date


def mce_hits(diagnoses: Sequence[str], age: int, sex: str, day: dt.date) -> list[EditHit]:
    """The MCE age and sex edits the member trips on `day`, the date of service."""
    out = []
    for code in diagnoses:
        for kind in conflicts(code, age, sex):
            edit = mce_edit(code)
            assert edit is not None  # conflicts() found one
            if kind == "age":
                out.append(EditHit("mce_age", (code,), f"MCE age edit: {code} is a "
                                   f"{AGE_GROUP.get(edit.age_edit or '', edit.age_edit)} "
                                   f"diagnosis, the member is {age}",
                                   "MCE FY2026 (age edits as of 2025-10-01)"))
            else:
                why = ("a wrong member or a made-up claim? CMS has not denied on sex edits "
                       "since 2024-10-01" if day >= SEX_EDITS_END else "CMS denies it")
                out.append(EditHit("mce_sex", (code,), f"MCE sex edit: {code} is a diagnosis"
                                   f" for {'women' if edit.sex == 'F' else 'men'} only, the "
                                   f"member is {sex} ({why})",
                                   "MCE FY2024 (the last sex edits, to 2024-09-30)"))
    return out


def claim_edits(claim: Claim, day_units: dict[str, int] | None = None) -> list[EditHit]:
    """Every edit the claim breaks, by channel (`EDIT_CHANNELS` order)."""
    return (ptp_hits([(p.code, p.modifiers) for p in claim.procedures])
            + mue_hits(claim, day_units)
            + addon_hits([p.code for p in claim.procedures])
            + mce_hits(claim.diagnoses, claim.member_age, claim.member_sex, claim.service_date))


def day_key(claim: Claim, code: str) -> str:
    """Whose day an MUE counts: CMS's per-day MUEs are per provider, member and date."""
    return f"{claim.member_id}|{claim.provider_id}|{claim.service_date}|{code}"


@dataclass
class PayerEdits:
    """The edits over a batch, per-day MUEs counted in `state` (any `CheckState`: in
    Redis in the stream, in memory for `claimscope score`; None: each claim alone)."""

    state: CheckState | None = None

    def run(self, claims: Sequence[Claim]) -> list[list[EditHit]]:
        days: list[dict[str, int] | None] = [None] * len(claims)
        if self.state is not None:
            keys, ids, units, owners = [], [], [], []
            for i, c in enumerate(claims):
                for code, n in units_by_code(c).items():
                    edit = mue(code)
                    if edit is not None and edit.units and edit.mai != 1:
                        keys.append(day_key(c, code))
                        ids.append(c.claim_id)
                        units.append(n)
                        owners.append((i, code))
            totals = self.state.day_units(keys, ids, units) if keys else []
            for (i, code), total in zip(owners, totals, strict=True):
                days[i] = (days[i] or {}) | {code: total}
        return [claim_edits(c, d) for c, d in zip(claims, days, strict=True)]

