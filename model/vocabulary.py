"""The medical vocabulary: codes, drugs, specialties and the clinical links between them.

Everything here is read from the data files in `model/vocab/` (see `vocab/SOURCES.md` for
where they come from and what each column means). The links are stated per *clinical
area*: a diagnosis belongs to one area, and an area lists the procedures and drugs its
diagnoses justify and the specialties that treat it. `general.json` lists procedures any
diagnosis justifies (office visits, venipuncture, basic panels).
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from model.cms.tables import fee_schedule, mce_edit
from model.codes import range_span

TESTS = ("lab", "imaging", "cardiology_test", "pathology")  # data reviewed or ordered
# Billed charges from the Medicare price: commercial payers pay ~1.4-2.5x Medicare for
# professional services (RAND 2022), and list charges run higher; a code's typical billed
# unit charge is taken as 1.5x to 3x its national non-facility price (RVUs x CF).
MARKUP = (1.5, 3.0)
PAYABLE = frozenset("ART")  # PFS status codes Medicare pays (active, restricted, paid as TC)
PROCEDURES = ("procedure", "surgery", "injection")  # a procedure's risk
ACUTE_SETTINGS = ("em_emergency", "em_hospital")  # visits that decide on admission
# Visit families whose level may not be chosen by total time on the day: the emergency
# department's (99281-99285 have no typical time; AMA E/M guidelines, 2023). Every other
# family may be, so a claim, which carries no minutes, cannot show its visit one level
# above the medical decision making unsupported.
UNTIMED_EM = frozenset({"9928"})
# What a pharmacy adds to a fill's ingredient cost, USD (low, high): state Medicaid
# professional dispensing fees run about $9-13 a fill since CMS's 2016 covered outpatient
# drug rule, commercial and cash ones lower. A fill is charged its units plus one fee, so
# a small fill costs more a unit: one fluconazole tablet is billed $5-10, not its $0.50.
DISPENSING_FEE = (1.5, 12.0)


def fill_daily_mg(strength_mg: float, quantity: float, days_supply: float,
                  package: float = 0.0, high: float = math.inf) -> float:
    """The daily dose a fill reads as: strength x quantity / days supply.

    A drug dispensed by the package (`Drug.package`: a bottle of eye drops, an inhaler, a
    tube, a box of insulin pens) comes in whole packages, so a short course leaves most of
    one unused: 200 drops for a week of six a day. Such a fill reads as the highest dose up
    to `high` (the normal top) that it could be, from its quantity less one package to all
    of it; one package beyond the need is no overdose, nine are.

    >>> fill_daily_mg(0.05, 200, 7)  # by the unit: 200 drops in a week
    1.4285714285714286
    >>> fill_daily_mg(0.05, 200, 7, package=200, high=0.3)  # one 200-drop bottle
    0.3
    >>> round(fill_daily_mg(0.05, 2000, 7, package=200, high=0.3), 2)  # ten bottles
    12.86
    """
    most = strength_mg * quantity / days_supply
    if not package:
        return most
    least = strength_mg * max(quantity - package, 0.0) / days_supply
    return max(least, min(most, high))


def fill_top(unit_top: float, quantity: float) -> float:
    """The top charge of a typical fill of `quantity` units: `unit_top` a unit plus the top
    dispensing fee (`DISPENSING_FEE`)."""
    return unit_top * quantity + DISPENSING_FEE[1]


def fill_price_ratio(charge: float, quantity: float, unit_top: float) -> float:
    """A fill's charge against the top of a typical one (`fill_top`).

    >>> round(fill_price_ratio(8.0, 1, 4.0), 2)  # one tablet, fee included
    0.5
    """
    return charge / fill_top(unit_top, quantity)


@dataclass(frozen=True, slots=True)
class Demographics:
    """Who an item is for: `sex` None means any; ages inclusive."""

    sex: str | None
    min_age: int
    max_age: int

    def fits(self, age: int, sex: str) -> bool:
        """Unknown sex (`U`) never contradicts a sex-specific item."""
        sex_ok = self.sex is None or sex == "U" or sex == self.sex
        return sex_ok and self.min_age <= age <= self.max_age

    def within(self, other: Demographics) -> Demographics:
        """Who fits both (the other's sex where both name one)."""
        return Demographics(other.sex or self.sex, max(self.min_age, other.min_age),
                            min(self.max_age, other.max_age))


def mce_demographics(code: str) -> Demographics:
    """Whom the Medicare Code Editor's age and sex edits allow a diagnosis code for (every
    ICD-10-CM code, listed or not: `model.cms.tables.mce_edit`)."""
    e = mce_edit(code)
    if e is None:
        return Demographics(None, 0, 120)
    return Demographics(e.sex, e.min_age or 0, min(120, e.max_age if e.max_age is not None
                                                        else 120))


@dataclass(frozen=True, slots=True)
class Diagnosis:
    code: str
    description: str
    area: str
    chronic: bool
    severity: int  # 1 minor, 2 moderate/stable chronic, 3 serious/complex
    who: Demographics  # whom it is plausible for: our limits within the MCE's edits


@dataclass(frozen=True, slots=True)
class Procedure:
    code: str
    description: str
    category: str
    charge_low: float  # USD per unit, office setting (POS 11)
    charge_high: float
    em_level: int | None  # 1-5 for evaluation & management codes
    who: Demographics


@dataclass(frozen=True, slots=True)
class Drug:
    name: str
    drug_class: str
    area: str
    generic: bool
    strength_min_mg: float  # normal per-unit strength range
    strength_max_mg: float
    common_strengths_mg: tuple[float, ...]
    doses_per_day: float
    days_supply: tuple[int, ...]
    unit_price_low: float  # USD per unit (tablet, capsule, dose), before the fee
    unit_price_high: float
    who: Demographics
    package: float = 0.0  # units a package holds (drops, actuations, g, mL); 0: by the unit
    as_needed: bool = False  # taken as needed: a fill's daily dose is a ceiling of use

    @property
    def daily_max_mg(self) -> float:
        """The top of the normal daily dose: the top strength as often as meant."""
        return self.strength_max_mg * self.doses_per_day

    def dispensed(self, units: float) -> float:
        """The quantity a pharmacy dispenses for `units`: whole units, and whole packages
        of a drug dispensed by the package."""
        if self.package:
            return self.package * max(1, math.ceil(units / self.package - 1e-9))
        return max(1.0, float(round(units)))


@dataclass(frozen=True, slots=True)
class Area:
    id: str
    name: str
    specialties: frozenset[str]
    procedures: frozenset[str]
    drugs: frozenset[str]
    places_of_service: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Specialty:
    id: str
    description: str
    places_of_service: tuple[str, ...]
    procedures: frozenset[str]
    patients: Demographics  # whom it sees (OB/GYN: women; pediatrics: up to 21)


@dataclass(frozen=True, slots=True)
class PlaceOfService:
    code: str
    name: str
    charge_multiplier: float


@dataclass(frozen=True)
class Vocabulary:
    diagnoses: dict[str, Diagnosis]
    procedures: dict[str, Procedure]
    drugs: dict[str, Drug]
    areas: dict[str, Area]
    specialties: dict[str, Specialty]
    places: dict[str, PlaceOfService]
    bundles: dict[str, tuple[str, ...]]  # panel code -> component codes
    general_procedures: frozenset[str]
    categories: dict[str, Diagnosis] = field(default_factory=dict)  # ICD-10-CM category ->
    # the first listed code of it (what an unlisted code of the category reads as)
    fees: dict[str, float] = field(default_factory=dict)  # every payable CPT/HCPCS code ->
    # its national non-facility Medicare price (`fee_prices`), listed or not

    def resolve_diagnosis(self, code: str) -> Diagnosis | None:
        """The listed diagnosis, else the one standing for its ICD-10-CM category (E11.8, not
        listed, reads as E11.9: same area, severity, demographics); None for a category the
        vocabulary does not cover. The links are stated per clinical area; a category of
        several areas (Z13) reads as its stand-in's, which is why unlisted siblings are
        used only where they read alike (`sibling_reads_alike`)."""
        return self.diagnoses.get(code) or self.categories.get(code[:3])

    @functools.cached_property
    def one_area_categories(self) -> frozenset[str]:
        """ICD-10-CM categories whose listed codes all belong to one clinical area."""
        areas: dict[str, set[str]] = {}
        for d in self.diagnoses.values():
            areas.setdefault(d.code[:3], set()).add(d.area)
        return frozenset(c for c, a in areas.items() if len(a) == 1)

    def sibling_reads_alike(self, code: str) -> bool:
        """Whether an unlisted sibling of the listed `code` reads as `code` does, in every
        reading: the rules' (through the category's stand-in, `resolve_diagnosis`) and the
        model's (through the nearest ancestor with a token). Only where the category
        belongs to one area and its stand-in has the code's age and sex limits and
        severity (which sets the visit level the rules allow): in a
        category of several areas (Z13, screenings for lipids, diabetes, depression...) a
        sibling is another area's code."""
        d, stand_in = self.diagnoses.get(code), self.categories.get(code[:3])
        return (d is not None and stand_in is not None and code[:3] in self.one_area_categories
                and stand_in.who == d.who and stand_in.severity == d.severity)

    def without(self, codes: frozenset[str]) -> Vocabulary:
        """This vocabulary less `codes` (diagnosis codes, procedure codes, drug names), in
        every table and link (its prices too): what a generator that never bills them
        reads. Categories keep their stand-ins from the full list, so an unlisted code
        reads as before."""
        if not codes:
            return self
        keep = lambda xs: frozenset(x for x in xs if x not in codes)  # noqa: E731
        return Vocabulary(
            {k: d for k, d in self.diagnoses.items() if k not in codes},
            {k: q for k, q in self.procedures.items() if k not in codes},
            {k: d for k, d in self.drugs.items() if k not in codes},
            {k: replace(a, procedures=keep(a.procedures), drugs=keep(a.drugs))
             for k, a in self.areas.items()},
            {k: replace(s, procedures=keep(s.procedures)) for k, s in self.specialties.items()},
            self.places, self.bundles, keep(self.general_procedures), self.categories,
            {k: f for k, f in self.fees.items() if k not in codes})

    @functools.cached_property
    def em_floors(self) -> dict[str, int]:
        """A visit family's lowest level (its code's first four characters: 9922 for
        initial hospital care, whose lowest is 3), computed once."""
        out: dict[str, int] = {}
        for q in self.procedures.values():
            if q.em_level:
                out[q.code[:4]] = min(q.em_level, out.get(q.code[:4], 5))
        return out

    def em_ceiling(self, code: str, allowed: int) -> int:
        """The highest level of `code`'s visit family a claim whose decision making supports
        `allowed` (`max_em_level`) may bill: one more where the family may be chosen by time
        (`UNTIMED_EM`), never below the family's lowest level (`em_floors`)."""
        family = code[:4]
        return max(allowed + (family not in UNTIMED_EM), self.em_floors[family])

    @functools.cached_property
    def unlisted_by_range(self) -> dict[tuple[str, int, int], tuple[str, ...]]:
        """The payable CPT/HCPCS codes this vocabulary does not list, by their range
        (`model.codes.range_span`): what a claim's unlisted codes are drawn from."""
        out: dict[tuple[str, int, int], list[str]] = {}
        for c in sorted(self.fees):
            if c not in self.procedures and (span := range_span(c)) is not None:
                out.setdefault(span, []).append(c)
        return {k: tuple(v) for k, v in out.items()}

    def charge_top(self, code: str) -> float | None:
        """The top of a procedure code's typical billed unit charge (office setting): the
        listed range's, else `MARKUP` of its Medicare price; None for a code with neither."""
        q = self.procedures.get(code)
        if q is not None:
            return q.charge_high
        fee = self.fees.get(code)
        return None if fee is None else charge_range(fee, 0, 0)[1]

    def justified_procedures(self, diagnoses: Iterable[str]) -> frozenset[str]:
        """Procedures some diagnosis of the claim justifies (uncovered codes justify nothing)."""
        out = set(self.general_procedures)
        for code in diagnoses:
            if (dx := self.resolve_diagnosis(code)) is not None:
                out |= self.areas[dx.area].procedures
        return frozenset(out)

    def justified_drugs(self, diagnoses: Iterable[str]) -> frozenset[str]:
        out: set[str] = set()
        for code in diagnoses:
            if (dx := self.resolve_diagnosis(code)) is not None:
                out |= self.areas[dx.area].drugs
        return frozenset(out)

    def prescribes(self, specialty: str, drug: str) -> bool:
        """Whether `specialty` writes or fills `drug` in our tables: a specialty of an area
        that lists the drug, or a pharmacy (it fills every area's drugs)."""
        if specialty == "pharmacy":
            return drug in self.drugs
        return any(specialty in a.specialties and drug in a.drugs for a in self.areas.values())

    def max_em_level(self, diagnoses: Iterable[str], procedures: Iterable[str] = (),
                     prescriptions: int = 0) -> int:
        """Highest E/M level a claim supports: the 2021 medical-decision-making grid, where
        two of its three elements must meet a level (so the middle one counts):

        - problems: an acute uncomplicated illness or one stable chronic illness (severity
          1 or 2) 3, a serious problem (3) 4; one more for two or more problems that are
          not minor (the grid's "2 or more stable chronic illnesses");
        - data: the tests billed on the claim (`TESTS`): at most one 2, two 3, three 4,
          four or more 5 (the grid's "extensive": a work-up read by the one deciding);
        - risk: 2; 3 with a procedure (`PROCEDURES`); 4 with prescription drug
          management (`prescriptions` fills on the claim); 5 for a problem that is not
          minor (severity 2 or more) seen in the emergency department or the hospital
          (`ACUTE_SETTINGS`), where the visit decides on admission: the grid's "decision
          regarding hospitalization".

        A minor problem counts 3, not 2, and level 5 is reachable: otherwise no clean claim
        carries a 99285, 99223 or 99215, and everyday care (a 99213 for acute bronchitis
        with a prescription, a 99285 chest-pain work-up) reads as billed above its support
        (`model.quality.everyday`; docs/model-history.md).

        A claim whose diagnoses are all unknown supports any level (5): nothing to judge by.
        """
        known = [d for c in diagnoses if (d := self.resolve_diagnosis(c)) is not None]
        if not known:
            return 5
        worst = max(d.severity for d in known)
        problems = min(5, (3 if worst <= 2 else 4) + (sum(d.severity >= 2 for d in known) >= 2))
        lines = [q for c in procedures if (q := self.procedures.get(c)) is not None]
        tests = sum(q.category in TESTS for q in lines)
        data = min(5, max(2, tests + 1))
        risk = (5 if worst >= 2 and any(q.category in ACUTE_SETTINGS for q in lines)
                else 4 if prescriptions
                else 3 if any(q.category in PROCEDURES for q in lines) else 2)
        return sorted((problems, data, risk))[1]


def _who(row: dict) -> Demographics:
    return Demographics(row.get("sex") or None, int(row.get("min_age") or 0),
                        int(row.get("max_age") or 120))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(";") if x)


