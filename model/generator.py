"""Synthetic claims with labelled fraud: the training and test data of the whole project.

A seeded population of members (stable age, sex and chronic conditions, with comorbidity)
and providers (one specialty, a usual place of service) produces claims that follow the
vocabulary's clinical links, with realistic noise: comorbid diagnoses on the claim,
generic or brand prices, charges rounded to whole dollars by some billers, new-patient
and established-patient visit codes. A fraction `fraud_rate` of claims is then broken by
one of `PATTERNS`; the label travels beside the claim, never inside it.

Claims come out as plain JSON-ready dicts (the wire form), because generation must run at
tens of thousands of claims per second; every one of them validates against `Claim`
(tests check this).

Pattern definitions (what each breaks, checked by the tests against the vocabulary):

- `diagnosis_treatment_mismatch`: a procedure or drug no diagnosis on the claim justifies.
- `dose_out_of_range`: a drug strength 3-20x outside the drug's normal range.
- `price_inflation`: a line charged 3-10x the top of its normal range (place included).
- `upcoding`: an E/M visit at least two levels above what the diagnoses justify.
- `unbundling`: three or more components of a lab/ECG panel billed as separate lines.
- `demographic_impossibility`: a diagnosis, procedure or drug the member's age or sex rules out.
- `specialty_mismatch`: a procedure the billing provider's specialty does not perform.
- `duplicate_billing`: the same member, provider, date and procedure as an earlier claim.
- `high_velocity_member`: the 4th claim of one member, from several providers, within 5
  days (a burst of four: the first three look normal and are labelled `none`).
"""

from __future__ import annotations

import datetime as dt
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
VELOCITY_WINDOW_DAYS = 7  # a member's claims within this many days count as one burst
VELOCITY_NORMAL = 3  # claims in a window that still look normal
START = dt.date(2026, 1, 1)  # fixed, so a seed gives the same claims on any day
SPAN_DAYS = 300
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
class LabelledClaim:
    claim: dict
    fraud_pattern: str


