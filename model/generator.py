"""Synthetic claims with labelled fraud: the training and test data of the whole project.

A seeded population of members (stable age, sex and chronic conditions, with comorbidity)
and providers (one specialty, a usual place of service, patients it sees: OB/GYN sees
women, pediatrics members up to 21) produces claims that follow the vocabulary's clinical
links and the payers' public rules (`model.cms`), with realistic noise: comorbid diagnoses
on the claim, generic or brand prices, charges rounded to whole dollars by some billers,
new-patient, consultation, hospital and nursing-facility visit codes at the level the
claim supports (`Vocabulary.max_em_level`; one above it where the level was chosen by
time, `Vocabulary.em_ceiling`), legitimate repeats with the modifiers that make
them legitimate (59/76 on a repeated procedure, LT/RT on bilateral ones, 91 on a repeated
lab test), and unseen codes as a normal part of every stream: a share `oov_rate` of
diagnoses is a billable ICD-10-CM sibling the vocabulary does not list (with the same MCE
edits), and the same share of procedure lines a payable code of the listed code's CPT/HCPCS
range, billed at its own fee-schedule price. A fraction `fraud_rate` of claims is then
broken by one of `PATTERNS` (`FRAUDS`: a function each); the label travels beside the
claim, never inside it.

Care looks like care: about ORDER_SHARE of visits order work that another provider bills
within a week (`ANCILLARY`: an independent lab, POS 81, with a venipuncture and a few tests,
most often; imaging, DME, pathology), so labs, panels, screening tests and supplies appear
in clean claims as often as care orders them. Clean claims are billed as the NCCI
procedure-to-procedure edits allow (`_edited`: a pair never allowed together loses a line,
a pair allowed with a modifier carries it: 25 on the visit, 59/XS/XU elsewhere), in units
their MUEs allow, for members the MCE's age and sex edits allow.

Care comes at realistic rates at any stream length or feed rate: service dates follow a
clock that moves with the claims, CLAIMS_PER_MEMBER_YEAR a member on average, so a
larger population (`members`) makes the clock slower, never the members busier. About
SERIES_SHARE of members are in frequent care that is legitimate (`SERIES`: dialysis three
times a week, a physical therapy course, weekly chemotherapy, weekly psychotherapy),
including the odd second therapy session of a day billed on its own claim with modifier 76.
The cross-claim checks must learn that this is normal (`model.checks.fit_limits`).

No give-aways (`claimscope eval`'s probes check this). Of shape: diagnoses and service lines
come in random order; a fraud changes a line of a clean claim rather than adding one, so
its length is a clean claim's; a fraud's base claim is drawn like the clean stream (visits,
series sessions and ordered work at their shares); inflated charges are whole dollars as
often as clean ones; a wrong dose is made of marketed strengths. Of code identity: what a
fraud adds is borrowed from a recent clean claim (`_donor`): the unjustified line, the
higher visit level, the foreign provider, the member the claim does not fit; so every code
and specialty a fraud carries is one clean claims carry, about as often (`eval`'s identity
probe and its list of fraud-only codes). Upcoding is the exception, said in docs/model.md.

Claims come out as plain JSON-ready dicts (the wire form), because generation must run at
tens of thousands of claims per second; every one of them validates against `Claim`
(tests check this).

Pattern definitions (what each breaks, checked by the tests against `model.rules`):

- `diagnosis_treatment_mismatch`: a procedure the specialty performs (in place of a
  procedure) or a drug (in place of a fill) that no diagnosis on the claim justifies, at an
  in-range price; `variant` says which.
- `dose_out_of_range`: a marketed strength dispensed at 3x+ the daily maximum: quantity /
  days supply x strength above the drug's top strength x doses per day (a drug dispensed
  by the package: with a package to spare, `model.vocabulary.fill_daily_mg`).
- `price_inflation`: a procedure or drug line charged 3-10x the top of its normal range
  (place included; a fill: of a typical fill, dispensing fee included), or a procedure
  billed in more units than its MUE allows.
- `upcoding`: an E/M visit above the level the claim supports (its diagnoses, tests,
  procedures and prescriptions: the 2021 medical-decision-making grid) by more than the
  one level time could choose (`Vocabulary.em_ceiling`; none in the ER).
- `unbundling`: a pair of codes an NCCI PTP edit bundles, billed without the modifier the
  edit allows (the clean claim's modifier moved to the other line, or 25 on a visit
  replaced by 59, which cannot unbundle a visit).
- `demographic_impossibility`: a diagnosis the MCE's age or sex edits rule out for the
  member the claim is billed under.
- `specialty_mismatch`: a procedure the billing provider's specialty does not perform, for
  problems it does not treat (at a place the provider works in).
- `duplicate_billing`: the same member, provider, date and procedure as an earlier claim.
- `high_velocity_member`: the 5th claim of one member, from several providers, within 5
  days (a burst of five: the first four look normal and are labelled `none`).
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from model.cms.tables import conflicts, mce_edit, mue, ptp_edits
from model.codes import range_span
from model.edits import NCCI_MODIFIERS, VISIT_MODIFIERS, addon_hits, is_visit, ptp_breaks
from model.facility import BILL_TYPE, facilities, facility_claim
from model.vocabulary import (
    DISPENSING_FEE,
    Diagnosis,
    Drug,
    Procedure,
    Vocabulary,
    charge_range,
    default_vocabulary,
    fill_top,
)

PATTERNS = (
    "diagnosis_treatment_mismatch",
    "dose_out_of_range",
    "price_inflation",
    "upcoding",
    "unbundling",
    "demographic_impossibility",
    "specialty_mismatch",
    "duplicate_billing",
    "high_velocity_member",
)
CLEAN = "none"
# Patterns only the stream of claims shows (model/checks.py catches them); the rest are
# visible in a single claim, which is what the ClaimFormer's fraud head learns from.
CROSS_CLAIM_PATTERNS = ("duplicate_billing", "high_velocity_member")
SINGLE_CLAIM_PATTERNS = tuple(p for p in PATTERNS if p not in CROSS_CLAIM_PATTERNS)
VELOCITY_NORMAL = 4  # claims of a burst before the ones labelled fraud (a week of a visit
# and the work it orders is three or four claims: a learned limit of 4 in 7 days)
START = dt.date(2026, 1, 1)  # fixed, so a seed gives the same claims on any day
CLAIMS_PER_MEMBER_YEAR = 10.0  # the clock: service days advance so members average this
SERIES_SHARE = 0.01  # members in frequent, legitimate care (SERIES)
SECOND_SESSION = 0.05  # therapy sessions followed by a second one the same day
VISITS_KEPT = 200_000  # visits remembered to avoid unlabelled duplicates (see __init__)
FACILITY_STAFF = 4  # clinicians of a facility place of service per facility
FACILITY_SEED = 15_485_863  # the facility claims' stream: seed + this, no other stream's
ORDER_SHARE = 0.35  # visits that order work from another provider (labs, imaging...)
# Who does the ordered work, and how often: most orders are labs (a venipuncture and a few
# tests at an independent lab), then imaging, DME, pathology.
ANCILLARY = {"laboratory": 0.7, "radiology": 0.15, "dme_supplier": 0.1, "pathology": 0.05}
MUE_SHARE = 0.3  # inflated procedure lines inflated in units past their MUE, not price
MUE_MOST = 100  # MUEs above it are drug units (J-codes), billed past them by price instead
KEEP_PAIR = 0.3  # pairs an edit allows with a modifier that clean claims keep (with one)
REPEAT_TEST = 0.1  # lab claims with a panel that repeat one of its tests later that day (91)
BASE_TRIES = 20  # clean claims tried as an upcoding's base before giving up on this one
BY_TIME = 0.25  # visits billed one level above their decision making, chosen by time
DONOR_TRIES = 200  # clean claims looked at for a fraud's borrowed part before a new base
# Areas whose chronic conditions tend to come together (metabolic syndrome and friends).
COMORBID = {
    "diabetes": ("hypertension_cardiac", "lipids", "renal"),
    "hypertension_cardiac": ("lipids", "diabetes"),
    "respiratory_chronic": ("hypertension_cardiac", "mental_health"),
    "mental_health": ("musculoskeletal_chronic",),
}


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    age: int
    sex: str
    chronic: tuple[str, ...]  # diagnosis codes the member carries


@dataclass(frozen=True, slots=True)
class Provider:
    id: str
    specialty: str
    place: str


@dataclass(frozen=True, slots=True)
class Series:
    """Care given several times a week, for a course of weeks or for good."""

    name: str
    specialty: str
    diagnoses: tuple[str, ...]  # the condition: the member carries one of these
    also: tuple[str, ...]  # diagnoses every session adds (encounter and status codes)
    codes: tuple[str, ...]  # the first is billed every session; each other half the time
    gaps: tuple[int, ...]  # days between sessions, in turn
    weeks: int  # a course's length; 0: ongoing


SERIES = (
    Series("dialysis", "nephrology", ("N18.6",), ("Z99.2",), ("90935",), (2, 2, 3), 0),
    Series("physical_therapy", "physical_therapy", ("M54.50", "M17.11", "M54.16", "S83.511A"),
           (), ("97110", "97112", "97140", "97530"), (2, 2, 3), 8),
    Series("chemotherapy", "oncology", ("C50.911", "C34.90", "C18.9"), ("Z51.11",),
           ("96413", "96415"), (7,), 16),
    Series("behavioural_health", "psychiatry", ("F33.1", "F41.1"), (), ("90834", "90837"),
           (7,), 0),
)


@dataclass(slots=True)
class Plan:
    """A member's place in a series: who gives it, and when this course ends."""

    series: Series
    provider: Provider
    condition: str
    session: int = 0
    course_end: int | None = None  # ordinal day; None: ongoing