def _rows(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / name).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _json(folder: Path, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def fee_prices() -> dict[str, float]:
    """Every CPT/HCPCS code Medicare pays under the 2024 Physician Fee Schedule (status A,
    R or T) with its national non-facility price (`model.cms.tables`); 7,000-odd codes.
    Clinical lab tests and drugs are priced by other schedules and are not here."""
    schedule = fee_schedule()
    return {c: p for c, e in schedule.entries.items()
            if e.status in PAYABLE and (p := schedule.price(c)) is not None}


def charge_range(fee: float | None, low: float, high: float) -> tuple[float, float]:
    """A code's typical billed unit charge: `MARKUP` times its Medicare price where it has
    one, else the vocabulary file's own range (labs, drugs, DME: other fee schedules)."""
    if fee is None:
        return low, high
    return round(fee * MARKUP[0], 2), round(fee * MARKUP[1], 2)


def load_vocabulary(folder: Path | None = None) -> Vocabulary:
    """Read the vocabulary from `folder` (default: the copy shipped in the package)."""
    folder = folder or Path(str(resources.files("model") / "vocab"))
    diagnoses = {
        r["code"]: Diagnosis(r["code"], r["description"], r["area"], r["chronic"] == "1",
                             int(r["severity"]), _who(r).within(mce_demographics(r["code"])))
        for r in _rows(folder, "diagnoses.csv")
    }
    fees = fee_prices()
    procedures = {
        r["code"]: Procedure(r["code"], r["description"], r["category"],
                             *charge_range(fees.get(r["code"]), float(r["charge_low"]),
                                           float(r["charge_high"])),
                             int(r["em_level"]) if r["em_level"] else None, _who(r))
        for r in _rows(folder, "procedures.csv")
    }
    drugs = {
        r["name"]: Drug(r["name"], r["drug_class"], r["area"], r["generic"] == "1",
                        float(r["strength_min_mg"]), float(r["strength_max_mg"]),
                        _floats(r["common_strengths_mg"]), float(r["doses_per_day"]),
                        tuple(int(x) for x in _floats(r["days_supply"])),
                        float(r["unit_price_low"]), float(r["unit_price_high"]), _who(r),
                        float(r["package"] or 0), r["as_needed"] == "1")
        for r in _rows(folder, "drugs.csv")
    }
    areas = {
        k: Area(k, v["name"], frozenset(v["specialties"]), frozenset(v["procedures"]),
                frozenset(v["drugs"]), tuple(v["places_of_service"]))
        for k, v in _json(folder, "areas.json").items()
    }
    specialties = {
        k: Specialty(k, v["description"], tuple(v["places_of_service"]),
                     frozenset(v["procedures"]), _who(v.get("patients", {})))
        for k, v in _json(folder, "specialties.json").items()
    }
    places = {
        r["code"]: PlaceOfService(r["code"], r["name"], float(r["charge_multiplier"]))
        for r in _rows(folder, "places_of_service.csv")
    }
    bundles: dict[str, tuple[str, ...]] = {}
    for r in _rows(folder, "bundles.csv"):
        bundles[r["panel_code"]] = (*bundles.get(r["panel_code"], ()), r["component_code"])
    general = frozenset(_json(folder, "general.json")["procedures"])
    categories: dict[str, Diagnosis] = {}
    for d in diagnoses.values():  # file order: the first code of a category stands for it
        categories.setdefault(d.code[:3], d)
    return Vocabulary(diagnoses, procedures, drugs, areas, specialties, places, bundles, general,
                      categories, fees)


@functools.cache
def default_vocabulary() -> Vocabulary:
    """The shipped vocabulary, read once per process."""
    return load_vocabulary()
