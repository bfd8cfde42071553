"""Providers who run billing schemes, and honest outliers, in the generated world.

SIUs investigate providers: the money is in schemes a provider repeats over months, each
claim of which may look unremarkable alone (CMS's Comparative Billing Reports and PEPPER
compare a provider with its peers for that reason). `ProviderWorld` wraps the claim stream
of `model.generator.ClaimGenerator` (whose scattered single-claim frauds it keeps) and casts
a small share of its providers as schemers, each working one scheme on a share of its
claims (its intensity, 20-50% by default, never all of them):

    upcoder                 office visits billed at level 5 above what the claim supports
    unbundler               a bundled NCCI column-2 service added with modifier 59
    phantom_biller          services billed for members the provider never saw
    controlled_prescriber   Schedule II-IV fills on claims that had none, or in their place
    dme_mill                DME lines in 4-8x the units clean suppliers bill
    impossible_day          more therapy sessions in a day than a day holds

and a few honest outliers whose case mix justifies unusual billing: a geriatric practice
that sees the complex older patients of its specialty (high visit levels, supported), and a
dialysis centre that treats every dialysis patient three times a week. Most of the
generator's single-claim frauds move to a schemer of their specialty (CONCENTRATION).
Labels are per
claim (`LabelledClaim.fraud_pattern`: a scheme's pattern on the claims it touched) and per
provider (`ProviderWorld.labels`).

The world draws its own random numbers for casting and intensity; the claims it rewrites
or adds come from the generator's helpers, so a seed gives the same world on any machine.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass

from model.checks import UNKNOWN_SPECIALTY
from model.cms.tables import conflicts, ptp_edits
from model.generator import (
    CLAIMS_PER_MEMBER_YEAR,
    CLEAN,
    PATTERNS,
    SINGLE_CLAIM_PATTERNS,
    ClaimGenerator,
    LabelledClaim,
    Provider,
)
from model.peers import CONTROLLED, ESTABLISHED_OFFICE, TIMED_MINUTES, WINDOW_WEEKS

# scheme -> the claim-level pattern its claims carry
SCHEMES = {
    "upcoder": "upcoding",
    "unbundler": "unbundling",
    "phantom_biller": "phantom_billing",
    "controlled_prescriber": "controlled_substances",
    "dme_mill": "dme_volume",
    "impossible_day": "impossible_day",
}
OUTLIERS = ("complex_geriatric", "dialysis_centre")
NONE = "none"
SCHEME_SHARE = 0.08  # providers casting a scheme: a small share, as SIUs find
CONCENTRATION = 0.7  # single-claim frauds moved to a schemer of their specialty and place
SPECIALTY_SHARE = 0.15  # most of a specialty's providers casting schemes
INTENSITY = (0.2, 0.5)  # share of a schemer's claims its scheme touches, drawn per provider
GERIATRIC_TAKE = 0.6  # complex older patients of its specialty the geriatric practice sees
LONG_DAY_MINUTES = 26 * 60  # an impossible day bills more therapy time than a day holds


@dataclass(frozen=True, slots=True)
class ProviderLabel:
    """What a provider of the world is: a scheme (or none), at what intensity, and whether
    it is an honest outlier."""

    provider_id: str
    specialty: str
    place: str
    scheme: str = NONE
    intensity: float = 0.0
    outlier: str | None = None

    @property
    def fraud(self) -> bool:
        return self.scheme != NONE


class ProviderWorld:
    """`ClaimGenerator`'s stream with schemers and honest outliers among its providers.

    `providers`: default a hundredth of `size` (at least 150), so that a provider bills
    ~100 claims in the stream, as a small practice does in a quarter; `members`: default
    as many as make `size` claims one risk window long (`model.peers.WINDOW_WEEKS`, at
    the generator's CLAIMS_PER_MEMBER_YEAR); `intensity` fixes every schemer's share of
    touched claims (default: drawn from INTENSITY); `concentration`: the share of
    single-claim frauds that move to a schemer (0: schemes alone make schemers stand
    out)."""

    def __init__(self, *, seed: int = 0, size: int = 20_000, fraud_rate: float = 0.05,
                 scheme_share: float = SCHEME_SHARE, intensity: float | None = None,
                 providers: int | None = None, members: int | None = None,
                 patterns: tuple[str, ...] = PATTERNS, oov_rate: float = 0.1,
                 concentration: float = CONCENTRATION) -> None:
        for name, x in (("scheme share", scheme_share), ("intensity", intensity or 0.0),
                        ("concentration", concentration)):
            if not 0 <= x <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {x}")
        self.g = ClaimGenerator(seed=seed, fraud_rate=fraud_rate, size=size, patterns=patterns,
                                providers=providers or max(150, size // 100),
                                members=members or max(500, size * 365 // (
                                    round(CLAIMS_PER_MEMBER_YEAR) * 7 * WINDOW_WEEKS)),
                                oov_rate=oov_rate)
        self.rng = random.Random(seed + 104_729)  # casting: its own stream
        self.concentration = concentration
        self.labels = {p.id: ProviderLabel(p.id, p.specialty, p.place) for p in self.g.providers}
        # the facilities whose claims the visits at a hospital bring (model.facility):
        # honest, their specialty unknown as a hospital's taxonomy reads
        self.labels |= {f.id: ProviderLabel(f.id, UNKNOWN_SPECIALTY, f.place)
                        for hosts in self.g.facilities.values() for f in hosts}
        self.seen: dict[str, set[str]] = {}  # provider -> members it billed
        self.by_id = {m.id: m for m in self.g.members}
        self._cast(scheme_share, intensity)
        self._outliers()
        self.schemers: dict[tuple[str, str], list[ProviderLabel]] = {}
        for x in self.labels.values():
            if x.fraud:
                self.schemers.setdefault((x.specialty, x.place), []).append(x)

    # -- casting ------------------------------------------------------------------------
    def _eligible(self, scheme: str) -> list[Provider]:
        """Providers at their specialty's main place (so they have peers) whose specialty
        bills what the scheme needs."""
        g, v = self.g, self.g.v
        specs = {
            "upcoder": {s for s, setting in g.spec_em if setting == "office"},
            "unbundler": {"orthopedics", "dermatology", "general_surgery", "gastroenterology",
                          "cardiology", "urology", "otolaryngology", "ophthalmology"},
            "phantom_biller": {s for s, setting in g.spec_em if setting == "office"},
            "controlled_prescriber": {"family_medicine", "internal_medicine", "psychiatry",
                                      "orthopedics"},
            "dme_mill": {"dme_supplier"},
            "impossible_day": {"psychiatry", "physical_therapy"},
        }[scheme]
        return [p for p in g.providers if p.specialty in specs and self.labels[p.id].scheme
                == NONE and p.place == v.specialties[p.specialty].places_of_service[0]]

    def _cast(self, share: float, intensity: float | None) -> None:
        """round(share x providers) schemers, the schemes in turn (each at least once when
        share > 0), at most SPECIALTY_SHARE of a specialty's providers (at least one): a
        third of a specialty running one scheme would be its norm, not a scheme."""
        r, g = self.rng, self.g
        n = round(share * len(g.providers))
        if share > 0:
            n = max(n, len(SCHEMES))
        cap = {s: max(1, int(len(ps) * SPECIALTY_SHARE)) for s, ps in g.by_specialty.items()}
        cast: dict[str, int] = {}
        names, k, misses = list(SCHEMES), 0, 0
        while n > 0 and misses < len(names):
            scheme = names[k % len(names)]
            k += 1
            pool = [p for p in self._eligible(scheme)
                    if cast.get(p.specialty, 0) < cap[p.specialty]]
            if not pool:
                misses += 1
                continue
            misses, n = 0, n - 1
            p = r.choice(pool)
            cast[p.specialty] = cast.get(p.specialty, 0) + 1
            self.labels[p.id] = ProviderLabel(p.id, p.specialty, p.place, scheme,
                                              intensity if intensity is not None
                                              else round(r.uniform(*INTENSITY), 2))

    def _outliers(self) -> None:
        """One geriatric practice (internal medicine, office) and one dialysis centre
        (nephrology) per 150 providers; every dialysis plan moves to a centre."""
        r, g = self.rng, self.g
        k = max(1, len(g.providers) // 150)
        for kind, spec in (("complex_geriatric", "internal_medicine"),
                           ("dialysis_centre", "nephrology")):
            pool = [p for p in g.by_specialty[spec] if not self.labels[p.id].fraud
                    and self.labels[p.id].outlier is None and p.place == "11"]
            for p in r.sample(pool, min(k, len(pool))):
                self.labels[p.id] = ProviderLabel(p.id, p.specialty, p.place, outlier=kind)
        centres = [p for p in g.providers if self.labels[p.id].outlier == "dialysis_centre"]
        for plan in g.plans.values():
            if plan.series.name == "dialysis" and centres:
                plan.provider = r.choice(centres)
        self.geriatric = [p for p in g.providers
                          if self.labels[p.id].outlier == "complex_geriatric"]

    # -- the stream ---------------------------------------------------------------------
    def generate(self, count: int) -> Iterator[LabelledClaim]:
        """`count` claims: the generator's, with the schemers' claims rewritten or added."""
        made = 0
        for item in self.g:
            for out in self._world(item):
                yield out
                made += 1
                if made >= count:
                    return

    def _world(self, item: LabelledClaim) -> list[LabelledClaim]:
        c = item.claim
        if item.fraud_pattern == CLEAN:
            self._geriatric(c)
        elif item.fraud_pattern in SINGLE_CLAIM_PATTERNS:
            self._concentrate(c)
        label = self.labels.get(c["provider_id"])
        out = [item]
        if (label is not None and label.fraud and item.fraud_pattern == CLEAN
                and self.rng.random() < label.intensity):
            out = getattr(self, "_" + label.scheme)(c, label) or out
        for x in out:
            self.seen.setdefault(x.claim["provider_id"], set()).add(x.claim["member_id"])
        return out

    def _concentrate(self, c: dict) -> None:
        """A single-claim fraud moves, `concentration` of the time, to a schemer of its
        provider's specialty and place where there is one: a provider who runs a scheme
        cuts other corners too, and fraud concentrates in few providers."""
        pool = self.schemers.get((c["provider_specialty"], c["place_of_service"]))
        if not pool or self.rng.random() >= self.concentration:
            return
        p = self.rng.choice(pool)
        key = (c["member_id"], p.provider_id, dt.date.fromisoformat(c["service_date"]))
        if key in self.g.visits:
            return
        self.g._remember_visit(key)
        c["provider_id"] = p.provider_id

    def _geriatric(self, c: dict) -> None:
        """A complex older patient's internal-medicine visit goes, GERIATRIC_TAKE of the
        time, to a geriatric practice: older than 70, and a claim that supports level 4+."""
        if (not self.geriatric or c["provider_specialty"] != "internal_medicine"
                or c["member_age"] < 70 or self.rng.random() >= GERIATRIC_TAKE):
            return
        v = self.g.v
        level = v.max_em_level(c["diagnoses"], [x["code"] for x in c["procedures"]],
                               len(c["medications"]))
        if level < 4:
            return
        p = self.rng.choice(self.geriatric)
        key = (c["member_id"], p.id, dt.date.fromisoformat(c["service_date"]))
        if key in self.g.visits:
            return  # a second claim of that visit would read as duplicate billing
        self.g._remember_visit(key)
        c["provider_id"], c["place_of_service"] = p.id, p.place

    def _done(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        return [LabelledClaim(self.g._retotal(c), SCHEMES[label.scheme])]

    # -- the schemes: each rewrites claim `c` of its provider, or adds claims beside it;
    # [] when the claim gives it nothing to work with (the claim then goes out clean) ----
    def _upcoder(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """An established office visit billed at level 5 where the claim supports less."""
        v = self.g.v
        for i, x in enumerate(c["procedures"]):
            q = v.procedures.get(x["code"])
            if q is None or x["code"][:4] != ESTABLISHED_OFFICE or q.em_level == 5:
                continue
            allowed = v.max_em_level(c["diagnoses"], [y["code"] for y in c["procedures"]],
                                     len(c["medications"]))
            top = next(p for p in v.procedures.values()
                       if p.code[:4] == ESTABLISHED_OFFICE and p.em_level == 5)
            if v.em_ceiling(top.code, allowed) >= 5:
                return []  # level 5 is supported here: not upcoding
            line = self.g._line(top, c["place_of_service"])
            line["modifiers"] = x["modifiers"]
            c["procedures"][i] = line
            return self._done(c, label)
        return []

    def _unbundler(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """A service an NCCI edit bundles into one of the claim's (indicator 1, so a
        modifier may unbundle it) added with modifier 59: a distinct service it is not."""
        v, edits, r = self.g.v, ptp_edits(), self.rng
        bills = v.specialties[c["provider_specialty"]].procedures
        on = {x["code"] for x in c["procedures"]}
        options = [b for x in c["procedures"] if x["code"] not in self.g.em_codes
                   for b in edits.column2_codes(x["code"])
                   if b in bills and b not in on and b in v.procedures
                   and edits.indicator(x["code"], b) == 1 and not v.procedures[b].em_level
                   and self.g._fits(c, v.procedures[b].who)]
        if not options:
            return []
        line = self.g._line(v.procedures[r.choice(sorted(set(options)))], c["place_of_service"])
        line["modifiers"] = ["59"]
        c["procedures"].append(line)
        return self._done(c, label)

    def _phantom_biller(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """Beside its claim, the same services (visit left off) billed for a member the
        provider never saw, with diagnoses that member's age and sex allow."""
        g, r = self.g, self.rng
        lines = [dict(x, modifiers=list(x["modifiers"])) for x in c["procedures"]
                 if x["code"] not in g.em_codes]
        if not lines:
            return []
        seen = self.seen.get(c["provider_id"], set())
        day = dt.date.fromisoformat(c["service_date"])
        for _ in range(20):
            m = r.choice(g.members)
            dx = [d for d in c["diagnoses"] if not conflicts(d, m.age, m.sex)]
            codes = [x["code"] for x in lines]
            if (m.id in seen or not dx or (m.id, c["provider_id"], day) in g.visits
                    or not all(g._fits({"member_age": m.age, "member_sex": m.sex},
                                       g._procedure(x).who) for x in codes)):
                continue
            g._remember_visit((m.id, c["provider_id"], day))
            p = Provider(c["provider_id"], c["provider_specialty"], c["place_of_service"])
            ghost = g._claim(m, p, day, dx, lines, [])
            return [LabelledClaim(c, CLEAN), LabelledClaim(ghost, SCHEMES[label.scheme])]
        return []

    def _controlled_prescriber(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """A fill of a controlled drug the claim's problems could be given one for (one of
        the claim's fills replaced, or one added)."""
        g, v, r = self.g, self.g.v, self.rng
        ok = [d for d in sorted(v.justified_drugs(c["diagnoses"]) & CONTROLLED.keys())
              if g._fits(c, v.drugs[d].who)]
        if not ok:
            return []
        fill = g._med(v.drugs[r.choice(ok)])
        if c["medications"] and r.random() < 0.5:
            c["medications"][r.randrange(len(c["medications"]))] = fill
        elif len(c["medications"]) < 20:
            c["medications"].append(fill)
        return self._done(c, label)

    def _dme_mill(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """Every DME line of the claim in 4-8x its units."""
        v, r = self.g.v, self.rng
        lines = [x for x in c["procedures"]
                 if (q := v.procedures.get(x["code"])) is not None and q.category == "dme"]
        if not lines:
            return []
        for x in lines:
            unit = x["charge"] / x["units"]
            x["units"] = min(999, x["units"] * r.randint(4, 8))
            x["charge"] = round(unit * x["units"], 2)
        return self._done(c, label)

    def _impossible_day(self, c: dict, label: ProviderLabel) -> list[LabelledClaim]:
        """Beside its claim, sessions for other members on the same day until the day bills
        at least LONG_DAY_MINUTES of timed therapy (a quarter of the draws: each makes a
        dozen or more claims)."""
        g, v, r = self.g, self.g.v, self.rng
        if r.random() >= 0.25:
            return []
        timed = sorted(code for code in v.specialties[c["provider_specialty"]].procedures
                       if TIMED_MINUTES.get(code, 0) >= 15 and code not in g.em_codes)
        if not timed:
            return []
        day = dt.date.fromisoformat(c["service_date"])
        p = Provider(c["provider_id"], c["provider_specialty"], c["place_of_service"])
        out, minutes = [LabelledClaim(c, CLEAN)], 0
        dx = c["diagnoses"]
        for _ in range(200):
            if minutes >= LONG_DAY_MINUTES:
                break
            m = r.choice(g.members)
            if (m.id, p.id, day) in g.visits or any(conflicts(d, m.age, m.sex) for d in dx):
                continue
            code = r.choice(timed)
            units = 4 if TIMED_MINUTES[code] == 15 else 1
            line = g._line(v.procedures[code], p.place, units=units)
            g._remember_visit((m.id, p.id, day))
            out.append(LabelledClaim(g._claim(m, p, day, list(dx), [line], []),
                                     SCHEMES[label.scheme]))
            minutes += TIMED_MINUTES[code] * units
        return out if len(out) > 1 else []


def provider_labels_json(world: ProviderWorld) -> list[dict]:
    """The world's providers as JSON rows (`claimscope generate --provider-labels`)."""
    return [{"provider_id": x.provider_id, "specialty": x.specialty, "place": x.place,
             "scheme": x.scheme, "intensity": x.intensity, "outlier": x.outlier}
            for x in world.labels.values()]