@dataclass(frozen=True, slots=True)
class LabelledClaim:
    claim: dict
    fraud_pattern: str
    variant: str | None = None  # diagnosis_treatment_mismatch: "drug" or "procedure"


# The fraud patterns by name: each a small function of the generator that breaks clean
# claims its own way and returns the claims it adds to the stream, labelled (none when there
# is nothing to break yet: the stream moves on). Filled by `fraud`; its names are PATTERNS.
Fraud = Callable[["ClaimGenerator"], list[LabelledClaim]]
FRAUDS: dict[str, Fraud] = {}


def fraud(pattern: str) -> Callable[[Fraud], Fraud]:
    """Register a function as `pattern`'s in FRAUDS."""
    def register(f: Fraud) -> Fraud:
        FRAUDS[pattern] = f
        return f
    return register


@functools.cache
def unlisted_siblings(category: str, listed: frozenset[str]) -> tuple[str, ...]:
    """Billable ICD-10-CM codes of `category` (e.g. "E11") that are not in `listed`."""
    import simple_icd_10_cm as icd

    if not icd.is_valid_item(category):
        return ()
    return tuple(sorted(c for c in icd.get_descendants(category)
                        if icd.is_leaf(c) and c not in listed))


@functools.cache
def same_edit_siblings(code: str, listed: frozenset[str]) -> tuple[str, ...]:
    """The unlisted siblings of `code` with its MCE age and sex edits: none of them makes
    a clean claim demographically impossible where `code` does not."""
    edit = mce_edit(code)
    return tuple(c for c in unlisted_siblings(code[:3], listed) if mce_edit(c) == edit)


def day_units_within_mue(line: dict, earlier: dict) -> dict:
    """`line`, its units cut (and its charge with them) so that with `earlier`'s lines of
    the same code, a claim of the same member, provider and day, they stay within the
    code's per-day MUE, as an honest biller keeps a second session of the day (the payer
    counts the day, modifier 76 or not). At least one unit is left."""
    limit = mue(line["code"])
    if limit is None or not limit.units:
        return line
    room = limit.units - sum(x["units"] for x in earlier["procedures"]
                             if x["code"] == line["code"])
    if line["units"] <= max(1, room):
        return line
    units = max(1, room)
    return line | {"units": units, "charge": round(line["charge"] / line["units"] * units, 2)}


