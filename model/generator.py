"""Synthetic claims with labelled fraud: the training and test data of the whole project.

A seeded population of members (stable age, sex and chronic conditions, with comorbidity)
and providers (one specialty, a usual place of service, patients it sees: OB/GYN sees
women, pediatrics members up to 21) produces claims that follow the vocabulary's clinical
links, with realistic noise: comorbid diagnoses on the claim, generic or brand prices,
charges rounded to whole dollars by some billers, new-patient and established-patient visit
codes, labs billed with the diagnoses that order them, legitimate repeats with the modifiers
that make them legitimate (25 on a visit with a procedure, 59/76 on a repeated procedure,
LT/RT on bilateral ones), and a share `oov_rate` of diagnoses replaced by a billable sibling
of the same ICD-10-CM category that the vocabulary does not list (`simple-icd-10-cm`), so
unseen codes are a normal part of every stream. A fraction `fraud_rate` of claims is then
broken by one of `PATTERNS`; the label travels beside the claim, never inside it.

Care comes at realistic rates at any stream length or feed rate: service dates follow a
clock that moves with the claims, CLAIMS_PER_MEMBER_YEAR a member on average, so a
larger population (`members`) makes the clock slower, never the members busier. About
SERIES_SHARE of members are in frequent care that is legitimate (`SERIES`: dialysis three
times a week, a physical therapy course, weekly chemotherapy, weekly psychotherapy),
including the odd second therapy session of a day billed on its own claim with modifier 76.
The cross-claim checks must learn that this is normal (`model.checks.fit_limits`).

No give-aways (`claimscope eval`'s artefact probe checks this): diagnoses and service lines
come in random order in every claim, so an injected item is not the last one; injected
items replace an item of the claim as often as they are added; inflated charges are whole
dollars as often as clean ones; a wrong dose is made of marketed strengths and plausible
numbers, not odd decimals.

Claims come out as plain JSON-ready dicts (the wire form), because generation must run at
tens of thousands of claims per second; every one of them validates against `Claim`
(tests check this).

Pattern definitions (what each breaks, checked by the tests against the vocabulary):

- `diagnosis_treatment_mismatch`: a procedure or a drug (half each: `variant`) no diagnosis on
  the claim justifies, at an in-range price.
- `dose_out_of_range`: a marketed strength dispensed at 3x+ the daily maximum: quantity /
  days supply x strength above the drug's top strength x doses per day.
- `price_inflation`: a procedure or drug line charged 3-10x the top of its normal range
  (place included).
- `upcoding`: an E/M visit at least two levels above what the diagnoses justify.
- `unbundling`: three or more components of a lab/ECG panel billed as separate lines.
- `demographic_impossibility`: a diagnosis, procedure or drug the member's age or sex rules out.
- `specialty_mismatch`: a procedure the billing provider's specialty does not perform (the
  new provider's place of service is one it works in).
- `duplicate_billing`: the same member, provider, date and procedure as an earlier claim.
- `high_velocity_member`: the 4th claim of one member, from several providers, within 5
  days (a burst of four: the first three look normal and are labelled `none`).
"""

from __future__ import annotations

import datetime as dt
import functools
import heapq
import math
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from model.vocabulary import Diagnosis, Drug, Procedure, Vocabulary, default_vocabulary

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
VELOCITY_NORMAL = 3  # claims of a burst before the ones labelled fraud
START = dt.date(2026, 1, 1)  # fixed, so a seed gives the same claims on any day
CLAIMS_PER_MEMBER_YEAR = 10.0  # the clock: service days advance so members average this
SERIES_SHARE = 0.01  # members in frequent, legitimate care (SERIES)
SECOND_SESSION = 0.05  # therapy sessions followed by a second one the same day
VISITS_KEPT = 200_000  # visits remembered to avoid unlabelled duplicates (see __init__)
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


@functools.cache
def unlisted_siblings(category: str, listed: frozenset[str]) -> tuple[str, ...]:
    """Billable ICD-10-CM codes of `category` (e.g. "E11") that are not in `listed`."""
    import simple_icd_10_cm as icd

    if not icd.is_valid_item(category):
        return ()
    return tuple(sorted(c for c in icd.get_descendants(category)
                        if icd.is_leaf(c) and c not in listed))