class ClaimGenerator:
    """Seeded claim stream. Same (seed, fraud_rate, patterns) -> same claims, in order.

    Cost: building the population takes ~50 ms per 10,000 members; each claim then costs
    tens of microseconds.
    """

    def __init__(self, *, seed: int = 0, fraud_rate: float = 0.05,
                 patterns: tuple[str, ...] = PATTERNS, size: int = 20_000,
                 vocab: Vocabulary | None = None) -> None:
        unknown = set(patterns) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown fraud pattern(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(PATTERNS)}")
        if not 0 <= fraud_rate <= 1:
            raise ValueError(f"fraud rate must be in [0, 1], got {fraud_rate}")
        self.v = vocab or default_vocabulary()
        self.rng = random.Random(seed)
        self.seed, self.fraud_rate, self.patterns = seed, fraud_rate, tuple(patterns)
        self._index()
        self.members = [self._member(k) for k in range(max(500, size // 6))]
        self.providers = self._providers(max(150, size // 40))
        self.recent: deque[dict] = deque(maxlen=500)  # clean claims duplicates copy from
        self.visits: set[tuple[str, str, dt.date]] = set()  # (member, provider, day) billed
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

    def _fitting(self, key: object, pool: list, age: int, sex: str) -> list:
        """The items of `pool` that fit (age, sex), memoised: claims ask the same again."""
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
        spec = r.choice(self.area_specs[primary.area])
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
            if spec in self.visit_specs:
                procs.append(self._visit(spec, p.place, v.max_em_level(dx)))
            pool = self._fitting((spec, primary.area), self.spec_area_procs[spec, primary.area],
                                 m.age, m.sex)
            panels: set[str] = set()
            for q in r.sample(pool, min(len(pool), r.randint(0 if procs else 1, 3))):
                panel = self.components.get(q.code)
                if panel is not None:
                    if panel in panels:
                        continue  # one component of a panel at most: more is unbundling
                    panels.add(panel)
                procs.append(self._line(q, p.place))
            drugs = self._fitting(("drug", primary.area), self.area_drugs[primary.area], m.age,
                                  m.sex)
            if drugs and r.random() < 0.2:
                meds.append(self._med(r.choice(drugs)))
        if not procs and not meds:
            return None
        day = day or START + dt.timedelta(days=r.randrange(SPAN_DAYS))
        if (m.id, p.id, day) in self.visits:
            return None  # a second claim of that visit would read as duplicate billing
        self.visits.add((m.id, p.id, day))
        return self._claim(m, p, day, dx, procs, meds)

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
        r = self.rng
        units = units or (1 if r.random() < 0.85 or q.em_level else r.randint(2, 4))
        mult = self.v.places[place].charge_multiplier if place in self.v.places else 1.0
        unit = r.uniform(q.charge_low, q.charge_high) * mult * factor
        if r.random() < 0.3:
            unit = round(unit)  # some billers charge whole dollars
        return {"code": q.code, "units": units, "charge": round(unit * units, 2), "modifiers": []}

    def _med(self, d: Drug, strength: float | None = None) -> dict:
        r = self.rng
        days = r.choice(d.days_supply)
        qty = max(1.0, round(d.doses_per_day * days))
        price = r.uniform(d.unit_price_low, d.unit_price_high)
        return {"name": d.name, "strength_mg": strength or r.choice(d.common_strengths_mg),
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
            if not self.patterns or r.random() >= self.fraud_rate:
                claim = self.clean()
                self.recent.append(claim)
                yield LabelledClaim(claim, CLEAN)
                continue
            pattern = r.choice(self.patterns)
            if pattern == "high_velocity_member":
                pending.extend(self._burst())
            elif (claim := getattr(self, "_" + pattern)()) is not None:
                yield LabelledClaim(claim, pattern)

    def generate(self, count: int) -> Iterator[LabelledClaim]:
        for _, item in zip(range(count), self, strict=False):
            yield item

    def _procedure_claim(self, need_visit: bool = False) -> dict:
        """A clean claim with at least one procedure line (and a visit if asked)."""
        while True:
            c = self.clean()
            if c["procedures"] and (not need_visit or any(
                    x["code"] in self.em_codes for x in c["procedures"])):
                return c

    def _fits(self, c: dict, who) -> bool:
        return who.fits(c["member_age"], c["member_sex"])

    def _diagnosis_treatment_mismatch(self) -> dict:
        r, v = self.rng, self.v
        c = self.clean()
        ok_p, ok_d = v.justified_procedures(c["diagnoses"]), v.justified_drugs(c["diagnoses"])
        spec = v.specialties[c["provider_specialty"]]
        procs = sorted(spec.procedures - ok_p - self.em_codes - set(self.components))
        procs = [v.procedures[x] for x in procs if self._fits(c, v.procedures[x].who)]
        if procs and r.random() < 0.5:
            c["procedures"].append(self._line(r.choice(procs), c["place_of_service"]))
        else:
            drugs = [d for d in self.all_drugs if d.name not in ok_d and self._fits(c, d.who)]
            med = self._med(r.choice(drugs))
            if c["medications"]:
                c["medications"][r.randrange(len(c["medications"]))] = med
            else:
                c["medications"].append(med)
        return self._retotal(c)

    def _dose_out_of_range(self) -> dict:
        r, v = self.rng, self.v
        c = self.clean()
        if not c["medications"]:
            drugs = [d for d in self.area_drugs[v.diagnoses[c["diagnoses"][0]].area]
                     if self._fits(c, d.who)] or self.all_drugs
            c["medications"].append(self._med(r.choice(drugs)))
        i = r.randrange(len(c["medications"]))
        d = v.drugs[c["medications"][i]["name"]]
        strength = (d.strength_max_mg * r.uniform(3, 20) if r.random() < 0.75
                    else d.strength_min_mg / r.uniform(3, 20))
        c["medications"][i] = self._med(d, strength=round(strength, 3))
        return self._retotal(c)

    def _price_inflation(self) -> dict:
        r, v = self.rng, self.v
        c = self._procedure_claim()
        i = r.randrange(len(c["procedures"]))
        q = v.procedures[c["procedures"][i]["code"]]
        line = self._line(q, c["place_of_service"], units=c["procedures"][i]["units"])
        mult = v.places[c["place_of_service"]].charge_multiplier
        line["charge"] = round(q.charge_high * mult * line["units"] * r.uniform(3, 10), 2)
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
                c["procedures"][i] = visit
                return self._retotal(c)

    def _unbundling(self) -> dict:
        r, v = self.rng, self.v
        c = self._procedure_claim()
        panel = r.choice(sorted(v.bundles))
        parts = v.bundles[panel]
        chosen = r.sample(parts, min(len(parts), r.randint(3, 8))) if len(parts) > 3 else parts
        c["procedures"] = [x for x in c["procedures"] if x["code"] != panel and
                           self.components.get(x["code"]) != panel]
        c["procedures"] += [self._line(v.procedures[x], c["place_of_service"], units=1)
                            for x in chosen]
        return self._retotal(c)

    def _demographic_impossibility(self) -> dict:
        r = self.rng
        c = self.clean()
        wrong = [x for x in self.restricted if not self._fits(c, x.who)]
        x = r.choice(wrong)
        if isinstance(x, Diagnosis):
            c["diagnoses"] = [*c["diagnoses"][:11], x.code]
        elif isinstance(x, Procedure):
            c["procedures"].append(self._line(x, c["place_of_service"]))
        else:
            c["medications"].append(self._med(x))
        return self._retotal(c)

    def _specialty_mismatch(self) -> dict:
        r, v = self.rng, self.v
        specs: list[str] = []
        while not specs:  # a specialty that neither performs the code nor treats the problem
            c = self._procedure_claim()
            code = r.choice(c["procedures"])["code"]
            treats = {v.diagnoses[d].area for d in c["diagnoses"]}
            specs = [s for s, x in v.specialties.items() if code not in x.procedures
                     and not any(s in self.area_specs[a] for a in treats)]
        p = r.choice(self.by_specialty[r.choice(sorted(specs))])
        c["provider_id"], c["provider_specialty"] = p.id, p.specialty
        if p.specialty == "pharmacy":
            c["place_of_service"] = "01"
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
        start = START + dt.timedelta(days=r.randrange(SPAN_DAYS - 5))
        n = VELOCITY_NORMAL + 1
        days = sorted(start + dt.timedelta(days=r.randrange(5)) for _ in range(n))
        out = [self.clean(member=m, day=d) for d in days]
        return [LabelledClaim(c, CLEAN if k < VELOCITY_NORMAL else "high_velocity_member")
                for k, c in enumerate(out)]