class ClaimGenerator:
    """Seeded claim stream. Same (seed, fraud_rate, patterns) -> same claims, in order.

    Cost: building the population takes ~50 ms per 10,000 members; each claim then costs
    tens of microseconds.
    """

    def __init__(self, *, seed: int = 0, fraud_rate: float = 0.05,
                 patterns: tuple[str, ...] = PATTERNS, size: int = 20_000,
                 members: int | None = None, providers: int | None = None,
                 vocab: Vocabulary | None = None,
                 oov_rate: float = 0.1, label_noise: float = 0.0,
                 heldout: frozenset[str] = frozenset()) -> None:
        """`size`: the claims the population is for (members: a sixth of it, at least
        500, unless `members` says; providers: a fortieth, at least 150, unless
        `providers` says); the clock then covers `size` claims in about
        size / 6 / CLAIMS_PER_MEMBER_YEAR years. `heldout`: diagnosis codes, procedure
        codes and drug names never billed (`model.training.heldout_codes`): a training
        history that has not seen them, as an insurer's never saw every code."""
        unknown = set(patterns) - set(FRAUDS)
        if unknown:
            raise ValueError(f"unknown fraud pattern(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(PATTERNS)}")
        for name, x in (("fraud rate", fraud_rate), ("oov rate", oov_rate),
                        ("label noise", label_noise)):
            if not 0 <= x <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {x}")
        self.oov_rate, self.label_noise = oov_rate, label_noise
        full = vocab or default_vocabulary()
        self.v = full.without(heldout)
        self.listed = frozenset(full.diagnoses)  # unlisted siblings are unlisted in full
        self.rng = random.Random(seed)
        self.seed, self.fraud_rate, self.patterns = seed, fraud_rate, tuple(patterns)
        self._index()
        self.members = [self._member(k) for k in range(members or max(500, size // 6))]
        self.providers = self._providers(providers or max(150, size // 40))
        self.claims_per_day = len(self.members) * CLAIMS_PER_MEMBER_YEAR / 365
        self.plans: dict[str, Plan] = {}  # member id -> their frequent care
        # clean claims emitted so far, by kind: what fraud bases are drawn in proportion to
        self.emitted = {"visit": 0, "session": 0, "ancillary": 0}
        self._sessions: list[tuple[int, int, str]] = []  # heap of (day, tiebreak, member)
        self._enrol()
        self.unlisted: dict[str, Procedure] = {}  # unlisted codes billed (_unlisted_sibling)
        self.recent: deque[dict] = deque(maxlen=500)  # clean claims frauds borrow from
        self.queued: deque[dict] = deque()  # ordered work, billed after its visit
        # (member, provider, day) billed lately: a second claim of a visit would read as
        # duplicate billing. Bounded, so an endless feed (`claimscope up`) stays flat: the
        # set of the last VISITS_KEPT visits (unbounded, it grows with every claim;
        # docs/model-history.md).
        self.visits: set[tuple[str, str, dt.date]] = set()
        self._visit_order: deque[tuple[str, str, dt.date]] = deque()
        self.count = 0
        # facilities and their claims (model.facility): a stream of their own, so that
        # the professional claims are the same with them as they were before them
        self.facility_rng = random.Random(seed + FACILITY_SEED)
        hosted = Counter(p.place for p in self.providers if p.place in BILL_TYPE)
        self.facilities = facilities(seed, {pos: max(2, n // FACILITY_STAFF)
                                            for pos, n in hosted.items()})

    # -- population ---------------------------------------------------------------------

    def _index(self) -> None:
        v = self.v
        self.area_dx: dict[str, list[Diagnosis]] = {a: [] for a in v.areas}
        for d in v.diagnoses.values():
            self.area_dx[d.area].append(d)
        self.chronic_dx = [d for d in v.diagnoses.values() if d.chronic]
        self.acute_dx = {a: [d for d in dxs if not d.chronic] for a, dxs in self.area_dx.items()}
        self._fit_cache: dict[tuple, list] = {}
        self._free: dict[object, bool] = {}  # pool key -> no item in it is restricted
        self.components = {c: panel for panel, cs in v.bundles.items() for c in cs}
        self.part_of: dict[str, list[str]] = {}  # a test -> every panel that holds it
        for panel, cs in v.bundles.items():
            for c in cs:
                self.part_of.setdefault(c, []).append(panel)
        ems = [p for p in v.procedures.values() if p.em_level]
        self.em_codes = {p.code for p in ems}
        # visit codes a specialty bills per setting (office established, new patient or
        # consultation, emergency, hospital, nursing facility), by level
        self.spec_em: dict[tuple[str, str], dict[int, list[Procedure]]] = {}
        self.em_setting: dict[str, str] = {}  # visit code -> its setting
        for s in v.specialties.values():
            for p in ems:
                setting = {"em_office": "office_new" if p.code[:4] in ("9920", "9924")
                           else "office", "em_emergency": "emergency",
                           "em_hospital": "nursing" if p.code[:4] == "9930" else "hospital"
                           }.get(p.category)
                if setting and p.code in s.procedures:
                    self.spec_em.setdefault((s.id, setting), {}).setdefault(
                        p.em_level, []).append(p)
                if setting:
                    self.em_setting[p.code] = setting
        # what each specialty bills for each area it treats (no visits, no panel components)
        self.spec_area_procs: dict[tuple[str, str], list[Procedure]] = {}
        for s in v.specialties.values():
            for a in v.areas.values():
                codes = (a.procedures | v.general_procedures) & s.procedures
                self.spec_area_procs[s.id, a.id] = [
                    v.procedures[c] for c in sorted(codes) if c not in self.em_codes]
        self.visit_specs = frozenset(s for s, _ in self.spec_em)
        # what each provider of ordered work bills for each area (no panel of which it
        # also bills the components as the only lines: see _ancillary)
        self.ancillary_procs = {(s, a): ps for (s, a), ps in self.spec_area_procs.items()
                                if s in ANCILLARY and ps}
        # who treats an area: specialties that can bill something for it
        # (pharmacies fill every area's drugs: refills of what its visits prescribe)
        self.area_specs = {a.id: sorted(s for s in {*a.specialties, "pharmacy"}
                                        if s in v.specialties and (
            s in self.visit_specs or self.spec_area_procs[s, a.id] or
            (s == "pharmacy" and a.drugs))) for a in v.areas.values()}
        self.area_drugs = {a.id: [v.drugs[n] for n in sorted(a.drugs)] for a in v.areas.values()}
        self.acute_areas = sorted(a for a, dxs in self.area_dx.items()
                                  if any(not d.chronic for d in dxs))

    def _sibling(self, code: str) -> str:
        """`code`, or with probability `oov_rate` an unlisted billable code of its category,
        where it reads as `code` does (`Vocabulary.sibling_reads_alike`)."""
        if (self.oov_rate and self.v.sibling_reads_alike(code)
                and self.rng.random() < self.oov_rate):
            siblings = same_edit_siblings(code, self.listed)
            if siblings:
                return self.rng.choice(siblings)
        return code

    def _fitting(self, key: object, pool: list, age: int, sex: str) -> list:
        """The items of `pool` that fit (age, sex), memoised: claims ask the same again. A
        pool without age- or sex-specific items is returned as it is."""
        free = self._free.get(key)
        if free is None:
            free = self._free[key] = not any(
                x.who.sex or x.who.min_age > 0 or x.who.max_age < 120 for x in pool)
        if free:
            return pool
        k = (key, age, sex)
        hit = self._fit_cache.get(k)
        if hit is None:
            hit = self._fit_cache[k] = [x for x in pool if x.who.fits(age, sex)]
        return hit

    def _member(self, k: int) -> Member:
        r = self.rng
        u = r.random()
        age = r.randint(0, 17) if u < 0.2 else r.randint(18, 64) if u < 0.75 else r.randint(65, 95)
        sex = "U" if r.random() < 0.01 else r.choice("FM")
        n_chronic = min(3, int(r.random() * (1 + age / 25)))
        chronic: list[Diagnosis] = []
        pool = self._fitting("chronic", self.chronic_dx, age, sex)
        while pool and len(chronic) < n_chronic:
            if chronic and chronic[-1].area in COMORBID and r.random() < 0.6:
                friends = [d for d in pool if d.area in COMORBID[chronic[-1].area]]
                d = r.choice(friends or pool)
            else:
                d = r.choice(pool)
            chronic.append(d)
            pool = [x for x in pool if x.area != d.area]
        return Member(f"M{self.seed}-{k:06d}", age, sex, tuple(d.code for d in chronic))

    def _providers(self, n: int) -> list[Provider]:
        specs = sorted(self.v.specialties)
        out = []
        for k in range(n):
            s = self.v.specialties[specs[k % len(specs)]]  # every specialty has providers
            place = s.places_of_service[0] if self.rng.random() < 0.85 else self.rng.choice(
                s.places_of_service)
            out.append(Provider(f"P{self.seed}-{k:05d}", s.id, place))
        self.by_specialty: dict[str, list[Provider]] = {}
        for p in out:
            self.by_specialty.setdefault(p.specialty, []).append(p)
        return out

    def _enrol(self) -> None:
        """Put SERIES_SHARE of members in a series whose condition fits them, each with one
        provider of its specialty, the first session within the first week or course."""
        r = self.rng
        by_id = {m.id: k for k, m in enumerate(self.members)}
        for m in list(self.members):
            if r.random() >= SERIES_SHARE:
                continue
            s = r.choice(SERIES)
            fits = [c for c in s.diagnoses if self.v.diagnoses[c].who.fits(m.age, m.sex)]
            if not fits:
                continue
            condition = r.choice(fits)
            if condition not in m.chronic:
                self.members[by_id[m.id]] = m = Member(m.id, m.age, m.sex,
                                                       (*m.chronic, condition))
            plan = Plan(s, r.choice(self.by_specialty[s.specialty]), condition)
            first = START.toordinal() + r.randrange(7 if not s.weeks else 7 * s.weeks)
            if s.weeks:
                plan.course_end = first + 7 * s.weeks
            self.plans[m.id] = plan
            heapq.heappush(self._sessions, (first, len(self._sessions), m.id))
        self.plan_members = tuple(self.plans)

    def today(self) -> dt.date:
        """The clock: CLAIMS_PER_MEMBER_YEAR claims per member per year of service days."""
        return START + dt.timedelta(days=int(self.count / self.claims_per_day))

    def _due_sessions(self) -> list[dict]:
        """The claims of the next series session, if one is due by the clock: one claim,
        or two for the odd second therapy session of the day. The next session is then
        booked (after a break of 4-26 weeks when a course ends)."""
        if not self._sessions or self._sessions[0][0] > self.today().toordinal():
            return []
        r = self.rng
        day, tie, member = heapq.heappop(self._sessions)
        plan = self.plans[member]
        s = plan.series
        nxt = day + s.gaps[plan.session % len(s.gaps)]
        plan.session += 1
        if plan.course_end is not None and nxt > plan.course_end:
            nxt += 7 * r.randint(4, 26)
            plan.course_end, plan.session = nxt + 7 * s.weeks, 0
        heapq.heappush(self._sessions, (nxt, tie, member))
        first = self._session(member, dt.date.fromordinal(day))
        if first is None:
            return []
        out = [first]
        if s.name == "physical_therapy" and r.random() < SECOND_SESSION:
            again = day_units_within_mue(
                self._line(self.v.procedures[s.codes[0]], plan.provider.place), first)
            again["modifiers"] = ["76"]  # a repeat procedure the same day
            out.append(self._series_claim(member, first["diagnoses"], [again], first))
        return out

    def _session(self, member: str, day: dt.date) -> dict | None:
        """One session's claim of `member`'s series on `day`; None when its provider
        already billed the member that day."""
        r, plan = self.rng, self.plans[member]
        s, p = plan.series, plan.provider
        m = self.members[int(member.rsplit("-", 1)[1])]
        if (m.id, p.id, day) in self.visits:
            return None
        self._remember_visit((m.id, p.id, day))
        dx = [plan.condition, *s.also] + [c for c in m.chronic
                                          if c != plan.condition and r.random() < 0.3]
        dx = list(dict.fromkeys(self._sibling(c) for c in dx))[:12]
        codes = [s.codes[0]] + [c for c in s.codes[1:] if r.random() < 0.5]
        lines = self._edited([self._line(self.v.procedures[c], p.place) for c in codes])
        return self._claim(m, p, day, r.sample(dx, len(dx)), r.sample(lines, len(lines)), [])

    def _series_claim(self, member: str, dx: list[str], lines: list[dict], like: dict) -> dict:
        """Another claim of the same session as `like` (same member, provider, day)."""
        plan = self.plans[member]
        m = self.members[int(member.rsplit("-", 1)[1])]
        return self._claim(m, plan.provider, dt.date.fromisoformat(like["service_date"]),
                           list(dx), lines, [])

    def _base(self) -> dict:
        """A clean claim for a fraud pattern to break, drawn like the clean stream: a
        series session as often as the stream has them (else fraud would differ from clean
        in the shape of the claims it starts from)."""
        r = self.rng
        total = max(1, sum(self.emitted.values()))
        if self.plans and r.random() < self.emitted["session"] / total:
            member = r.choice(self.plan_members)
            if (c := self._session(member, self.today())) is not None:
                return c
        # ordered work, from a visit of its own (not billed here), once visits have been
        # billed: a stream that opens with frauds and their orders has emitted only
        # ordered work, and every base would then be one, without drugs (a pattern that
        # needs a drug would wait forever)
        if self.emitted["visit"] and r.random() < self.emitted["ancillary"] / total:
            for _ in range(DONOR_TRIES):
                if self.queued:
                    return self.queued.pop()
                self.clean()
        return self.clean()

    def _donor(self, want) -> dict | None:
        """A recent clean claim for which `want(claim)` holds (what a fraud borrows a line,
        a provider or a member from, so that it carries what clean claims carry, as often);
        None after DONOR_TRIES misses."""
        r = self.rng
        for _ in range(DONOR_TRIES):
            d = r.choice(self.recent) if len(self.recent) >= 100 else self._unbilled()
            if want(d):
                return d
        return None

    def _unbilled(self, member: Member | None = None, day: dt.date | None = None) -> dict:
        """A clean claim whose ordered work is not queued: one made to borrow from, or a
        burst's visit. Early in a stream a donor search makes up to DONOR_TRIES such
        claims; were the orders of those never-billed visits emitted, ordered work would
        crowd out the stream's visits and frauds (docs/model-history.md)."""
        ordered = len(self.queued)
        claim = self.clean(member=member, day=day)
        while len(self.queued) > ordered:
            self.queued.pop()
        return claim

    def _remember_visit(self, visit: tuple[str, str, dt.date]) -> None:
        self.visits.add(visit)
        self._visit_order.append(visit)
        if len(self._visit_order) > VISITS_KEPT:
            self.visits.discard(self._visit_order.popleft())

    # -- clean claims -------------------------------------------------------------------

    def _pick_case(self, member: Member | None) -> tuple[Member, Diagnosis]:
        """A member and the problem this claim is about (a chronic one, or something acute)."""
        r = self.rng
        while True:
            m = member or r.choice(self.members)
            if m.chronic and r.random() < 0.6:
                return m, self.v.diagnoses[r.choice(m.chronic)]
            area = r.choice(self.acute_areas)
            fitting = self._fitting(("acute", area), self.acute_dx[area], m.age, m.sex)
            if fitting:
                return m, r.choice(fitting)

    def clean(self, member: Member | None = None, day: dt.date | None = None) -> dict:
        """One claim that follows every clinical link."""
        while (claim := self._try_clean(member, day)) is None:
            pass
        return claim

    def _try_clean(self, member: Member | None, day: dt.date | None) -> dict | None:
        """A clean claim, or None when the case drawn leaves the provider nothing to bill."""
        r, v = self.rng, self.v
        m, primary = self._pick_case(member)
        specs = [s for s in self.area_specs[primary.area]
                 if v.specialties[s].patients.fits(m.age, m.sex)]
        spec = r.choice(specs or self.area_specs[primary.area])
        p = r.choice(self.by_specialty[spec])
        dx = [primary.code]
        extra = self._fitting(("dx", primary.area), self.area_dx[primary.area], m.age, m.sex)
        if extra and r.random() < 0.3:
            dx.append(r.choice(extra).code)
        dx += [c for c in m.chronic if c not in dx and r.random() < 0.5]
        dx = list(dict.fromkeys(dx))[:12]
        procs: list[dict] = []
        meds: list[dict] = []
        visit = None
        if spec == "pharmacy":
            drugs = [d for a in dict.fromkeys(v.diagnoses[c].area for c in dx)
                     for d in self._fitting(("drug", a), self.area_drugs[a], m.age, m.sex)]
            meds = [self._med(d) for d in r.sample(drugs, min(len(drugs), r.randint(1, 3)))]
        else:
            # what this visit bills besides: labs, imaging, procedures for the problems on
            # the claim (comorbid ones too), from a few to many lines
            pool = [q for a in dict.fromkeys(v.diagnoses[c].area for c in dx)
                    for q in self._fitting((spec, a), self.spec_area_procs[spec, a], m.age,
                                           m.sex)]
            pool = list({q.code: q for q in pool}.values())
            visits = spec in self.visit_specs
            n = r.choice((0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 7)) if visits else r.choice(
                (1, 2, 2, 3, 3, 4, 5, 6))
            procs = self._edited(self._lines(pool, n, p.place))
            procs = self._edited(procs + self._repeats(procs, primary.area, p.place))
            drugs = self._fitting(("drug", primary.area), self.area_drugs[primary.area], m.age,
                                  m.sex)
            # most visits for a problem end with a prescription on the claim
            if drugs and r.random() < 0.8:
                meds += [self._med(d) for d in r.sample(drugs, min(len(drugs), r.choice(
                    (1, 1, 1, 2, 2, 3))))]
            visit = self._visit(spec, p.place, dx, procs, meds) if visits else None
            procs = self._edited(procs + ([visit] if visit is not None else []))
            visit = visit if visit in procs else None  # an edit may never allow it here
            if visit is not None:  # an edit may have taken a test the level counted on
                visit = self._relevel(visit, dx, procs, meds, p.place)
        if not procs and not meds:
            return None
        day = day or self.today() - dt.timedelta(days=r.randrange(7))
        if (m.id, p.id, day) in self.visits:
            return None  # a second claim of that visit would read as duplicate billing
        self._remember_visit((m.id, p.id, day))
        if visit is not None and r.random() < ORDER_SHARE:
            self._order(m, [c for c in dx if c in v.diagnoses], day)
        dx = list(dict.fromkeys(self._sibling(c) for c in dx))
        r.shuffle(dx)
        r.shuffle(procs)
        return self._claim(m, p, day, dx, procs, meds)

    def _edited(self, procs: list[dict]) -> list[dict]:
        """The lines as a careful biller sends them under the payer edits (`model.edits`):
        of a pair the NCCI PTP edits never allow together (indicator 0) the column-2 line
        goes; of a pair allowed with a modifier (1) the column-2 line carries one (25 on a
        visit, which always stays; else 59, XS or XU, KEEP_PAIR of the time) or goes; a
        repeated line goes while the code's units that day pass an MUE that counts the
        day (MAI 2 or 3); an add-on without any of its primaries goes."""
        r, out = self.rng, list(procs)
        while breaks := ptp_breaks([(x["code"], x["modifiers"]) for x in out]):
            b, ind = breaks[0].column2, breaks[0].indicator
            allow = VISIT_MODIFIERS if is_visit(b) else NCCI_MODIFIERS
            line = next(x for x in out if x["code"] == b and (
                ind != 1 or not set(x["modifiers"]) & allow))
            if ind == 1 and is_visit(b):
                line["modifiers"] = [*line["modifiers"], "25"]
            elif ind == 1 and r.random() < KEEP_PAIR:
                line["modifiers"] = [*line["modifiers"], r.choice(("59", "59", "XS", "XU"))]
            else:
                out.remove(line)
        for code in {x["code"] for x in out}:
            limit = mue(code)
            if limit is None or not limit.units or limit.mai == 1:
                continue
            same = [x for x in out if x["code"] == code]
            while len(same) > 1 and sum(x["units"] for x in same) > limit.units:
                out.remove(same.pop())
        orphans = {h.codes[0] for h in addon_hits([x["code"] for x in out])}
        return [x for x in out if x["code"] not in orphans]

    def _relevel(self, visit: dict, dx: list[str], procs: list[dict], meds: list[dict],
                 place: str) -> dict:
        """`visit` (a line of `procs`) at no more than the level the claim supports
        (`Vocabulary.em_ceiling`, never below the family's lowest); the same line,
        modifiers kept, where it already is."""
        v = self.v
        ceiling = v.em_ceiling(visit["code"], v.max_em_level(dx, [x["code"] for x in procs],
                                                             len(meds)))
        if v.procedures[visit["code"]].em_level <= ceiling:
            return visit
        family = [q for q in v.procedures.values() if q.em_level and q.code[:4] ==
                  visit["code"][:4] and q.em_level <= ceiling]
        lower = self._line(max(family, key=lambda q: q.em_level), place)
        lower["modifiers"] = visit["modifiers"]
        procs[procs.index(visit)] = lower
        return lower

    def _lines(self, pool: list[Procedure], n: int, place: str) -> list[dict]:
        """Up to `n` lines of `pool` as the edits allow them together: at most a few
        components of a panel (all of them would be unbundling), none beside its panel."""
        v = self.v
        lines: list[dict] = []
        codes: set[str] = set()
        for q in self.rng.sample(pool, min(len(pool), n)):
            panels = self.part_of.get(q.code, ())
            if any(x in codes for x in panels) or codes & set(v.bundles.get(q.code, ())):
                continue  # a panel beside one of its own tests
            if any(len(codes & set(v.bundles[x])) >= min(2, len(v.bundles[x]) - 1)
                   for x in panels):
                continue
            codes.add(q.code)
            lines.append(self._line(self._unlisted_sibling(q), place))
        return lines

    def _unlisted_sibling(self, q: Procedure) -> Procedure:
        """`q`, or with probability `oov_rate` a payable code of its CPT/HCPCS range that
        the list lacks, priced from its own Medicare price (visits, panels and their tests
        excepted): real claims are full of codes no list of ours names."""
        if (not self.oov_rate or q.em_level or q.code in self.v.bundles
                or q.code in self.components or self.rng.random() >= self.oov_rate):
            return q
        siblings = self.v.unlisted_by_range.get(range_span(q.code))
        if not siblings:
            return q
        return self._procedure(self.rng.choice(siblings), like=q)

    def _procedure(self, code: str, like: Procedure | None = None) -> Procedure:
        """The listed procedure, or an unlisted payable code read like `like` (its
        category and who it is for) at its own price (`Vocabulary.charge_top`)."""
        q = self.v.procedures.get(code) or self.unlisted.get(code)
        if q is None:
            assert like is not None
            low, high = charge_range(self.v.fees[code], 0, 0)
            q = self.unlisted[code] = Procedure(code, "", like.category, low, high, None,
                                                like.who)
        return q

    def _order(self, m: Member, dx: list[str], day: dt.date) -> None:
        """Queue the claim of work a visit ordered (labs, imaging, DME, pathology) from a
        provider of that kind, for the visit's problems, within a week of it."""
        r, v = self.rng, self.v
        dx = r.sample(dx, r.randint(1, len(dx)))  # what the order is for
        areas = list(dict.fromkeys(v.diagnoses[c].area for c in dx))
        kinds = [k for k in ANCILLARY if any((k, a) in self.ancillary_procs for a in areas)]
        if not kinds:
            return
        spec = r.choices(kinds, [ANCILLARY[k] for k in kinds])[0]
        pool = list({q.code: q for a in areas for q in self._fitting(
            (spec, a), self.ancillary_procs.get((spec, a), []), m.age, m.sex)}.values())
        if not pool:
            return
        p = r.choice(self.by_specialty[spec])
        when = day + dt.timedelta(days=r.choice((0, 0, 0, 1, 2, 3, 5, 7)))
        if (m.id, p.id, when) in self.visits:
            return
        n = r.choice((1, 1, 2, 2, 3, 4)) if spec == "laboratory" else r.choice((1, 1, 2))
        lines = self._lines([q for q in pool if q.code != "36415"], n, p.place)
        edits = ptp_edits()
        panels = [x["code"] for x in lines if x["code"] in v.bundles]
        ok = v.justified_procedures(dx)
        repeatable = [c for x in panels for c in v.bundles[x]
                      if c in ok and edits.indicator(x, c) == 1]
        if repeatable and r.random() < REPEAT_TEST:  # a test of the panel repeated that day
            again = self._line(v.procedures[r.choice(repeatable)], p.place)
            again["modifiers"] = ["91"]
            lines.append(again)
        if spec == "laboratory" and "36415" in v.procedures and r.random() < 0.85:
            lines.append(self._line(v.procedures["36415"], p.place))  # the blood draw
        lines = self._edited(lines)
        if not lines:
            return
        self._remember_visit((m.id, p.id, when))
        codes = list(dict.fromkeys(self._sibling(c) for c in dx))
        r.shuffle(lines)
        self.queued.append(self._claim(m, p, when, codes, lines, []))

    def _repeats(self, procs: list[dict], area: str, place: str) -> list[dict]:
        """Legitimate repeats of lines already billed, with the modifiers that say why:
        LT/RT for a bilateral musculoskeletal procedure, 59 (distinct service) or 76 (repeat
        procedure) otherwise. The first line of a pair gets its modifier too."""
        r = self.rng
        out = []
        for line in procs:
            if r.random() >= 0.08 or self.components.get(line["code"]):
                continue
            q = self._procedure(line["code"])
            if area.startswith("musculoskeletal"):
                line["modifiers"], mods = ["LT"], ["RT"]
            else:
                line["modifiers"] = mods = [r.choice(("59", "76"))]
            again = self._line(q, place, units=line["units"])
            again["modifiers"] = mods
            out.append(again)
        return out

    def _visit(self, spec: str, place: str, dx: list[str], procs: list[dict],
               meds: list[dict]) -> dict:
        """An E/M line the specialty bills in this setting, at the level the claim
        supports with the visit on it (`Vocabulary.max_em_level`: an ER or hospital visit
        for a serious problem may decide on admission), a quarter of them one lower and,
        where the family may be chosen by time (`Vocabulary.em_ceiling`), `BY_TIME` of
        them one higher: since 2021 99214 is the office's most billed level."""
        setting = {"23": "emergency", "21": "hospital", "31": "nursing", "32": "nursing"
                   }.get(place)
        if setting is None or (spec, setting) not in self.spec_em:
            setting = "office_new" if self.rng.random() < 0.15 else "office"
        codes = (self.spec_em.get((spec, setting)) or self.spec_em.get((spec, "office"))
                 or next(v for (s, _), v in self.spec_em.items() if s == spec))
        some = next(iter(codes.values()))[0].code
        allowed = self.v.max_em_level(dx, [x["code"] for x in procs] + [some], len(meds))
        u = self.rng.random()
        level = min(allowed - (u < 0.25) + (u >= 1 - BY_TIME), self.v.em_ceiling(some, allowed))
        level = max(min(codes), min(level, max(codes)))
        return self._line(self.rng.choice(codes[level]), place)

    def _line(self, q: Procedure, place: str, units: int | None = None, factor: float = 1.0
              ) -> dict:
        """A procedure line at a price in the code's range for the place (x `factor`), in
        units its medically unlikely edit allows (MUE) unless `units` says."""
        r = self.rng
        if units is None:
            limit = mue(q.code)
            most = min(4, limit.units) if limit is not None and limit.units else 4
            units = 1 if q.em_level or most < 2 or r.random() < 0.7 else r.randint(2, most)
        mult = self.v.places[place].charge_multiplier if place in self.v.places else 1.0
        unit = self._billed(r.uniform(q.charge_low, q.charge_high) * mult * factor)
        return {"code": q.code, "units": units, "charge": round(unit * units, 2), "modifiers": []}

    def _billed(self, unit: float) -> float:
        """Some billers charge whole dollars (30%, fraud or not), the rest to the cent."""
        return float(round(unit)) if self.rng.random() < 0.3 else unit

    def _med(self, d: Drug, strength: float | None = None, per_day: float | None = None,
             spare: float = 0.0) -> dict:
        """A fill of a marketed strength (`strength`, default one at random) for
        `per_day` units a day (default the drug's usual) and `spare` units more, as the
        pharmacy dispenses it (`Drug.dispensed`: whole packages of a drug dispensed by the
        package), charged its units at a price in range plus a dispensing fee (the sum in
        whole dollars as often as any charge: `_billed`)."""
        r = self.rng
        days = r.choice(d.days_supply)
        qty = d.dispensed((per_day or d.doses_per_day) * days + spare)
        charge = r.uniform(d.unit_price_low, d.unit_price_high) * qty + r.uniform(
            *DISPENSING_FEE)
        return {"name": d.name, "strength_mg": strength or r.choice(d.common_strengths_mg),
                "quantity": qty, "days_supply": days, "charge": round(self._billed(charge), 2)}

    def _claim(self, m: Member, p: Provider, day: dt.date, dx: list[str], procs: list[dict],
               meds: list[dict]) -> dict:
        r = self.rng
        self.count += 1
        submitted = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(
            days=r.randrange(0, 21), seconds=r.randrange(86_400))
        claim = {
            "claim_id": f"C{self.seed}-{self.count:08d}",
            "member_id": m.id, "provider_id": p.id, "provider_specialty": p.specialty,
            "member_age": m.age, "member_sex": m.sex,
            "service_date": day.isoformat(), "submitted_at": submitted.isoformat(),
            "place_of_service": "01" if p.specialty == "pharmacy" else p.place,
            "diagnoses": dx, "procedures": procs, "medications": meds,
            "total_charge": 0.0,
        }
        return self._retotal(claim)

    @staticmethod
    def _retotal(claim: dict) -> dict:
        claim["total_charge"] = round(sum(x["charge"] for x in claim["procedures"]) +
                                      sum(x["charge"] for x in claim["medications"]), 2)
        return claim

    # -- fraud --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[LabelledClaim]:
        r = self.rng
        pending: deque[LabelledClaim] = deque()
        while True:
            if pending:
                yield pending.popleft()
                continue
            if self.queued:
                claim = self.queued.popleft()
                self.recent.append(claim)
                self.emitted["ancillary"] += 1
                yield LabelledClaim(claim, CLEAN)
                continue
            if due := self._due_sessions():
                self.recent.extend(due)
                self.emitted["session"] += len(due)
                pending.extend(LabelledClaim(c, CLEAN) for c in due)
                continue
            if not self.patterns or r.random() >= self.fraud_rate:
                claim = self.clean()
                self.recent.append(claim)
                self.emitted["visit"] += 1
                # the facility's own claim of the visit, made before the visit is handed
                # out (whoever takes it may change it), billed after it
                if (hosts := self.facilities.get(claim["place_of_service"])) and \
                        claim["procedures"]:
                    pending.append(LabelledClaim(facility_claim(
                        self.facility_rng, self.v, self.facility_rng.choice(hosts), claim), CLEAN))
                yield LabelledClaim(claim, CLEAN)
                continue
            pending.extend(FRAUDS[r.choice(self.patterns)](self))

    def generate(self, count: int) -> Iterator[LabelledClaim]:
        """`count` claims; with `label_noise`, that share of labels is wrong (fraud called
        clean, clean called a random single-claim pattern), as investigators' labels are."""
        r = random.Random(self.seed + 7_919)  # its own stream: noise does not move the claims
        for _, item in zip(range(count), self, strict=False):
            if self.label_noise and r.random() < self.label_noise:
                wrong = CLEAN if item.fraud_pattern != CLEAN else r.choice(SINGLE_CLAIM_PATTERNS)
                item = LabelledClaim(item.claim, wrong)
            yield item

    def _procedure_claim(self, need_visit: bool = False) -> dict:
        """A clean claim with at least one procedure line (and a visit if asked)."""
        while True:
            c = self._base()
            if c["procedures"] and (not need_visit or any(
                    x["code"] in self.em_codes for x in c["procedures"])):
                return c

    def _fits(self, c: dict, who) -> bool:
        return who.fits(c["member_age"], c["member_sex"])

    def _non_visits(self, c: dict) -> list[int]:
        return [i for i, x in enumerate(c["procedures"]) if x["code"] not in self.em_codes]

    @fraud("diagnosis_treatment_mismatch")
    def _diagnosis_treatment_mismatch(self) -> list[LabelledClaim]:
        """One line of a clean claim replaced by one no diagnosis of it justifies, taken
        from a recent clean claim (so it is billed as often as clean claims bill it): a
        procedure the claim's specialty performs, at an in-range price, in place of a
        procedure, or a drug in place of a fill. The claim keeps its shape, and the variant
        (drug or procedure) is whichever line it has, as often as claims have them."""
        r, v = self.rng, self.v
        while True:
            c = self._base()
            spec = v.specialties[c["provider_specialty"]]
            lines = self._non_visits(c) if spec.procedures else []
            fills = list(range(len(c["medications"]))) if spec.id not in ANCILLARY else []
            if not lines and not fills:
                continue
            variant = r.choice(["procedure"] * bool(lines) + ["drug"] * bool(fills))
            ok_p, ok_d = v.justified_procedures(c["diagnoses"]), v.justified_drugs(c["diagnoses"])
            if variant == "procedure":
                on = {x["code"] for x in c["procedures"]}

                def wrong(code: str, spec=spec, ok_p=ok_p, on=on, c=c) -> bool:
                    return (code not in ok_p and code in spec.procedures and code not in on
                            and code not in self.em_codes and code not in self.components
                            and self._fits(c, v.procedures[code].who))

                d = self._donor(lambda d, w=wrong: any(w(x["code"]) for x in d["procedures"]))
                if d is None:
                    continue
                q = v.procedures[r.choice([x["code"] for x in d["procedures"]
                                           if wrong(x["code"])])]
                c["procedures"][r.choice(lines)] = self._line(q, c["place_of_service"])
            else:
                def unjustified(name: str, ok_d=ok_d, c=c) -> bool:
                    return name not in ok_d and self._fits(c, v.drugs[name].who)

                d = self._donor(lambda d, u=unjustified: any(u(m["name"])
                                                             for m in d["medications"]))
                if d is None:
                    continue
                drug = v.drugs[r.choice([m["name"] for m in d["medications"]
                                         if unjustified(m["name"])])]
                c["medications"][r.choice(fills)] = self._med(drug)
            return [LabelledClaim(self._retotal(c), "diagnosis_treatment_mismatch", variant)]

    def _claim_with_drugs(self) -> dict:
        while not (c := self._base())["medications"]:
            pass
        return c

    @fraud("dose_out_of_range")
    def _dose_out_of_range(self) -> list[LabelledClaim]:
        """A marketed strength at 3x+ the daily maximum (quantity / days supply)."""
        r, v = self.rng, self.v
        c = self._claim_with_drugs()
        i = r.randrange(len(c["medications"]))
        d = v.drugs[c["medications"][i]["name"]]
        strength = r.choice(d.common_strengths_mg)
        # whole units a day, so that strength x units/day >= 3x the top strength x doses a
        # day, with a package to spare of a drug dispensed by the package
        need = 3 * d.daily_max_mg / strength
        per_day = math.ceil(max(need, d.doses_per_day * 2) * r.uniform(1.0, 1.5))
        med = self._med(d, strength, per_day, spare=d.package)
        if med["quantity"] > 10_000:  # the contract's most (`MedicationLine`)
            return self._dose_out_of_range()
        c["medications"][i] = med
        return [LabelledClaim(self._retotal(c), "dose_out_of_range")]

    @fraud("price_inflation")
    def _price_inflation(self) -> list[LabelledClaim]:
        """A line of a clean claim (any line: a procedure or a drug fill as often as claims
        carry them) charged 3-10x the top of its range, or, MUE_SHARE of the time on a
        procedure with a medically unlikely edit, billed in more units than it allows."""
        r, v = self.rng, self.v
        c = self._base()
        lines = c["procedures"] + c["medications"]
        i = r.randrange(len(lines))
        if i >= len(c["procedures"]):
            i -= len(c["procedures"])
            med = dict(c["medications"][i])
            top = fill_top(v.drugs[med["name"]].unit_price_high, med["quantity"])
            med["charge"] = round(self._billed(top * r.uniform(3, 10)), 2)
            c["medications"][i] = med
            return [LabelledClaim(self._retotal(c), "price_inflation")]
        line = dict(c["procedures"][i])
        limit = mue(line["code"])
        if (limit is not None and 0 < limit.units <= MUE_MOST
                and r.random() < MUE_SHARE):  # past the MUE
            unit = line["charge"] / line["units"]
            line["units"] = limit.units + r.randint(1, max(1, limit.units // 2))
            line["charge"] = round(unit * line["units"], 2)
            c["procedures"][i] = line
            return [LabelledClaim(self._retotal(c), "price_inflation")]
        top = v.charge_top(line["code"])
        if top is None:
            return self._price_inflation()  # a code with no price to know it by
        mult = v.places[c["place_of_service"]].charge_multiplier
        unit = self._billed(top * mult * r.uniform(3, 10))
        line["charge"] = round(unit * line["units"], 2)
        c["procedures"][i] = line
        return [LabelledClaim(self._retotal(c), "price_inflation")]

    @fraud("upcoding")
    def _upcoding(self) -> list[LabelledClaim]:
        """A visit billed above what the claim supports by more than time could explain
        (`rules.upcoding`): the level of a recent clean claim's visit of the same setting
        (so upcoded levels are the ones clean claims use), a code the provider's specialty
        bills, in place of the base claim's visit (modifiers kept). The base is any clean
        claim with a visit, so upcoded claims have clean claims' shapes (choosing the level
        first, then a base that cannot support it, draws bases without prescriptions, which
        the shape probe reads; docs/model.md, "The probes"); the price is that the levels
        lean high."""
        v = self.v
        for _ in range(BASE_TRIES):
            c = self._procedure_claim(need_visit=True)
            allowed = v.max_em_level(c["diagnoses"], [x["code"] for x in c["procedures"]],
                                     len(c["medications"]))
            i = next(k for k, x in enumerate(c["procedures"]) if x["code"] in self.em_codes)
            setting = self.em_setting[c["procedures"][i]["code"]]
            bills = v.specialties[c["provider_specialty"]].procedures

            def higher(code: str, setting=setting, allowed=allowed, bills=bills) -> bool:
                return (self.em_setting.get(code) == setting and code in bills
                        and v.procedures[code].em_level > v.em_ceiling(code, allowed))

            d = self._donor(lambda d, h=higher: any(h(x["code"]) for x in d["procedures"]))
            if d is None:
                # the recent claims hold no visit of this setting above what time could
                # explain (a level-4 office visit has none; early in a stream there may be
                # no visits at all): another base
                continue
            code = next(x["code"] for x in d["procedures"] if higher(x["code"]))
            visit = self._line(v.procedures[code], c["place_of_service"])
            visit["modifiers"] = c["procedures"][i]["modifiers"]
            c["procedures"][i] = visit
            return [LabelledClaim(self._retotal(c), "upcoding")]
        return []

    @fraud("unbundling")
    def _unbundling(self) -> list[LabelledClaim]:
        """A clean claim whose pair of services that an NCCI edit bundles loses the
        modifier that lets them be billed together: on a visit, 25 becomes 59 (which may
        not unbundle a visit) half the time, else moves to the procedure; on any other
        line (59, XS, XU, 91...), it moves to the pair's column-1 line. The codes and the
        count of modifiers are the clean claim's: only where a modifier sits says it."""
        r, edits = self.rng, ptp_edits()
        while True:
            c = self._base()
            procs = c["procedures"]
            pairs = [(a, b) for a in procs for b in procs if a["code"] != b["code"]
                     and edits.indicator(a["code"], b["code"]) == 1
                     and set(b["modifiers"]) & (VISIT_MODIFIERS if is_visit(b["code"])
                                                else NCCI_MODIFIERS)]
            if not pairs:
                continue
            a, b = r.choice(pairs)
            allow = VISIT_MODIFIERS if is_visit(b["code"]) else NCCI_MODIFIERS
            moved = [m for m in b["modifiers"] if m in allow]
            b["modifiers"] = [m for m in b["modifiers"] if m not in allow]
            if is_visit(b["code"]) and r.random() < 0.5:
                b["modifiers"] += ["59"] * len(moved)
            else:
                a["modifiers"] = [*a["modifiers"], *moved]
            return [LabelledClaim(c, "unbundling")]

    @fraud("demographic_impossibility")
    def _demographic_impossibility(self) -> list[LabelledClaim]:
        """A claim billed under another member whose age or sex one of its diagnoses rules
        out by the Medicare Code Editor's edits: the member (id, age, sex) of a recent
        clean claim, so the codes are what clean claims carry and only whom they are for
        is wrong."""
        while True:
            c = self._base()
            edited = [x for x in c["diagnoses"] if mce_edit(x) is not None]
            if not edited:
                continue

            def impossible(d: dict, edited=edited) -> bool:
                return any(conflicts(x, d["member_age"], d["member_sex"]) for x in edited)

            d = self._donor(impossible)
            if d is None:
                continue
            c["member_id"], c["member_age"], c["member_sex"] = (
                d["member_id"], d["member_age"], d["member_sex"])
            return [LabelledClaim(c, "demographic_impossibility")]

    @fraud("specialty_mismatch")
    def _specialty_mismatch(self) -> list[LabelledClaim]:
        """A claim billed by the provider of a recent clean claim (drawn first, so
        specialties turn up as often as they bill) whose specialty neither performs one of
        its procedures nor treats its problems, at that provider's place."""
        v = self.v
        while True:
            d = self._donor(lambda d: d["provider_specialty"] != "pharmacy")
            spec = d["provider_specialty"] if d else None
            for _ in range(DONOR_TRIES // 10 if spec else 0):
                c = self._procedure_claim()
                codes = {x["code"] for x in c["procedures"] if x["code"] in v.procedures}
                treats = {x.area for code in c["diagnoses"]
                          if (x := v.resolve_diagnosis(code)) is not None}
                if (codes and not codes <= v.specialties[spec].procedures
                        and not any(spec in self.area_specs[a] for a in treats)):
                    c["provider_id"], c["provider_specialty"] = d["provider_id"], spec
                    c["place_of_service"] = d["place_of_service"]
                    return [LabelledClaim(c, "specialty_mismatch")]

    @fraud("duplicate_billing")
    def _duplicate_billing(self) -> list[LabelledClaim]:
        """A copy of an earlier clean claim under a new id; none before there is one."""
        r = self.rng
        with_procs = [x for x in self.recent if x["procedures"]]
        if not with_procs:
            return []
        original = r.choice(with_procs)
        self.count += 1
        submitted = dt.datetime.fromisoformat(original["submitted_at"]) + dt.timedelta(
            days=r.randint(1, 20), seconds=r.randrange(86_400))
        return [LabelledClaim({**original, "claim_id": f"C{self.seed}-{self.count:08d}",
                               "submitted_at": submitted.isoformat(),
                               "procedures": [dict(x) for x in original["procedures"]],
                               "medications": [dict(x) for x in original["medications"]],
                               "diagnoses": list(original["diagnoses"])}, "duplicate_billing")]

    @fraud("high_velocity_member")
    def _burst(self) -> list[LabelledClaim]:
        """A burst of VELOCITY_NORMAL + 1 visits of one member within 5 days: the first
        ones look normal (labelled clean), the last is the fraud."""
        r = self.rng
        m = r.choice(self.members)
        start = self.today()
        n = VELOCITY_NORMAL + 1
        days = sorted(start + dt.timedelta(days=r.randrange(5)) for _ in range(n))
        out = [self._unbilled(member=m, day=d) for d in days]  # visits, not their orders
        return [LabelledClaim(c, CLEAN if k < VELOCITY_NORMAL else "high_velocity_member")
                for k, c in enumerate(out)]