class ClaimGenerator:
    """Seeded claim stream. Same (seed, fraud_rate, patterns) -> same claims, in order.

    Cost: building the population takes ~50 ms per 10,000 members; each claim then costs
    tens of microseconds.
    """

    def __init__(self, *, seed: int = 0, fraud_rate: float = 0.05,
                 patterns: tuple[str, ...] = PATTERNS, size: int = 20_000,
                 members: int | None = None, vocab: Vocabulary | None = None,
                 oov_rate: float = 0.1, label_noise: float = 0.0) -> None:
        """`size`: the claims the population is for (members: a sixth of it, at least
        500, unless `members` says); the clock then covers `size` claims in about
        size / 6 / CLAIMS_PER_MEMBER_YEAR years."""
        unknown = set(patterns) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown fraud pattern(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(PATTERNS)}")
        for name, x in (("fraud rate", fraud_rate), ("oov rate", oov_rate),
                        ("label noise", label_noise)):
            if not 0 <= x <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {x}")
        self.oov_rate, self.label_noise = oov_rate, label_noise
        self.v = vocab or default_vocabulary()
        self.rng = random.Random(seed)
        self.seed, self.fraud_rate, self.patterns = seed, fraud_rate, tuple(patterns)
        self._index()
        self.members = [self._member(k) for k in range(members or max(500, size // 6))]
        self.providers = self._providers(max(150, size // 40))
        self.claims_per_day = len(self.members) * CLAIMS_PER_MEMBER_YEAR / 365
        self.plans: dict[str, Plan] = {}  # member id -> their frequent care
        self.sessions = 0  # series claims so far (their share of the stream)
        self._sessions: list[tuple[int, int, str]] = []  # heap of (day, tiebreak, member)
        self._enrol()
        self.recent: deque[dict] = deque(maxlen=500)  # clean claims duplicates copy from
        # (member, provider, day) billed lately: a second claim of a visit would read as
        # duplicate billing. Bounded, so an endless feed (`claimscope up`) stays flat: the
        # set of the last VISITS_KEPT visits (measured: unbounded, it grew `up` by ~100 MB
        # per 900,000 claims).
        self.visits: set[tuple[str, str, dt.date]] = set()
        self._visit_order: deque[tuple[str, str, dt.date]] = deque()
        self.count = 0

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
        ems = [p for p in v.procedures.values() if p.em_level]
        self.em_codes = {p.code for p in ems}
        # visit codes a specialty bills per setting (office established/new, emergency,
        # hospital), by level; the first code of a level in the file wins
        self.spec_em: dict[tuple[str, str], dict[int, Procedure]] = {}
        for s in v.specialties.values():
            for p in ems:
                setting = {"em_office": "office_new" if p.code[:4] == "9920" else "office",
                           "em_emergency": "emergency", "em_hospital": "hospital"
                           }.get(p.category)
                if setting and p.code in s.procedures:
                    self.spec_em.setdefault((s.id, setting), {}).setdefault(p.em_level, p)
        # what each specialty bills for each area it treats (no visits, no panel components)
        self.spec_area_procs: dict[tuple[str, str], list[Procedure]] = {}
        for s in v.specialties.values():
            for a in v.areas.values():
                codes = (a.procedures | v.general_procedures) & s.procedures
                self.spec_area_procs[s.id, a.id] = [
                    v.procedures[c] for c in sorted(codes) if c not in self.em_codes]
        self.visit_specs = frozenset(s for s, _ in self.spec_em)
        # who treats an area: specialties that can bill something for it
        self.area_specs = {a.id: sorted(s for s in a.specialties if s in v.specialties and (
            s in self.visit_specs or self.spec_area_procs[s, a.id] or
            (s == "pharmacy" and a.drugs))) for a in v.areas.values()}
        self.area_drugs = {a.id: [v.drugs[n] for n in sorted(a.drugs)] for a in v.areas.values()}
        self.all_drugs = [v.drugs[n] for n in sorted(v.drugs)]
        self.restricted = [x for x in [*v.diagnoses.values(), *v.procedures.values(),
                                       *v.drugs.values()]
                           if x.who.sex or x.who.min_age > 0 or x.who.max_age < 120]
        self.acute_areas = sorted(a for a, dxs in self.area_dx.items()
                                  if any(not d.chronic for d in dxs))
        self.listed = frozenset(v.diagnoses)

    def _sibling(self, code: str) -> str:
        """`code`, or with probability `oov_rate` an unlisted billable code of its category,
        where it reads as `code` does (`Vocabulary.sibling_reads_alike`)."""
        if (self.oov_rate and self.v.sibling_reads_alike(code)
                and self.rng.random() < self.oov_rate):
            siblings = unlisted_siblings(code[:3], self.listed)
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
            again = self._line(self.v.procedures[s.codes[0]], plan.provider.place)
            again["modifiers"] = ["76"]  # a repeat procedure the same day
            out.append(self._series_claim(member, first["diagnoses"], [again], first))
        self.sessions += len(out)
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
        lines = [self._line(self.v.procedures[c], p.place) for c in codes]
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
        if self.plans and r.random() < self.sessions / max(1, self.count):
            member = r.choice(self.plan_members)
            if (c := self._session(member, self.today())) is not None:
                return c
        return self.clean()

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
        if spec == "pharmacy":
            drugs = [d for a in dict.fromkeys(v.diagnoses[c].area for c in dx)
                     for d in self._fitting(("drug", a), self.area_drugs[a], m.age, m.sex)]
            meds = [self._med(d) for d in r.sample(drugs, min(len(drugs), r.randint(1, 3)))]
        else:
            visit = None
            if spec in self.visit_specs:
                visit = self._visit(spec, p.place, v.max_em_level(dx))
            # what this visit bills besides: labs, imaging, procedures for the problems on
            # the claim (comorbid ones too), from a few to many lines
            pool = [q for a in dict.fromkeys(v.diagnoses[c].area for c in dx)
                    for q in self._fitting((spec, a), self.spec_area_procs[spec, a], m.age,
                                           m.sex)]
            pool = list({q.code: q for q in pool}.values())
            n = r.choice((0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6, 7)) if visit else r.choice(
                (1, 2, 2, 3, 3, 4, 5, 6))
            taken: dict[str, int] = {}
            for q in r.sample(pool, min(len(pool), n)):
                panel = self.components.get(q.code)
                if panel is not None:
                    parts = len(self.v.bundles[panel])
                    if taken.get(panel, 0) >= min(2, max(1, parts - 1)):
                        continue  # a few components of a panel; more would be unbundling
                    taken[panel] = taken.get(panel, 0) + 1
                procs.append(self._line(q, p.place))
            procs += self._repeats(procs, primary.area, p.place)
            if visit is not None:
                if procs and r.random() < 0.5:
                    visit["modifiers"] = ["25"]  # a separate E/M service on a procedure day
                procs.append(visit)
            drugs = self._fitting(("drug", primary.area), self.area_drugs[primary.area], m.age,
                                  m.sex)
            # most visits for a problem end with a prescription on the claim
            if drugs and r.random() < 0.8:
                meds += [self._med(d) for d in r.sample(drugs, min(len(drugs), r.choice(
                    (1, 1, 1, 2, 2, 3))))]
        if not procs and not meds:
            return None
        day = day or self.today() - dt.timedelta(days=r.randrange(7))
        if (m.id, p.id, day) in self.visits:
            return None  # a second claim of that visit would read as duplicate billing
        self._remember_visit((m.id, p.id, day))
        dx = list(dict.fromkeys(self._sibling(c) for c in dx))
        r.shuffle(dx)
        r.shuffle(procs)
        return self._claim(m, p, day, dx, procs, meds)

    def _repeats(self, procs: list[dict], area: str, place: str) -> list[dict]:
        """Legitimate repeats of lines already billed, with the modifiers that say why:
        LT/RT for a bilateral musculoskeletal procedure, 59 (distinct service) or 76 (repeat
        procedure) otherwise. The first line of a pair gets its modifier too."""
        r = self.rng
        out = []
        for line in procs:
            if r.random() >= 0.08 or self.components.get(line["code"]):
                continue
            q = self.v.procedures[line["code"]]
            if area.startswith("musculoskeletal"):
                line["modifiers"], mods = ["LT"], ["RT"]
            else:
                line["modifiers"] = mods = [r.choice(("59", "76"))]
            again = self._line(q, place, units=line["units"])
            again["modifiers"] = mods
            out.append(again)
        return out

    def _visit(self, spec: str, place: str, max_level: int, level: int | None = None) -> dict:
        """An E/M line the specialty bills in this setting, at the justified level (or
        `level` when given, clamped to the levels the setting has)."""
        setting = {"23": "emergency", "21": "hospital"}.get(place)
        if setting is None:
            setting = "office_new" if self.rng.random() < 0.15 else "office"
        codes = (self.spec_em.get((spec, setting)) or self.spec_em.get((spec, "office"))
                 or next(v for (s, _), v in self.spec_em.items() if s == spec))
        if level is None:
            level = max_level - (self.rng.random() < 0.4)
        level = max(min(codes), min(level, max(codes)))
        return self._line(codes[level], place)

    def _line(self, q: Procedure, place: str, units: int | None = None, factor: float = 1.0
              ) -> dict:
        """A procedure line at a price in the code's range for the place (x `factor`)."""
        r = self.rng
        units = units or (1 if r.random() < 0.85 or q.em_level else r.randint(2, 4))
        mult = self.v.places[place].charge_multiplier if place in self.v.places else 1.0
        unit = self._billed(r.uniform(q.charge_low, q.charge_high) * mult * factor)
        return {"code": q.code, "units": units, "charge": round(unit * units, 2), "modifiers": []}

    def _billed(self, unit: float) -> float:
        """Some billers charge whole dollars (30%, fraud or not), the rest to the cent."""
        return float(round(unit)) if self.rng.random() < 0.3 else unit

    def _med(self, d: Drug, per_day: float | None = None, factor: float = 1.0) -> dict:
        """A fill of a marketed strength; `per_day` units a day (default the drug's usual),
        unit price in range (x `factor`)."""
        r = self.rng
        days = r.choice(d.days_supply)
        qty = max(1.0, round((per_day or d.doses_per_day) * days))
        price = self._billed(r.uniform(d.unit_price_low, d.unit_price_high) * factor)
        return {"name": d.name, "strength_mg": r.choice(d.common_strengths_mg),
                "quantity": qty, "days_supply": days, "charge": round(price * qty, 2)}

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
            if due := self._due_sessions():
                self.recent.extend(due)
                pending.extend(LabelledClaim(c, CLEAN) for c in due)
                continue
            if not self.patterns or r.random() >= self.fraud_rate:
                claim = self.clean()
                self.recent.append(claim)
                yield LabelledClaim(claim, CLEAN)
                continue
            pattern = r.choice(self.patterns)
            if pattern == "high_velocity_member":
                pending.extend(self._burst())
            elif pattern == "diagnosis_treatment_mismatch":
                claim, variant = self._diagnosis_treatment_mismatch()
                yield LabelledClaim(claim, pattern, variant)
            elif (claim := getattr(self, "_" + pattern)()) is not None:
                yield LabelledClaim(claim, pattern)

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

    def _insert(self, items: list, item: object, replaceable: list[int] | None = None) -> None:
        """Put `item` in `items`: in place of one of `replaceable` (positions) half the time
        when there are any, else at a random position; the claim's length says nothing."""
        r = self.rng
        if replaceable and r.random() < 0.5:
            items[r.choice(replaceable)] = item
        else:
            items.insert(r.randint(0, len(items)), item)

    def _non_visits(self, c: dict) -> list[int]:
        return [i for i, x in enumerate(c["procedures"]) if x["code"] not in self.em_codes]

    def _diagnosis_treatment_mismatch(self) -> tuple[dict, str]:
        """Half the claims get a procedure, half a drug, that no diagnosis justifies."""
        r, v = self.rng, self.v
        variant = r.choice(("drug", "procedure"))
        while True:
            c = self._base()
            ok_p, ok_d = v.justified_procedures(c["diagnoses"]), v.justified_drugs(c["diagnoses"])
            if variant == "procedure":
                spec = v.specialties[c["provider_specialty"]]
                procs = sorted(spec.procedures - ok_p - self.em_codes - set(self.components))
                procs = [v.procedures[x] for x in procs if self._fits(c, v.procedures[x].who)]
                if not procs or c["provider_specialty"] == "pharmacy":
                    continue
                self._insert(c["procedures"], self._line(r.choice(procs), c["place_of_service"]),
                             self._non_visits(c))
            else:
                drugs = [d for d in self.all_drugs if d.name not in ok_d and self._fits(c, d.who)]
                self._insert(c["medications"], self._med(r.choice(drugs)),
                             list(range(len(c["medications"]))))
            return self._retotal(c), variant

    def _claim_with_drugs(self) -> dict:
        while not (c := self._base())["medications"]:
            pass
        return c

    def _dose_out_of_range(self) -> dict:
        """A marketed strength at 3x+ the daily maximum (quantity / days supply)."""
        r, v = self.rng, self.v
        c = self._claim_with_drugs()
        i = r.randrange(len(c["medications"]))
        d = v.drugs[c["medications"][i]["name"]]
        med = self._med(d)
        # whole units a day, so that strength x units/day >= 3x the top strength x doses a day
        need = 3 * d.strength_max_mg * d.doses_per_day / med["strength_mg"]
        per_day = math.ceil(max(need, d.doses_per_day * 2) * r.uniform(1.0, 1.5))
        qty = float(min(9_999, per_day * med["days_supply"]))
        unit = med["charge"] / med["quantity"]
        c["medications"][i] = {**med, "quantity": qty, "charge": round(unit * qty, 2)}
        return self._retotal(c)

    def _price_inflation(self) -> dict:
        """A procedure line (half the time) or a drug fill charged 3-10x its range's top."""
        r, v = self.rng, self.v
        if r.random() < 0.5:
            c = self._claim_with_drugs()
            i = r.randrange(len(c["medications"]))
            d = v.drugs[c["medications"][i]["name"]]
            c["medications"][i] = self._med(d, factor=d.unit_price_high / d.unit_price_low
                                            * r.uniform(3, 10))
            return self._retotal(c)
        c = self._procedure_claim()
        i = r.randrange(len(c["procedures"]))
        q = v.procedures[c["procedures"][i]["code"]]
        mult = v.places[c["place_of_service"]].charge_multiplier
        line = dict(c["procedures"][i])
        unit = self._billed(q.charge_high * mult * r.uniform(3, 10))
        line["charge"] = round(unit * line["units"], 2)
        c["procedures"][i] = line
        return self._retotal(c)

    def _upcoding(self) -> dict:
        v = self.v
        while True:  # a visit whose setting has a level two above what the diagnoses allow
            c = self._procedure_claim(need_visit=True)
            allowed = v.max_em_level(c["diagnoses"])
            i = next(k for k, x in enumerate(c["procedures"]) if x["code"] in self.em_codes)
            visit = self._visit(c["provider_specialty"], c["place_of_service"], allowed,
                                level=allowed + 2)
            if v.procedures[visit["code"]].em_level >= allowed + 2:
                visit["modifiers"] = c["procedures"][i]["modifiers"]
                c["procedures"][i] = visit
                return self._retotal(c)

    def _unbundling(self) -> dict:
        """Three or more components of one panel billed as separate lines, in place of lines
        the claim had; the claim's line count is drawn from clean claims' (of 3+ lines), so
        a long claim is no sign of it."""
        r, v = self.rng, self.v
        while (target := len(self._base()["procedures"])) < 3:
            pass
        for _ in range(50):
            c = self._procedure_claim()
            panel = r.choice(sorted(v.bundles))
            parts = v.bundles[panel]
            kept = [x for x in c["procedures"] if x["code"] != panel and
                    self.components.get(x["code"]) != panel]
            others = [i for i, x in enumerate(kept) if x["code"] not in self.em_codes]
            visits = len(kept) - len(others)
            k = target - visits  # components, in place of every other line
            if 3 <= k <= len(parts):
                break
        else:
            k = min(3, len(parts))
            visits = len(kept) - len(others)
        chosen = r.sample(parts, k)
        kept = [x for i, x in enumerate(kept) if i not in set(others)]
        for code in chosen:
            line = self._line(v.procedures[code], c["place_of_service"])
            if r.random() < 0.15:
                line["modifiers"] = ["59"]  # "distinct service": how unbundlers pass edits
            kept.insert(r.randint(0, len(kept)), line)
        c["procedures"] = kept
        return self._retotal(c)

    def _demographic_impossibility(self) -> dict:
        """A diagnosis, procedure or drug the member's age or sex rules out, in place of one
        of the claim's own half the time."""
        r = self.rng
        c = self._base()
        wrong = [x for x in self.restricted if not self._fits(c, x.who)]
        x = r.choice(wrong)
        if isinstance(x, Diagnosis):
            code = self._sibling(x.code)
            if code in c["diagnoses"]:
                return self._demographic_impossibility()
            dx = c["diagnoses"]
            if len(dx) >= 12 or (len(dx) > 1 and r.random() < 0.5):
                dx[r.randrange(len(dx))] = code  # with _insert's half: 3 in 4 replace
            else:
                self._insert(dx, code, list(range(len(dx))) if len(dx) > 1 else None)
        elif isinstance(x, Procedure):
            self._insert(c["procedures"], self._line(x, c["place_of_service"]),
                         self._non_visits(c))
        else:
            self._insert(c["medications"], self._med(x), list(range(len(c["medications"]))))
        return self._retotal(c)

    def _specialty_mismatch(self) -> dict:
        r, v = self.rng, self.v
        specs: list[str] = []
        while not specs:  # a specialty that neither performs the code nor treats the problem
            c = self._procedure_claim()
            code = r.choice(c["procedures"])["code"]
            treats = {d.area for x in c["diagnoses"] if (d := v.resolve_diagnosis(x))}
            specs = [s for s, x in v.specialties.items() if code not in x.procedures
                     and not any(s in self.area_specs[a] for a in treats)]
        pool = self.by_specialty[r.choice(sorted(specs))]
        same_place = [p for p in pool if p.place == c["place_of_service"]]
        p = r.choice(same_place or pool)  # the place stays one the new provider works in
        c["provider_id"], c["provider_specialty"] = p.id, p.specialty
        c["place_of_service"] = "01" if p.specialty == "pharmacy" else p.place
        return c

    def _duplicate_billing(self) -> dict | None:
        """A copy of an earlier clean claim under a new id; None before there is one."""
        r = self.rng
        with_procs = [x for x in self.recent if x["procedures"]]
        if not with_procs:
            return None
        original = r.choice(with_procs)
        self.count += 1
        submitted = dt.datetime.fromisoformat(original["submitted_at"]) + dt.timedelta(
            days=r.randint(1, 20), seconds=r.randrange(86_400))
        return {**original, "claim_id": f"C{self.seed}-{self.count:08d}",
                "submitted_at": submitted.isoformat(),
                "procedures": [dict(x) for x in original["procedures"]],
                "medications": [dict(x) for x in original["medications"]],
                "diagnoses": list(original["diagnoses"])}

    def _burst(self) -> list[LabelledClaim]:
        r = self.rng
        m = r.choice(self.members)
        start = self.today()
        n = VELOCITY_NORMAL + 1
        days = sorted(start + dt.timedelta(days=r.randrange(5)) for _ in range(n))
        out = [self.clean(member=m, day=d) for d in days]
        return [LabelledClaim(c, CLEAN if k < VELOCITY_NORMAL else "high_velocity_member")
                for k, c in enumerate(out)]
