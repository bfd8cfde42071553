"""Payer edits: the CMS edits every US payer runs before a model looks at a claim, each a
channel of its own that cites the rule it applies (`Score.explanation.edits`).

An SIU reviewer cannot act on "score 0.97"; they can act on "NCCI PTP 45380/45378,
modifier indicator 0". The edits follow CMS's rules as written, from the vendored tables
(`model.cms.tables`, versions in `model/vocab/cms/VERSION.json`):

| channel    | fires when                                                               |
| ---------- | ------------------------------------------------------------------------ |
| `ncci_ptp` | a column-2 code is billed with its column-1 code by one provider for one |
|            | member on one day: modifier indicator 0 always; indicator 1 unless the   |
|            | column-2 line carries an NCCI-associated modifier (only 25 or 57 when it |
|            | is an E/M visit)                                                         |
| `mue`      | a code's units pass its MUE: MAI 1 on one line; MAI 2 and 3 over the     |
|            | provider's lines for the member that day                                 |
| `add_on`   | a type-1 add-on code billed without any of the primaries NCCI lists for  |
|            | it that day (types 2 and 3 let the contractor accept others)             |
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

"That day" is the provider's lines for the member on the claim's date of service, over the
claims that came before it and its own (`CheckState.day_lines`: in Redis in the stream, in
memory for `claimscope score`). A stream cannot wait for the rest of a day: an add-on whose
primary arrives on a later claim fires on its own claim, and a PTP pair split over two
claims is cited on the second.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from model.checks import CheckState
from model.claims import Claim
from model.cms.tables import addon_table, conflicts, mce_edit, mue, ptp_edit, versions

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
    out, seen = [], set()
    for a, _ in lines:
        for b, modifiers in lines:
            if a == b or (a, b) in seen or (edit := ptp_edit(a, b)) is None:
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


Line = tuple[str, int, tuple[str, ...]]  # code, units, modifiers


def lines_of(claim: Claim) -> list[Line]:
    return [(p.code, p.units, tuple(p.modifiers)) for p in claim.coded_procedures]


def line_text(lines: Sequence[Line]) -> str:
    """A claim's lines as one string for the day state ("99213*1*25 36415*2*"; "-" for
    none: the state's scripts split their batches on newlines and skip empty parts)."""
    return " ".join(f"{c}*{u}*{'+'.join(m)}" for c, u, m in lines) or "-"


def text_lines(text: str) -> list[Line]:
    """`line_text`'s lines back."""
    out: list[Line] = []
    for item in text.split():
        if item == "-":
            continue
        code, units, mods = item.split("*")
        out.append((code, int(units), tuple(m for m in mods.split("+") if m)))
    return out


def units_by_code(lines: Sequence[Line]) -> dict[str, int]:
    """Units per code, over all the lines."""
    out: dict[str, int] = {}
    for code, units, _ in lines:
        out[code] = out.get(code, 0) + units
    return out


def mue_hits(own: Sequence[Line], earlier: Sequence[Line] = ()) -> list[EditHit]:
    """The MUEs a claim's lines `own` pass: a line over a MAI-1 MUE; a day over a MAI-2/3
    one, counting the `earlier` lines of the provider's other claims for the member that
    day."""
    out, day = [], units_by_code([*earlier, *own])
    for code, units in sorted(units_by_code(own).items()):
        edit = mue(code)
        if edit is None or edit.units == 0:  # 0: Medicare pays none (module docstring)
            continue
        if edit.mai == 1:
            worst = max(u for c, u, _ in own if c == code)
            over, unit = worst > edit.units, f"{worst} units on one line"
        else:
            total = day[code]
            over = total > edit.units
            unit = (f"{total} units that day" if total == units else
                    f"{total} units that day over this and earlier claims")
        if over:
            out.append(EditHit("mue", (code,), f"MUE {code}: {unit}, the most is {edit.units}"
                               f" ({MAI.get(edit.mai, f'MAI {edit.mai}')}; {edit.rationale})",
                               _version("mue_practitioner.csv")))
    return out


def addon_hits(codes: Sequence[str], earlier: Sequence[str] = ()) -> list[EditHit]:
    """Type-1 add-on codes among `codes` billed without any of the primaries NCCI lists for
    them, on the claim or `earlier` that day (a type-3 add-on may go with primaries the
    contractor accepts beyond its list, a type-2 one has no list: neither is an edit a
    claim can be seen to break)."""
    table, billed, out = addon_table(), {*codes, *earlier}, []
    for code in sorted(set(codes)):
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


def mce_hits(diagnoses: Sequence[str], age: int | None, sex: str, day: dt.date
             ) -> list[EditHit]:
    """The MCE age and sex edits the member trips on `day`, the date of service."""
    out = []
    for code in diagnoses:
        for kind in conflicts(code, age, sex):
            edit = mce_edit(code)
            assert edit is not None  # conflicts() found one
            if kind == "age":
                out.append(EditHit("mce_age", (code,), f"MCE age edit: {code} is a diagnosis"
                                   " for the "
                                   f"{AGE_GROUP.get(edit.age_edit or '', edit.age_edit)} "
                                   f"age group, the member is {age}",
                                   "MCE FY2026 (age edits as of 2025-10-01)"))
            else:
                why = ("a wrong member or a made-up claim? CMS has not denied on sex edits "
                       "since 2024-10-01" if day >= SEX_EDITS_END else "CMS denies it")
                out.append(EditHit("mce_sex", (code,), f"MCE sex edit: {code} is a diagnosis"
                                   f" for {'women' if edit.sex == 'F' else 'men'} only, the "
                                   f"member is {sex} ({why})",
                                   "MCE FY2024 (the last sex edits, to 2024-09-30)"))
    return out


def claim_edits(claim: Claim, earlier: Sequence[Line] = ()) -> list[EditHit]:
    """Every edit the claim breaks, by channel (`EDIT_CHANNELS` order); `earlier`: the
    lines of the provider's claims for the member that day that came before it."""
    own = lines_of(claim)
    codes = {c for c, _, _ in own}
    cited = {h.codes for h in ptp_hits([(c, m) for c, _, m in earlier])}  # on their claims
    pairs = [h for h in ptp_hits([(c, m) for c, _, m in [*earlier, *own]])
             if h.codes not in cited and codes.intersection(h.codes)]
    return (pairs + mue_hits(own, earlier)
            + addon_hits([c for c, _, _ in own], [c for c, _, _ in earlier])
            + mce_hits(claim.diagnosis_codes, claim.member_age, claim.member_sex,
                       claim.service_date))


def day_of(claim: Claim) -> str:
    """Whose day the day's edits count: CMS's are per provider, member and date."""
    return f"{claim.member_id}|{claim.provider_id}|{claim.service_date}"


@dataclass
class PayerEdits:
    """The edits over a batch, each claim's day read from `state` (any `CheckState`: in
    Redis in the stream, in memory for `claimscope score`; None: each claim alone)."""

    state: CheckState | None = None

    def run(self, claims: Sequence[Claim]) -> list[list[EditHit]]:
        earlier: list[list[Line]] = [[] for _ in claims]
        if self.state is not None and claims:
            days = self.state.day_lines([day_of(c) for c in claims],
                                        [c.claim_id for c in claims],
                                        [line_text(lines_of(c)) for c in claims])
            earlier = [[x for text in texts for x in text_lines(text)] for texts in days]
        return [claim_edits(c, e) for c, e in zip(claims, earlier, strict=True)]
