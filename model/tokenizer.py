"""Claim -> typed tokens: the words the ClaimFormer reads.

A claim becomes a short sequence, header first, then one token per diagnosis, then one
small group per service line:

    [CLS] age sex specialty place total edits | dx dx ... | proc units charge | drug dose days price

An institutional claim (a facility's) reads its place as the facility's (`pos:23|facility`:
a hospital's fee for a service is not a clinician's) and its revenue lines as procedure
lines: a line with a HCPCS code as that code's, one without (room and board, pharmacy) as
its revenue code's group (`proc:[rev 012]`). A token list without these tokens (a
checkpoint trained before institutional claims) reads the place as the clinician's and a
line without HCPCS as the procedure OOV token.

`edits` says which payer edits the claim breaks (`model.rules.claim_edits`: an NCCI
procedure-to-procedure pair, units past an MUE, an MCE age or sex conflict, a visit level
above the 2021 E/M grid's support), read from the CMS tables in the package, as every
payer's claim editor runs them before any model: `edits:none`, `edits:ptp+em`... The
model learns what each means for fraud together with the rest of the claim; without it,
the model hardly found a visit above its grid's level, since counting a claim's problems,
tests and risks is not what attention over a few thousand steps learns
(docs/model-history.md).

Every token has a *value* (`dx:E11.9`, `charge:r3`) and a *field type* (`diagnosis`,
`proc_charge`); the model embeds value + field type + position, plus the value's
*ancestors* in its code system (`model.codes`): a diagnosis's ICD-10-CM subcategory,
category, block and chapter; a procedure's category, CPT/HCPCS range and section; a drug's
class. Rare codes borrow strength from their relatives, and an unseen code reads as its
family. Numeric facts are bucketed on log scales in 20% steps:
a line's unit charge *relative to the top of that code's
typical range* in the reference table (`r0` = at the top, `r6` = 3x above it; every code
the Physician Fee Schedule pays has a reference, listed or not, `Vocabulary.charge_top`; a
CPT/HCPCS code without one reads as typical, `TYPICAL_RATIO`, since nothing says what it
should cost, and any other code gets an absolute bucket `b31` = ~$287 instead);
a fill's charge against the top of a typical fill, its units at the drug's top unit price
plus the top dispensing fee (`model.vocabulary.fill_price_ratio`); the claim total
in absolute buckets; a fill's daily dose (strength x quantity / days supply, a drug
dispensed by the package allowed one package to spare: `model.vocabulary.fill_daily_mg`)
relative to the drug's normal daily range, its strength range times its doses a day (below
/ low / mid / high / above, and how far out; a drug taken as needed is never below:
`dose_bucket`); units, days supply and age in clinical bands, a line's
units with the kind of modifier it carries (`modifier_kind`: a separate visit, a distinct
service, an anatomic site, a repeat), which the payers' bundling edits turn on.

Order carries no meaning in a claim's diagnoses and lines, so the tokenizer reads them in a
canonical order (diagnoses by code, lines by code, units and charge; fills by drug, strength
and quantity): a claim and any shuffle of it are the same tokens, truncation included.

What a claim does not know (written null: `model.claims`) reads as its field's unknown
token, the `[OOV]` one: an unknown age, specialty, diagnoses (one `dx:[OOV]` for them all),
a line's service code, a line's charge; a line of unknown code reads its price as unknown
too, since a price means nothing without its service. Training blanks the header fields
and the lines' codes and charges (`model.training.Replacer.blank`), so that an unknown
reads as "no evidence", not as odd; unknown diagnoses read as a token training never shows,
whose vector is zero (they add nothing).

Unseen values never crash, and an unseen code never collapses into one shared token: a
diagnosis code the token list lacks reads as its nearest ICD-10-CM ancestor's token
(`dx:E11.6` for an unlisted E11.649, `dx:E11` for an unlisted E11.x where no listed code
shares the subcategory; every ICD-10-CM category has one), with that ancestor's own
ancestors; a procedure code the list lacks reads as its CPT/HCPCS range's token
(`proc:[cardiovascular system]`). Only what has no place in its code system (a code of no
ICD-10-CM category, a drug name not in the list) reads as its field's OOV token
(`dx:[OOV]`), so an unknown drug still reads as "some drug" with its dose unknown. The
reference ranges and ancestors travel with the checkpoint (tokenizer.json), not read from
the package.

Maximum length `MAX_TOKENS` = 48. Truncation order: the header always stays; at most
`MAX_DIAGNOSES` = 8 diagnoses (in canonical order); then whole service lines in canonical
order (procedures, then medications) while they fit. `Encoded.truncated` says when lines were
dropped so explanations can say so.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model.claims import Claim
from model.codes import icd_categories, icd_levels, procedure_levels, procedure_ranges
from model.facility import REVENUE_GROUPS
from model.rules import EDITS, claim_edits
from model.vocabulary import (
    DISPENSING_FEE,
    Vocabulary,
    default_vocabulary,
    fill_daily_mg,
    fill_price_ratio,
)

REFERENCE_MIN_LINES = 20  # lines of a code before a history's own price reference counts
MAX_TOKENS = 48
MAX_DIAGNOSES = 8
HEADER = 7  # [CLS] age sex specialty place total edits: the diagnoses follow
GROUP_LEVELS = 4  # ancestors a token reads through: subcategory, category, block, chapter
CHARGE_STEP = math.log(1.2)  # 20% per bucket
CHARGE_BUCKETS = 72  # $1 .. ~$500k
RATIO_BUCKETS = range(-19, 21)  # 1/30 .. 40x of the reference price
# What a code with no reference price of its own reads as when its range is known: the
# bucket most clean lines of listed codes are in. Read against its range's median top
# instead, an unlisted code's charge looks like price inflation on clean claims
# (docs/model-history.md); an insurer's history gives the code a reference of its own
# (`with_references`).
TYPICAL_RATIO = -1
AGE_BANDS = (0, 2, 6, 12, 18, 26, 36, 46, 56, 65, 75, 85)
UNIT_BANDS = (1, 2, 3, 4, 5, 10)
DAY_BANDS = (1, 4, 8, 15, 31, 61, 91)

FIELDS = ("pad", "cls", "age", "sex", "specialty", "place", "total", "diagnosis", "procedure",
          "units", "proc_charge", "drug", "dose", "days", "drug_price", "edits")
FIELD_ID = {f: i for i, f in enumerate(FIELDS)}
# The value prefix each field's tokens use, and so its OOV token `prefix:[OOV]`.
PREFIX = {"age": "age", "sex": "sex", "specialty": "spec", "place": "pos", "total": "total",
          "diagnosis": "dx", "procedure": "proc", "units": "units", "proc_charge": "charge",
          "drug": "drug", "dose": "dose", "days": "days", "drug_price": "price",
          "edits": "edits"}
DOSE_BUCKETS = ("below_10x", "below_3x", "below", "low", "mid", "high", "above", "above_3x",
                "above_10x")
PAD, CLS = "[PAD]", "[CLS]"
# A service line is [procedure, units, proc_charge] or [drug, dose, days, drug_price]:
# how far back each line token's head (the code or drug) sits.
LINE_OFFSET = {"units": 1, "proc_charge": 2, "dose": 1, "days": 2, "drug_price": 3}
NAMED = ("sex", "specialty", "place", "diagnosis", "procedure")  # label = the value itself


@functools.cache
def _band(x: float, edges: tuple[int, ...]) -> str:
    """Label of the band [edge_k, edge_k+1) that holds x, e.g. `18-25`, `85+`."""
    k = max(0, bisect.bisect_right(edges, x) - 1)
    return f"{edges[k]}+" if k == len(edges) - 1 else f"{edges[k]}-{edges[k + 1] - 1}"


def charge_bucket(usd: float) -> int:
    return min(CHARGE_BUCKETS - 1, max(0, int(math.log(max(usd, 1.0)) / CHARGE_STEP)))


def ratio_bucket(ratio: float) -> int:
    """A price against its reference, on the 20% log scale (`RATIO_BUCKETS`)."""
    return max(RATIO_BUCKETS[0], min(RATIO_BUCKETS[-1], math.floor(math.log(ratio)
                                                                   / CHARGE_STEP)))


def dose_bucket(strength: float, low: float, high: float, as_needed: bool = False) -> str:
    """Where a daily dose sits against the drug's normal range [low, high].

    A drug taken as needed (`Drug.as_needed`: a triptan, a rescue inhaler, an antiemetic)
    is filled for the attacks a month may bring, so its quantity over its days supply is
    the most it can be used, not a daily dose: nine sumatriptan tablets for 30 days are the
    usual fill, not a tenth of a dose. Below its range it reads as the range's bottom;
    only its top is a dose to judge.

    >>> dose_bucket(15, 25, 100), dose_bucket(15, 25, 100, as_needed=True)
    ('below', 'low')
    """
    if strength < low and not as_needed:
        r = low / strength
        return "below_10x" if r >= 10 else "below_3x" if r >= 3 else "below"
    strength = max(strength, low)
    if strength > high:
        r = strength / high
        return "above_10x" if r >= 10 else "above_3x" if r >= 3 else "above"
    if high <= low:
        return "mid"
    pos = (math.log(strength) - math.log(low)) / (math.log(high) - math.log(low))
    return "low" if pos < 1 / 3 else "mid" if pos < 2 / 3 else "high"


DOSE_WORDS = {"below_10x": "under a tenth of the normal range",
              "below_3x": "under a third of the normal range", "below": "below the normal range",
              "low": "low in the normal range", "mid": "mid normal range",
              "high": "high in the normal range", "above": "above the normal range",
              "above_3x": "over 3x the normal range", "above_10x": "over 10x the normal range"}


# what a token of a field the claim did not know reads as (the rest: "age unknown")
UNKNOWN_LABELS = {"diagnosis": "diagnoses unknown", "procedure": "service of unknown code",
                  "proc_charge": "line charge unknown"}
LABELS = {"age": "age {}", "sex": "sex {}", "place": "place {}", "total": "total ${:,.2f}",
          "days": "{} days supply"}
# What a line's modifiers say about it, read with its units (`units:1-1|e`): the payer's
# edits turn on them (NCCI: a pair bundled by an edit is billed together only with a
# modifier the edit allows, 25 or 57 on a visit, a distinct-service one elsewhere). The
# first kind a line has, in this order, is the one read; the rest read as no modifier.
MODIFIER_KINDS = {
    "e": frozenset({"25", "57"}),  # a separate visit the same day
    "d": frozenset({"59", "XE", "XP", "XS", "XU", "91"}),  # distinct service, repeat test
    "s": frozenset({"LT", "RT", "E1", "E2", "E3", "E4", "FA", "F1", "F2", "F3", "F4", "F5",
                    "F6", "F7", "F8", "F9", "TA", "T1", "T2", "T3", "T4", "T5", "T6", "T7",
                    "T8", "T9", "LC", "LD", "LM", "RC", "RI"}),  # anatomic site
    "r": frozenset({"76", "77"}),  # the same procedure repeated
}


def modifier_kind(modifiers: Sequence[str]) -> str:
    """The `MODIFIER_KINDS` letter a line's modifiers read as; "" for none of them.

    >>> modifier_kind(["25"]), modifier_kind(["RT", "59"]), modifier_kind(["GT"])
    ('e', 'd', '')
    """
    have = {m.upper() for m in modifiers}
    return next((k for k, mods in MODIFIER_KINDS.items() if have & mods), "")


# What each payer edit a claim breaks says (`model.rules.claim_edits`).
EDIT_WORDS = {"ptp": "an NCCI procedure-to-procedure edit (a bundled pair billed together)",
              "mue": "a medically unlikely edit (more units than the MUE)",
              "mce": "an MCE age or sex edit (a diagnosis the member cannot have)",
              "em": "a visit level above what the claim's decision-making (or time) supports"}


def edits_value(broken: Sequence[str]) -> str:
    """The token value of a set of broken edits: `none`, `ptp`, `ptp+em`..."""
    return "+".join(broken) or "none"


def outdated(saved: dict) -> list[str]:
    """What a saved token list (tokenizer.json) lacks that this tokenizer reads; empty
    when nothing. Earlier versions wrote lists without the payer-edit tokens, without unit
    tokens of a modifier kind, with daily dose ranges that lack doses a day or a drug's
    package size, or with one ancestor a token; their models were trained without what
    this tokenizer reads, so a checkpoint holding one is refused (`load`), not read
    half-way.

    >>> outdated({"tokens": [], "doses": {"metformin": [500.0, 1000.0]}, "prices": {},
    ...           "groups": []})[:3]  # doctest: +NORMALIZE_WHITESPACE
    ['no payer-edit tokens (edits:...)', 'no unit tokens of a modifier kind (units:1-1|e...)',
     'dose ranges without doses a day or package size (metformin...)']
    """
    if lacks := [k for k in ("tokens", "doses", "prices", "groups") if k not in saved]:
        return [f"no {', '.join(lacks)}"]
    tokens = set(saved["tokens"])
    out = []
    if "edits:[OOV]" not in tokens:
        out.append("no payer-edit tokens (edits:...)")
    if any(f"units:{_band(e, UNIT_BANDS)}|{k}" not in tokens
           for e in UNIT_BANDS for k in MODIFIER_KINDS):
        out.append("no unit tokens of a modifier kind (units:1-1|e...)")
    if short := [n for n, r in saved["doses"].items() if len(r) != 4]:
        out.append("dose ranges without doses a day or package size "
                   f"({', '.join(short[:3])}...)")
    if any(not isinstance(g, list) or len(g) != GROUP_LEVELS for g in saved["groups"]):
        out.append(f"tokens without their {GROUP_LEVELS} ancestors")
    named = [CLS, *(f"{p}:[OOV]" for p in PREFIX.values() if p != "edits"),
             *(f"units:{_band(e, UNIT_BANDS)}" for e in UNIT_BANDS)]
    if missing := [t for t in named if t not in tokens]:
        out.append(f"no {', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}")
    return out


class Token(NamedTuple):  # a NamedTuple: claims make ~20 of these each, on the hot path
    field: str  # one of FIELDS
    value: int  # id in the token list
    parts: tuple  # the claim's own values behind the token, for `label`

    @property
    def label(self) -> str:
        """What a person reads: "metformin 500 mg", "99213 at $150.00 (0.8x typical top)".
        Formatted on demand: only the few tokens an explanation names need it."""
        p, f = self.parts, self.field
        if p == (None,):  # what the claim did not know (model.claims)
            return UNKNOWN_LABELS.get(f, f"{f} unknown")
        if f == "proc_charge":
            code, unit, ratio = p
            return f"{code} at ${unit:,.2f}" + (f" ({ratio:.1f}x typical top)"
                                                if ratio is not None else "")
        if f == "drug_price":
            name, charge, quantity, ratio = p
            return f"{name} at ${charge:,.2f} for {quantity:g}" + (
                f" ({ratio:.1f}x a typical fill's top)" if ratio is not None else "")
        if f == "drug":
            return f"{p[0]} {p[1]:g} mg"
        if f == "dose":
            return f"{p[0]} {p[1]:g} mg a day ({DOSE_WORDS.get(p[2], 'unknown range')})"
        if f == "units":
            return f"{p[0]} unit(s)" + (f", modifier {', '.join(p[1])}" if p[1] else "")
        if f == "edits":
            return "; ".join(EDIT_WORDS[e] for e in p) if p else "no payer edit broken"
        return LABELS.get(f, "{}").format(*p) if p else "[CLS]"


@dataclass(frozen=True)
class Encoded:
    """A batch of token sequences, right-padded to the longest in the batch."""

    values: np.ndarray  # (B, T) int64 value ids
    fields: np.ndarray  # (B, T) int64 field-type ids
    lengths: np.ndarray  # (B,) real tokens per claim
    truncated: np.ndarray  # (B,) bool: service lines were dropped
    tokens: list[list[Token]]  # the tokens themselves, for explanations


class ClaimTokenizer:
    """Maps claims to value/field ids with a fixed token list (saved with each checkpoint)."""

    def __init__(self, tokens: list[str], doses: dict[str, tuple[float, ...]],
                 prices: dict[str, float], groups: list[list[int]]) -> None:
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        # drug name -> (min mg, max mg, doses a day, package): the daily range of the dose
        # buckets, and the units a package holds (0: dispensed by the unit)
        self.doses = doses
        # drugs taken as needed: a fill below the range reads as its bottom (`dose_bucket`).
        # A property of the drug, not of a history or a training, so it is read from the
        # drug table this code ships (as the payer edits' tables are), not saved with a
        # checkpoint: the tokens an as-needed fill reads as are ones training saw
        self.as_needed = frozenset(n for n, d in default_vocabulary().drugs.items()
                                   if d.as_needed)
        self.prices = prices  # "proc:CODE" / "drug:NAME" -> top of the typical unit price
        # token id -> ids of the group tokens of its ancestors (0 = none), nearest first:
        # diagnoses subcategory, category, block, chapter; procedures category, range,
        # section; drugs class
        self.groups = groups
        self.oov = {f: self.index[f"{p}:[OOV]"] for f, p in PREFIX.items()}
        # field -> value -> id, so encoding needs no string building
        self.ids: dict[str, dict[str, int]] = {f: {} for f in PREFIX}
        by_prefix = {p: f for f, p in PREFIX.items()}
        for i, t in enumerate(tokens):
            prefix, _, value = t.partition(":")
            if prefix in by_prefix:
                self.ids[by_prefix[prefix]][value] = i
        # what an unlisted CPT/HCPCS code reads as (`proc:[cardiovascular system]`)
        self.range_ids = frozenset(i for v, i in self.ids["procedure"].items()
                                   if v.startswith("[") and v != "[OOV]")
        self.cls_token = Token("cls", self.index[CLS], ())
        self.named_tokens = {(f, v): Token(f, i, (v,)) for f in NAMED
                             for v, i in self.ids[f].items() if v != "[OOV]"}

    @classmethod
    def from_vocabulary(cls, v: Vocabulary) -> ClaimTokenizer:
        tokens = [PAD, CLS]
        tokens += [f"{p}:[OOV]" for p in PREFIX.values()]
        tokens += [f"age:{_band(e, AGE_BANDS)}" for e in AGE_BANDS]
        tokens += [f"sex:{s}" for s in "FMU"]
        tokens += [f"spec:{s}" for s in sorted(v.specialties)]
        tokens += [f"pos:{p}" for p in sorted(v.places)]
        tokens += [f"pos:{p}|facility" for p in sorted(v.places)]
        tokens += [f"total:b{b}" for b in range(CHARGE_BUCKETS)]
        # listed codes, the subcategories above them and every ICD-10-CM category: what an
        # unlisted code reads as (its nearest ancestor with a token)
        dx_levels = {c: icd_levels(c) for c in v.diagnoses}
        subs = {x.subcategory for x in dx_levels.values() if x.subcategory}
        dx = sorted(set(v.diagnoses) | subs | set(icd_categories()))
        dx_levels |= {c: icd_levels(c) for c in dx if c not in dx_levels}
        tokens += [f"dx:{c}" for c in dx]
        proc_levels = {c: procedure_levels(c) for c in v.procedures}
        ranges = {x.range: x for x in procedure_ranges()}
        tokens += [f"proc:{c}" for c in sorted(v.procedures)]
        tokens += [f"proc:[{r}]" for r in sorted(ranges)]  # what an unlisted code reads as
        tokens += [f"proc:[rev {g}]" for g in REVENUE_GROUPS]  # a line without HCPCS
        tokens += [f"units:{_band(e, UNIT_BANDS)}{f'|{k}' if k else ''}" for e in UNIT_BANDS
                   for k in ("", *MODIFIER_KINDS)]
        tokens += [f"charge:{k}" for k in [*(f"b{b}" for b in range(CHARGE_BUCKETS)),
                                            *(f"r{r}" for r in RATIO_BUCKETS)]]
        tokens += [f"drug:{n}" for n in sorted(v.drugs)]
        tokens += [f"dose:{b}" for b in DOSE_BUCKETS]
        tokens += [f"days:{_band(e, DAY_BANDS)}" for e in DAY_BANDS]
        tokens += [f"price:{k}" for k in [*(f"b{b}" for b in range(CHARGE_BUCKETS)),
                                           *(f"r{r}" for r in RATIO_BUCKETS)]]
        tokens += [f"edits:{edits_value(c)}" for n in range(len(EDITS) + 1)
                   for c in itertools.combinations(EDITS, n)]
        # each token's ancestors, nearest first, as group tokens (None: the level is absent)
        ancestors: dict[str, tuple[str | None, ...]] = {}
        families = {dx_levels[c].category for c in v.diagnoses}  # categories with a listed code
        for c in dx:
            x = dx_levels[c]
            sub = x.subcategory or (c if c in subs else None)
            # a category no listed code is in has no group of its own: its token is it
            ancestors[f"dx:{c}"] = (sub and f"group:dx:{sub}", x.category in families
                                    and f"group:dx:{x.category}", f"group:dx:{x.block}",
                                    f"group:dx:chapter {x.chapter}")
        for r, x in ranges.items():
            ancestors[f"proc:[{r}]"] = (None, f"group:proc:range {r}",
                                        f"group:proc:section {x.section}", None)
        for g in REVENUE_GROUPS:
            ancestors[f"proc:[rev {g}]"] = (None, None, "group:proc:section facility", None)
        for c, p in v.procedures.items():
            x = proc_levels[c]
            ancestors[f"proc:{c}"] = (f"group:proc:{p.category}", f"group:proc:range {x.range}",
                                      f"group:proc:section {x.section}", None)
        for n, d in v.drugs.items():
            ancestors[f"drug:{n}"] = (f"group:drug:{d.drug_class}", None, None, None)
        tokens += sorted({g for a in ancestors.values() for g in a if g})
        index = {t: i for i, t in enumerate(tokens)}
        groups = [[index[g] if g else 0 for g in ancestors.get(t, (None,) * GROUP_LEVELS)]
                  for t in tokens]
        doses = {d.name: (d.strength_min_mg, d.strength_max_mg, d.doses_per_day, d.package)
                 for d in v.drugs.values()}
        # every listed or payable code has a reference (`Vocabulary.charge_top`)
        prices = {f"proc:{c}": top for c in {*v.fees, *v.procedures}
                  if (top := v.charge_top(c)) is not None}
        prices |= {f"drug:{n}": d.unit_price_high for n, d in v.drugs.items()}
        return cls(tokens, doses, prices, groups)

    # -- persistence (JSON next to the weights) -----------------------------------------

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"tokens": self.tokens, "doses": self.doses,
                                    "prices": self.prices, "groups": self.groups}))

    @classmethod
    def load(cls, path: Path) -> ClaimTokenizer:
        """Read what `save` wrote. Raises ValueError for a token list this tokenizer cannot
        read (`outdated`)."""
        d = json.loads(path.read_text())
        if problems := outdated(d):
            raise ValueError(f"{path.name} is not a token list this version reads: "
                             f"{'; '.join(problems)}")
        return cls(d["tokens"], {k: tuple(v) for k, v in d["doses"].items()}, d["prices"],
                   d["groups"])

    def with_references(self, claims: Sequence[Claim], min_lines: int = REFERENCE_MIN_LINES
                        ) -> ClaimTokenizer:
        """A copy whose price and dose references come from a history of `claims` for
        every code and drug it bills at least `min_lines` times: the 95th percentile of
        the unit price (the top of what is typical, as the vocabulary's ranges give it; a
        fill's after the top dispensing fee) and the 5th to 95th percentile of the daily
        dose. The rest keep the tables', and so does a drug dispensed by the package: its
        fills' quantities count packages, not doses, and its reading already allows one
        package to spare (`fill_daily_mg`)."""
        units: dict[str, list[float]] = {}
        daily: dict[str, list[float]] = {}
        for c in claims:
            for p in c.coded_procedures:
                units.setdefault(f"proc:{p.code}", []).append(float(p.charge) / p.units)
            for m in c.medications:
                units.setdefault(f"drug:{m.name}", []).append(
                    max(float(m.charge) - DISPENSING_FEE[1], 0.0) / m.quantity)
                if m.name not in self.doses or not self.doses[m.name][3]:  # by the unit
                    daily.setdefault(m.name, []).append(
                        m.strength_mg * m.quantity / m.days_supply)
        prices = dict(self.prices)
        prices |= {k: round(float(np.quantile(v, 0.95)), 2) for k, v in units.items()
                   if len(v) >= min_lines and np.quantile(v, 0.95) > 0}
        doses = dict(self.doses)
        doses |= {k: (float(np.quantile(v, 0.05)), float(np.quantile(v, 0.95)), 1.0, 0.0)
                  for k, v in daily.items() if len(v) >= min_lines}
        return ClaimTokenizer(self.tokens, doses, prices, self.groups)

    def coverage(self, claims: Sequence[Claim]) -> dict[str, dict[str, int]]:
        """How the vocabulary reads a history's codes: per field, the distinct values, how
        many have a token of their own, how many read through their code system's
        hierarchy only (a diagnosis as its ICD-10-CM subcategory or category, a procedure
        as its CPT/HCPCS range), and how many are unknown (their field's OOV token)."""
        seen: dict[str, set[str]] = {"diagnosis": set(), "procedure": set(), "drug": set()}
        for c in claims:
            seen["diagnosis"].update(c.diagnosis_codes)
            seen["procedure"].update(p.code for p in c.coded_procedures)
            seen["drug"].update(m.name for m in c.medications)
        read = {"diagnosis": self._diagnosis, "procedure": self._procedure,
                "drug": lambda n: self._tok("drug", n, ())}
        out = {}
        for f, values in seen.items():
            own = {v for v in values if self.ids[f].get(v) not in (None, self.oov[f])}
            unknown = sum(1 for v in values - own if read[f](v).value == self.oov[f])
            out[f] = {"distinct": len(values), "own": len(own),
                      "hierarchy": len(values) - len(own) - unknown, "unknown": unknown}
        return out

    # -- encoding -----------------------------------------------------------------------

    def tokens_of(self, claim: Claim) -> tuple[list[Token], bool]:
        """The claim's tokens in order, and whether service lines were truncated."""
        tok, named, total = self._tok, self._named, float(claim.total_charge)
        place = named("place", claim.place_of_service)
        if claim.claim_type == "institutional":
            place = self.named_tokens.get(("place", f"{claim.place_of_service}|facility"), place)
        out = [self.cls_token, self._age(claim.member_age), named("sex", claim.member_sex),
               named("specialty", claim.provider_specialty), place,
               tok("total", f"b{charge_bucket(total)}", (total,))]
        broken = claim_edits(claim, default_vocabulary())
        out.append(tok("edits", edits_value(broken), broken))
        # unknown diagnoses (coded in no code set the contract reads) read as one unknown
        # token, as an unknown header field does
        out += ([self._diagnosis(c) for c in sorted(claim.diagnoses)[:MAX_DIAGNOSES]]
                if claim.diagnoses is not None else [self.unknown_token("diagnosis")])
        lines: list[list[Token]] = []
        for p in sorted(claim.procedures, key=lambda p: (p.code or "", p.units, p.charge)):
            if p.code is None:
                lines.append(self._unknown_service(p.units))
                continue
            code = self._procedure(p.code)
            lines.append([code, self._units(p.units, p.modifiers),
                          self._price(p.code, float(p.charge) / p.units,
                                      code.value in self.range_ids)])
        for r in sorted(claim.revenue_lines, key=lambda r: (
                r.revenue_code or "", r.code or "", r.units, r.charge is None, r.charge or 0)):
            # a facility's line reads as the service its HCPCS code names, as a
            # professional line does; one without (room and board...) as its revenue
            # code's group, its charge in absolute buckets. The type of bill and the
            # ICD-10-PCS codes are not read (docs/model.md, "Institutional claims")
            if not r.names_service:
                lines.append(self._unknown_service(r.units))
                continue
            code = self._procedure(r.code) if r.code else Token("procedure", self.ids[
                "procedure"].get(f"[rev {r.revenue_code[:3]}]", self.oov["procedure"]),
                (f"revenue code {r.revenue_code}",))
            price = self.unknown_token("proc_charge") if r.charge is None else self._price(
                r.code, float(r.charge) / r.units, code.value in self.range_ids,
                name=r.code or f"revenue code {r.revenue_code}")
            lines.append([code, self._units(r.units, r.modifiers), price])
        for m in sorted(claim.medications, key=lambda m: (m.name, m.strength_mg, m.quantity)):
            rng = self.doses.get(m.name)
            if rng:
                low, high = rng[0] * rng[2], rng[1] * rng[2]
                daily = fill_daily_mg(m.strength_mg, m.quantity, m.days_supply, rng[3], high)
                dose = dose_bucket(daily, low, high, m.name in self.as_needed)
            else:
                daily, dose = m.strength_mg * m.quantity / m.days_supply, "[OOV]"
            lines.append([tok("drug", m.name, (m.name, m.strength_mg)),
                          tok("dose", dose, (m.name, daily, dose)),
                          tok("days", _band(m.days_supply, DAY_BANDS), (m.days_supply,)),
                          self._fill_price(m.name, float(m.charge), m.quantity)])
        truncated = False
        for line in lines:
            if len(out) + len(line) > MAX_TOKENS:
                truncated = True
                break
            out += line
        return out, truncated

    def _price(self, code: str | None, unit: float, in_range: bool = False,
               name: str | None = None) -> Token:
        """A service line's unit charge relative to the code's reference top price; without
        one, for a code read as its CPT/HCPCS range (`in_range`), the ratio most listed
        lines have (`TYPICAL_RATIO`); else (no code, or none known) an absolute bucket.
        `name`: what the label calls the line (default its code)."""
        top = self.prices.get(f"proc:{code}")
        name = name or code
        if top is None and in_range:
            return self._tok("proc_charge", f"r{TYPICAL_RATIO}", (name, unit, None))
        if top is None:
            return self._tok("proc_charge", f"b{charge_bucket(unit)}", (name, unit, None))
        return self._tok("proc_charge", f"r{ratio_bucket(max(unit, 0.01) / top)}",
                         (name, unit, unit / top))

    def _fill_price(self, name: str, charge: float, quantity: float) -> Token:
        """A fill's charge against the top of a typical fill of its drug
        (`fill_price_ratio`); a drug without a reference reads its unit price in absolute
        buckets."""
        top = self.prices.get(f"drug:{name}")
        if top is None:
            return self._tok("drug_price", f"b{charge_bucket(charge / quantity)}",
                             (name, charge, quantity, None))
        ratio = fill_price_ratio(max(charge, 0.01), quantity, top)
        return self._tok("drug_price", f"r{ratio_bucket(ratio)}", (name, charge, quantity, ratio))

    def _diagnosis(self, code: str) -> Token:
        """A listed code's token, else its nearest ICD-10-CM ancestor's (subcategory such
        as `E11.6`, then category), else the OOV token (a code of no ICD-10-CM category)."""
        t = self.named_tokens.get(("diagnosis", code))
        if t is not None:
            return t
        value = self.ids["diagnosis"].get(code) or self.diagnosis_ancestor(code)
        return Token("diagnosis", value or self.oov["diagnosis"], (code,))

    def diagnosis_ancestor(self, code: str) -> int | None:
        """The token id of `code`'s nearest ICD-10-CM ancestor with a token (its
        subcategory such as `E11.6`, else its category), never the code's own; None when
        there is none."""
        ids = self.ids["diagnosis"]
        sub = ids.get(code[:5]) if len(code) > 5 else None
        return sub or (ids.get(code[:3]) if len(code) > 3 else None)

    def _procedure(self, code: str) -> Token:
        """A listed code's token, else its CPT/HCPCS range's, else the OOV token."""
        t = self.named_tokens.get(("procedure", code))
        if t is not None:
            return t
        return Token("procedure", self.procedure_range(code) or self.oov["procedure"], (code,))

    def procedure_range(self, code: str) -> int | None:
        """The token id of `code`'s CPT/HCPCS range; None for a code of no range."""
        levels = procedure_levels(code)
        return self.ids["procedure"].get(f"[{levels.range}]") if levels else None

    def unknown_token(self, field: str) -> Token:
        """What the claim does not know of `field` (written null): the field's unknown
        token (its label: UNKNOWN_LABELS)."""
        return Token(field, self.oov[field], (None,))

    def _unknown_service(self, units: int) -> list[Token]:
        """A line whose service is unknown: its units, and its price unknown too (a price
        means nothing without its service). It has no modifiers (the contract's rule)."""
        return [self.unknown_token("procedure"), self._units(units, []),
                self.unknown_token("proc_charge")]

    def _named(self, field: str, value: str | None) -> Token:
        """A token whose label is its value (codes, sex, specialty, place). Known values
        come from a cache (claims repeat them); unknown ones are made fresh, so hostile
        input cannot grow the cache."""
        t = self.named_tokens.get((field, value))
        return t if t is not None else Token(field, self.oov[field], (value,))

    @functools.cache  # noqa: B019  (ages 0-120 and small unit counts: a few hundred entries)
    def _age(self, age: int | None) -> Token:
        """The age band's token; an unknown age (None) reads as the field's unknown token."""
        if age is None:
            return self.unknown_token("age")
        return self._tok("age", _band(age, AGE_BANDS), (age,))

    def _units(self, units: int, modifiers: list[str]) -> Token:
        """A line's units, with the kind of modifier it carries (`modifier_kind`)."""
        t = self._units_of_kind(units, modifier_kind(modifiers) if modifiers else "")
        return Token("units", t.value, (units, tuple(modifiers))) if modifiers else t

    @functools.cache  # noqa: B019  (unit counts x 5 kinds: a few thousand entries at most)
    def _units_of_kind(self, units: int, kind: str) -> Token:
        band = _band(units, UNIT_BANDS)
        return Token("units", self.ids["units"][f"{band}|{kind}" if kind else band], (units, ()))

    def _tok(self, field: str, value: str, parts: tuple) -> Token:
        return Token(field, self.ids[field].get(value, self.oov[field]), parts)

    def encode(self, claims: list[Claim]) -> Encoded:
        return self.pack([self.tokens_of(c) for c in claims])

    def pack(self, seqs: list[tuple[list[Token], bool]]) -> Encoded:
        """Token sequences (from `tokens_of`) -> padded id arrays."""
        width = max((len(s) for s, _ in seqs), default=1)
        values = np.zeros((len(seqs), width), dtype=np.int64)
        fields = np.zeros((len(seqs), width), dtype=np.int64)
        for i, (seq, _) in enumerate(seqs):
            values[i, : len(seq)] = [t.value for t in seq]
            fields[i, : len(seq)] = [FIELD_ID[t.field] for t in seq]
        lengths = np.array([len(s) for s, _ in seqs], dtype=np.int64)
        return Encoded(values, fields, lengths, np.array([t for _, t in seqs], dtype=bool),
                       [s for s, _ in seqs])
