"""Provider risk against specialty peers: what each claim adds to its provider's profile,
the profiles over a rolling window, and a risk score with reasons an investigator can check.

Why peers, and why not a z-score: CMS's Comparative Billing Reports and PEPPER judge a
provider by how far its billing sits from its peers', and an SIU reads a provider, not a
claim: 99215 is fine on one claim and a scheme on 62% of a quarter's visits. A raw share on
ten claims is noise, so every measure here is a count against an expectation:

- each claim adds (measure, stratum, n, k) rows (`Contribution`): n things looked at (visits,
  lines, fills, claims, days), k of them of the kind the measure counts (level 5, modifier
  59, a controlled drug...), or for a count measure k units;
- the stratum is the case mix the claim shows: an established visit's stratum is the level
  its diagnoses, services and prescriptions support (`Vocabulary.max_em_level`), so a
  geriatric practice whose patients support level 5 is expected to bill it;
- a provider's expectation E is, stratum by stratum, its n times its peers' weighted rate
  (indirect standardisation, the provider itself left out of its peers and of the prior);
  peers are its specialty at its place of service, or its specialty where that group is
  small; a provider billing at several places is judged at its latest;
- how surprising its observed O is comes from a gamma-Poisson (negative binomial) model
  whose dispersion is fitted on all providers (method of moments, refitted without the
  providers it flags): a provider's true rate varies around its peers', and small counts stay
  unremarkable. The surprise is -log10 P(X >= O); the risk is a provider's largest;
- a reason is a measure at surprise >= REASON_SURPRISE (p <= 0.001), in words with the
  figures behind it: "99215 on 62% of 410 established office visits; peers: median 9%, 99th
  percentile 28%; expected for its patients' diagnoses: 12%".

`ProfileBook` keeps profiles in memory (eval, tests); `stream.profiles.ProfileStore` keeps
the same profiles in Redis for workers, with the same rules (`Contribution` is what both
consume). Rolling windows are whole weeks of service dates, up to the newest week seen.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from model.checks import UNKNOWN_SPECIALTY, billed_by
from model.score import EDIT_CHANNELS
from model.vocabulary import Vocabulary

ESTABLISHED_OFFICE = "9921"  # 99211-99215: the family CBRs compare level mixes on
# DEA schedules II-IV of the vocabulary's drugs (21 CFR 1308.12-1308.14)
CONTROLLED = {
    "oxycodone-acetaminophen": 2, "hydrocodone-acetaminophen": 2, "methylphenidate": 2,
    "amphetamine-dextroamphetamine": 2, "acetaminophen-codeine": 3,
    "buprenorphine-naloxone": 3, "tramadol": 4, "alprazolam": 4, "lorazepam": 4,
    "zolpidem": 4,
}
# Minutes a unit of a timed service takes: office visits at the 2021 total-time floors
# (CMS MLN006764, E/M services guide), psychotherapy at its time band, therapy codes at
# Medicare's 15-minute unit, chemotherapy infusion by the hour. A line billed in minutes
# (anesthesia, `ProcedureLine.minutes`) counts the minutes it states.
TIMED_MINUTES = {
    "99202": 15, "99203": 30, "99204": 45, "99205": 60, "99212": 10, "99213": 20,
    "99214": 30, "99215": 40, "90832": 30, "90834": 45, "90837": 60, "97110": 15,
    "97112": 15, "97116": 15, "97140": 15, "97530": 15, "96413": 60, "96415": 60,
}
OVERCHARGE = 1.5  # a unit charge this far above its code's range (model.vocabulary) is high
UNBUNDLING_MODIFIERS = frozenset({"59", "XE", "XP", "XS", "XU"})
LONG_DAY = 24 * 60  # minutes of timed services past which a day holds more than it can
WINDOW_WEEKS = 13  # ~90 days: the risk window
SHORT_WEEKS = 5  # ~30 days: shown beside it
REASON_SURPRISE = 3.0  # p <= 0.001: with ~10 measures x hundreds of providers, few by chance
DISPERSION_TRIM = 0.1  # providers with the largest O / E left out of the spread's first fit
PEER_ROUNDS = 3  # judgements of a measure, each later one without whom the last one flags
GROUP_PRIOR = 1.0  # pseudo-providers at the all-provider rate behind a peer group's rate
HALF_WEIGHT = 20.0  # a provider's n at which its rate weighs half a provider
PEERS_KEPT = 100  # peers' values a snapshot carries for its histogram
MIN_GROUP = 5  # providers a peer group needs; smaller: the whole specialty


@dataclass(frozen=True, slots=True)
class Measure:
    """A profile measure: `share` (k of n) or `count` (k units over n things)."""

    name: str
    kind: str
    what: str  # what n counts, for reasons
    counted: str  # what k counts
    scored: bool = True  # counts towards the risk (else shown only)
    like: str = ""  # a count measure: what peers' expectation is matched on


MEASURES = {m.name: m for m in (
    Measure("level5", "share", "established office visits", "level 5 (99215)"),
    Measure("modifier59", "share", "procedure lines", "modifier 59/XE/XP/XS/XU"),
    Measure("unseen", "share", "service claims (sessions of ongoing care aside)",
            "billed for members it never saw at a visit"),
    Measure("controlled", "share", "fills", "Schedule II-IV drugs"),
    Measure("dme_units", "count", "DME lines", "units a line", like="for the same codes"),
    # shown, not scored: the generator's scattered price inflations sit on honest
    # providers too, a few lines each against a peer rate near 0 (measured: four honest
    # practices in a top 30; docs/providers.md)
    Measure("overcharge", "share", "priced procedure lines",
            f"charged over {OVERCHARGE:g}x the top of the code's range", False),
    Measure("lines", "count", "claims with services", "service lines a claim",
            like="for claims with and without a visit alike"),
    Measure("long_days", "share", "days billed", "over 24 hours of timed services"),
    Measure("flag_model", "share", "claims", "flagged by the fraud model"),
    Measure("flag_edits", "share", "claims", "breaking a payer edit"),
    # shown, not scored: the member checks follow members in frequent care, the anomaly
    # channel rare case mix (measured: they put honest therapy and psychiatry practices
    # in the top 20; docs/providers.md)
    Measure("flag_checks", "share", "claims", "flagged by a cross-claim check", False),
    Measure("flag_anomaly", "share", "claims", "flagged as anomalous", False),
)}


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one scored claim adds to its provider's profile. `rows`: (measure, stratum, n,
    k). The visit-dependent measure (unseen: a claim without a visit for a member the
    provider never saw for one) and the day measure (long_days) need the provider's state,
    so the claim carries what they need: `visit`, `services` (stratum of `unseen`, or None
    for a claim without procedures) and `minutes`."""

    provider_id: str
    group: str  # "specialty|place"
    claim_id: str
    member_id: str
    day: int  # service date's ordinal
    rows: tuple[tuple[str, str, int, int], ...]
    visit: bool
    services: str | None
    minutes: int

    @property
    def week(self) -> int:
        return self.day // 7


SESSION_CODES = frozenset({"90935", "96413", "96415", "97110", "97112", "97116", "97140",
                           "97530", "90832", "90834", "90837"})


def contribution(claim, flagged_by: Sequence[str], vocab: Vocabulary) -> Contribution:
    """The profile rows of a scored claim (`model.claims.Claim`, and its Score's
    flagged_by)."""
    v = vocab
    coded = claim.coded_procedures
    codes = [x.code for x in coded]
    rows: list[tuple[str, str, int, int]] = []
    visit = False
    supported: int | None = None
    minutes = 0
    for x in coded:
        q = v.procedures.get(x.code)
        # a line billed by time states its minutes; else the code's minutes a unit
        minutes += x.minutes or TIMED_MINUTES.get(x.code, 0) * x.units
        if q is not None and q.em_level:
            visit = True
            if x.code[:4] == ESTABLISHED_OFFICE:
                if supported is None:
                    supported = max(1, min(5, v.max_em_level(claim.diagnosis_codes, codes,
                                                             len(claim.medications))))
                rows.append(("level5", str(supported), 1, int(q.em_level == 5)))
            continue
        rows.append(("modifier59", x.code, 1, int(bool(UNBUNDLING_MODIFIERS & set(x.modifiers)))))
        top = v.charge_top(x.code)
        if top is not None:  # the unit charge against the code's range, at its place
            mult = v.places[claim.place_of_service].charge_multiplier if (
                claim.place_of_service in v.places) else 1.0
            rows.append(("overcharge", "all", 1,
                         int(x.charge / x.units > OVERCHARGE * top * mult)))
        if q is not None and q.category == "dme":
            rows.append(("dme_units", x.code, 1, x.units))
    if claim.medications:
        indicated = bool(v.justified_drugs(claim.diagnosis_codes) & CONTROLLED.keys())
        stratum = "indicated" if indicated else "other"
        rows += [("controlled", stratum, 1, int(m.name in CONTROLLED))
                 for m in claim.medications]
    if claim.procedures:  # services a claim: stratum the specialty's visit or not
        rows.append(("lines", "visit" if visit else "other", 1, len(claim.procedures)))
    fired = set(flagged_by)
    rows += [("flag_model", "all", 1, int("fraud_model" in fired)),
             ("flag_edits", "all", 1, int(bool(fired & set(EDIT_CHANNELS)))),
             ("flag_checks", "all", 1,
              int(bool(fired & {"duplicate_billing", "member_velocity"}))),
             ("flag_anomaly", "all", 1, int("anomaly" in fired))]
    # a session of ongoing care (dialysis, infusion, therapy) is no first contact: not
    # counted
    services = "all" if claim.procedures and not SESSION_CODES & set(codes) else None
    summed: dict[tuple[str, str], list[int]] = {}
    for m, st, n, k in rows:  # one row per (measure, stratum): fewer writes to the store
        nk = summed.setdefault((m, st), [0, 0])
        nk[0] += n
        nk[1] += k
    rows = [(m, st, n, k) for (m, st), (n, k) in summed.items()]
    # a claim that does not know the specialty is judged with the other unknowns
    # and a facility with the facilities of its place (checks.billed_by)
    group = f"{billed_by(claim)}|{claim.place_of_service}"
    return Contribution(claim.provider_id, group,
                        claim.claim_id, claim.member_id, claim.service_date.toordinal(),
                        tuple(rows), visit, services, minutes)


@dataclass(slots=True)
class Profile:
    """A provider's counts over a window: (measure, stratum) -> [n, k]; distinct members."""

    provider_id: str
    group: str
    counts: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    members: int = 0
    # the same counts by measure (measure -> stratum -> [n, k], the very lists of
    # `counts`) and each measure's totals, made from `counts` and kept as counts are
    # added: the ranking reads one measure at a time of every provider
    strata: dict[str, dict[str, list[float]]] = field(default_factory=dict, init=False)
    totals: dict[str, list[float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        given, self.counts = self.counts, {}
        for (measure, stratum), (n, k) in given.items():
            self.add(measure, stratum, n, k)

    def add(self, measure: str, stratum: str, n: float, k: float) -> None:
        nk = self.counts.get((measure, stratum))
        if nk is None:
            nk = self.counts[measure, stratum] = [0.0, 0.0]
            self.strata.setdefault(measure, {})[stratum] = nk
        for x in (nk, self.totals.setdefault(measure, [0.0, 0.0])):
            x[0] += n
            x[1] += k

    def of(self, measure: str) -> dict[str, list[float]]:
        """stratum -> [n, k] of `measure`."""
        return self.strata.get(measure, {})

    def total(self, measure: str) -> tuple[float, float]:
        n, k = self.totals.get(measure, (0.0, 0.0))
        return n, k


class ProfileBook:
    """Provider profiles in memory, by week, with `ProfileStore`'s rules: a claim counts
    once (by claim_id); `unseen` counts a claim with services and no visit for a member the
    provider has not billed a visit for; `long_days` counts each day billed (n) and each
    day whose timed minutes pass LONG_DAY (k) once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.visited: dict[str, set[str]] = defaultdict(set)
        self.minutes: dict[tuple[str, int], int] = defaultdict(int)
        self.weeks: dict[str, dict[tuple[int, str, str], list[float]]] = defaultdict(dict)
        self.members: dict[str, dict[str, int]] = defaultdict(dict)
        self.groups: dict[str, str] = {}
        self.clock = 0  # the newest week seen

    def add(self, c: Contribution) -> None:
        if c.claim_id in self.seen:
            return
        self.seen.add(c.claim_id)
        # the latest group; a known specialty is not replaced by an unknown one (a claim
        # without PRV), which would judge the provider against a mixed peer group
        if c.provider_id not in self.groups or not c.group.startswith(f"{UNKNOWN_SPECIALTY}|"):
            self.groups[c.provider_id] = c.group
        self.clock = max(self.clock, c.week)
        book = self.weeks[c.provider_id]

        def bump(measure: str, stratum: str, n: float, k: float) -> None:
            if not n and not k:
                return
            nk = book.setdefault((c.week, measure, stratum), [0.0, 0.0])
            nk[0] += n
            nk[1] += k

        for row in c.rows:
            bump(*row)
        if c.services is not None:
            bump("unseen", c.services, 1,
                 int(not c.visit and c.member_id not in self.visited[c.provider_id]))
        if c.visit:
            self.visited[c.provider_id].add(c.member_id)
        day = (c.provider_id, c.day)
        before = self.minutes[day]
        self.minutes[day] = after = before + c.minutes
        bump("long_days", "all", int(before == 0 and after > 0),
             int(before <= LONG_DAY < after))
        seen = self.members[c.provider_id]
        seen[c.member_id] = max(seen.get(c.member_id, 0), c.day)

    def profiles(self, weeks: int = WINDOW_WEEKS) -> dict[str, Profile]:
        """Every provider's profile over the last `weeks` weeks up to the clock."""
        return {p: window(p, self.groups[p], rows.items(), self.clock, weeks,
                          sum(d // 7 > self.clock - weeks for d in self.members[p].values()))
                for p, rows in self.weeks.items()}


def window(provider: str, group: str, rows: Iterable[tuple[tuple[int, str, str], list[float]]],
           clock: int, weeks: int, members: int) -> Profile:
    """The profile of weekly rows ((week, measure, stratum), [n, k]) within `weeks` of
    `clock`."""
    out = Profile(provider, group, members=members)
    for (week, measure, stratum), (n, k) in rows:
        if week > clock - weeks:
            out.add(measure, stratum, n, k)
    return out


# -- peer comparison ------------------------------------------------------------------------

class MeasureView(BaseModel):
    """One measure of a provider against its peers."""

    measure: str
    peer_group: str = Field(description="whom it is compared with: specialty|place, else "
                            "the specialty, else all (the first with MIN_GROUP providers)")
    n: float = Field(description="what was looked at (visits, lines, fills, claims, days)")
    k: float = Field(description="how many were of the measure's kind (or units)")
    value: float = Field(description="k / n: the provider's share (or units per line)")
    expected: float = Field(description="k / n its peers' rates give for its case mix")
    peer_median: float = Field(description="its peers' median value (peers with n >= 5 "
                               "that the measure does not flag)")
    peer_p99: float = Field(description="their 99th percentile")
    surprise: float = Field(description="-log10 P(X >= k) under the peers' model")
    short_value: float | None = Field(None, description="the share over the short window")
    peers: list[float] = Field(default_factory=list, description="those peers' values, "
                               "sorted (at most PEERS_KEPT, evenly spaced), for a histogram")


class ProviderRisk(BaseModel):
    """A provider's risk: its largest surprise, and the measures that make it, in words."""

    provider_id: str
    specialty: str
    place_of_service: str
    peer_group: str = Field(description="its own group, specialty|place (each measure says "
                            "whom it was compared with)")
    risk: float = Field(description="largest surprise of any measure (-log10 p)")
    reasons: list[str] = Field(description=(
        "the measures past the reason cut, in words: what the provider bills against its "
        "peers first, then how often our channels flag its claims, each by surprise (a "
        "billing pattern is what an investigator can check in the claims)"))
    claims: float
    members: int
    measures: list[MeasureView]


def nb_surprise(observed: float, mean: float, size: float) -> float:
    """-log10 P(X >= observed) for X negative binomial with `mean` and `size` (the gamma
    shape of the rate's spread; large: Poisson). Summed term by term in log space: the
    counts are at most thousands, and this keeps scipy out of the worker."""
    o = math.ceil(observed - 1e-9)
    if o <= 0:
        return 0.0
    mean = max(mean, 1e-3)
    p = size / (size + mean)
    lp, lq = math.log(p), math.log1p(-p)

    def logpmf(x: int) -> float:
        return (math.lgamma(x + size) - math.lgamma(size) - math.lgamma(x + 1)
                + size * lp + x * lq)

    mode = int((size - 1) * (1 - p) / p) if size > 1 else 0
    if o > mode:  # the upper tail, from o, term ratios falling
        first, total, term, x = logpmf(o), 1.0, 1.0, o
        while term > total * 1e-12 and x < o + 100_000:
            term *= (x + size) / (x + 1) * (1 - p)
            total += term
            x += 1
        log10_sf = (first + math.log(total)) / math.log(10)
        return min(50.0, max(0.0, -log10_sf))
    below = math.fsum(math.exp(logpmf(x)) for x in range(o))
    return max(0.0, -math.log10(max(1e-300, 1.0 - below)))


def spread(xs: list[float], most: int = PEERS_KEPT) -> list[float]:
    """At most `most` of the sorted `xs`, evenly spaced, first and last kept: a group's
    whole range for a histogram, in a snapshot of bounded size."""
    if len(xs) <= most:
        return xs
    return [xs[round(i * (len(xs) - 1) / (most - 1))] for i in range(most)]


def _quantile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def _moments(pairs: list[tuple[float, float]], trim: float = 0.0) -> float:
    """1 / gamma shape, by the moments pooled over providers: sum((O - E)^2 - O) /
    sum(E^2), without the `trim` share with the largest O / E; at least 0.01, at most 4."""
    usable = sorted(((o, e) for o, e in pairs if e > 0), key=lambda oe: oe[0] / oe[1])
    usable = usable[:len(usable) - int(len(usable) * trim)]
    if len(usable) < 3:
        return 0.25
    phi = math.fsum((o - e) ** 2 - o for o, e in usable) / math.fsum(e * e for _, e in usable)
    return min(4.0, max(0.01, phi))


PEER_KINDS = ("group", "specialty", "all")  # whom a provider is compared with (`rank`)


@dataclass
class _Rows:
    """One measure's counts as arrays, for `_judge`: a row per (active provider, stratum)
    with n > 0, and per provider its totals, its group and specialty (as indices) and
    which of them (or everyone) it is judged against (`PEER_KINDS`)."""

    providers: list[str]  # the active ones: n > 0 for the measure
    provider: np.ndarray  # (R,) a row's provider, an index into `providers`
    stratum: np.ndarray  # (R,) its stratum's index
    n: np.ndarray  # (R,)
    k: np.ndarray  # (R,)
    totals: np.ndarray  # (P, 2) each provider's n and k over all its strata
    group: np.ndarray  # (P,) its group (specialty|place), an index
    specialty: np.ndarray  # (P,) its specialty, an index
    kind: np.ndarray  # (P,) the peers it is judged against, an index into PEER_KINDS

    @classmethod
    def of(cls, profiles: dict[str, Profile], measure: str, judged: dict[str, str]) -> _Rows:
        active = list(judged)
        strata: dict[str, int] = {}
        rows = [(i, strata.setdefault(s, len(strata)), n, k) for i, p in enumerate(active)
                for s, (n, k) in profiles[p].of(measure).items() if n > 0]
        # every provider in `judged` has the measure, so a row at least
        provider, stratum, n, k = (np.array(c) for c in zip(*rows, strict=True))
        groups: dict[str, int] = {}
        specialties: dict[str, int] = {}
        group = [groups.setdefault(profiles[p].group, len(groups)) for p in active]
        specialty = [specialties.setdefault(profiles[p].group.split("|")[0], len(specialties))
                     for p in active]
        return cls(active, provider.astype(int), stratum.astype(int), n.astype(float),
                   k.astype(float),
                   np.array([profiles[p].total(measure) for p in active]).reshape(-1, 2),
                   np.array(group, int), np.array(specialty, int),
                   np.array([PEER_KINDS.index(judged[p]) for p in active], int))


def _judge(profiles: dict[str, Profile], measure: str, judged: dict[str, str]
           ) -> tuple[dict[str, tuple[float, float, float]], set[str], dict[str, float]]:
    """For the providers in `judged` (each with the measure, and the `PEER_KINDS` it is
    compared with): provider -> (n, O, E) for `measure`, the providers it flags (left out
    of their peers' figures), and provider -> its surprise (0 where O <= E) in the last
    round.

    E is, stratum by stratum, the provider's n times its peers' weighted rate, shrunk
    towards every provider's by GROUP_PRIOR pseudo-providers (a group of few says little
    alone). A peer's rate weighs w = n / (n + HALF_WEIGHT): a provider counts once however
    much it bills (pooled counts would let the biggest practice set its peers' rate), a
    small one less. Schemers would raise the rate and widen the spread they are judged by,
    and some measures have few providers, a third of them schemers: so the judgement is
    made PEER_ROUNDS times, each later one without the providers the one before flagged
    (at REASON_SURPRISE) among the peers and in the spread's fit; the first fit of the
    spread leaves out the DISPERSION_TRIM share with the largest O / E.

    The peers' sums are bincounts over the rows, by group, by specialty and over everyone
    (`_Rows`): as Python loops over every peer of every provider they were two thirds of
    a ranking (1,132 providers: 0.40-0.45 s to rank, docs/providers.md)."""
    if not judged:
        return {}, set(), {}
    x = _Rows.of(profiles, measure, judged)
    P, S = len(x.providers), int(x.stratum.max()) + 1
    w = x.n / (x.n + HALF_WEIGHT)
    wr = w * x.k / x.n
    kind = x.kind[x.provider]  # (R,) whom each row's provider is judged against
    pools = [x.group[x.provider], x.specialty[x.provider], np.zeros_like(x.provider)]

    def pooled(weights: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """(R,) `weights` summed over the rows of each row's (pool, stratum)."""
        key = pool * S + x.stratum
        return np.bincount(key, weights, (int(pool.max()) + 1) * S)[key]

    excluded = np.zeros(P, bool)
    rows: dict[str, tuple[float, float, float]] = {}
    for round_ in range(PEER_ROUNDS):
        kept = ~excluded[x.provider]  # rows of providers that are peers this round
        total_w = (w * kept).sum()
        overall = (wr * kept).sum() / total_w if total_w else 0.0
        sums = [[pooled(w * kept, pool) for pool in pools],
                [pooled(wr * kept, pool) for pool in pools]]
        sw, swr = (np.choose(kind, by_kind) for by_kind in sums)  # its own peers'
        aw, awr = sums[0][2], sums[1][2]  # every provider's
        # peers, and every provider, without the provider itself
        sw, swr, aw, awr = sw - w * kept, swr - wr * kept, aw - w * kept, awr - wr * kept
        # a stratum nobody else bills (a code of its own): the measure's rate
        prior = np.where(aw > 1e-9, awr / np.where(aw > 1e-9, aw, 1.0), overall)
        expected = np.bincount(x.provider, x.n * (np.maximum(0.0, swr) + GROUP_PRIOR * prior)
                               / (np.maximum(0.0, sw) + GROUP_PRIOR), P)
        rows = {p: (float(x.totals[i, 0]), float(x.totals[i, 1]), float(expected[i]))
                for i, p in enumerate(x.providers)}
        size = 1 / _moments([(o, e) for i, (_, o, e) in enumerate(rows.values())
                             if not excluded[i]], DISPERSION_TRIM if round_ == 0 else 0.0)
        surprise = [nb_surprise(o, e, size) if o > e else 0.0 for _, o, e in rows.values()]
        excluded = np.array(surprise) >= REASON_SURPRISE
    return (rows, {p for p, out in zip(x.providers, excluded, strict=True) if out},
            dict(zip(x.providers, surprise, strict=True)))


def rank(profiles: dict[str, Profile], short: dict[str, Profile] | None = None
         ) -> list[ProviderRisk]:
    """Every provider's risk against its peers, highest first (ties by provider id)."""
    by_group: dict[str, list[str]] = defaultdict(list)
    by_spec: dict[str, list[str]] = defaultdict(list)
    for p, x in profiles.items():
        by_group[x.group].append(p)
        by_spec[x.group.split("|")[0]].append(p)

    everyone = list(profiles)
    views: dict[str, list[MeasureView]] = defaultdict(list)
    for measure in MEASURES:
        active = [p for p, x in profiles.items() if x.total(measure)[0] > 0]
        in_group = Counter(profiles[p].group for p in active)
        in_spec = Counter(profiles[p].group.split("|")[0] for p in active)

        # a group's peers: its specialty at its place, else its specialty, else every
        # provider: the first with MIN_GROUP providers that have the measure
        of_group: dict[str, tuple[str, str, list[str]]] = {}
        for g in by_group:
            spec = g.split("|")[0]
            of_group[g] = (("group", g, by_group[g]) if in_group[g] >= MIN_GROUP else
                           ("specialty", spec, by_spec[spec]) if in_spec[spec] >= MIN_GROUP
                           else ("all", "all", everyone))
        peers = {p: of_group[profiles[p].group] for p in active}
        rows, flagged, surprise = _judge(profiles, measure,
                                         {p: kind for p, (kind, _, _) in peers.items()})
        value = {p: o / n for p, (n, o, _) in rows.items()}
        if MEASURES[measure].kind == "count":  # units per line against what E expects
            value = {p: o / max(1e-9, e) for p, (_, o, e) in rows.items()}
        # each pool's peer values: its providers with n >= 5 that the measure does not flag
        # (pools by kind and name: a specialty may be called "all")
        shown = {p for p, (n, _, _) in rows.items() if n >= 5 and p not in flagged}
        pooled: dict[tuple[str, str], list[float]] = {}
        for p, (n, o, e) in rows.items():
            kind, name, pool = peers[p]
            if (kind, name) not in pooled:
                pooled[kind, name] = sorted(value[q] for q in pool if q in shown)
            peer_values = pooled[kind, name]
            if p in shown:  # its peers are its pool without itself
                i = bisect.bisect_left(peer_values, value[p])
                peer_values = peer_values[:i] + peer_values[i + 1:]
            sx = short.get(p) if short else None
            sn, sk = sx.total(measure) if sx else (0.0, 0.0)
            views[p].append(MeasureView(
                measure=measure, peer_group=name, n=n, k=o, value=o / n, expected=e / n,
                peer_median=_quantile(peer_values, 0.5), peer_p99=_quantile(peer_values, 0.99),
                surprise=round(surprise[p], 3),
                short_value=sk / sn if sn else None, peers=spread(peer_values)))
    out = []
    for p, x in profiles.items():
        vs = sorted(views[p], key=lambda v: (not MEASURES[v.measure].scored, -v.surprise))
        scored = [v for v in vs if MEASURES[v.measure].scored]
        spec, _, place = x.group.partition("|")
        claims, _ = x.total("flag_model")
        out.append(ProviderRisk(
            provider_id=p, specialty=spec, place_of_service=place,
            peer_group=x.group, risk=scored[0].surprise if scored else 0.0,
            reasons=[reason(v) for v in sorted(
                (v for v in scored if v.surprise >= REASON_SURPRISE),
                key=lambda v: (v.measure.startswith("flag_"), -v.surprise))],
            claims=claims, members=x.members, measures=vs))
    out.sort(key=lambda r: (-r.risk, r.provider_id))
    return out


def reason(v: MeasureView) -> str:
    """The measure in words, with the figures behind it."""
    m = MEASURES[v.measure]
    if m.kind == "count":
        return (f"{v.value:.1f} {m.counted} over {v.n:.0f} {m.what}, "
                f"{v.value / max(v.expected, 1e-9):.1f}x what peers bill {m.like} "
                f"(peers: median {v.peer_median:.1f}x, 99th percentile {v.peer_p99:.1f}x)")
    text = (f"{m.counted} on {v.value:.0%} of {v.n:.0f} {m.what}; peers: median "
            f"{v.peer_median:.0%}, 99th percentile {v.peer_p99:.0%}")
    if v.measure == "level5":
        text += f"; expected for its patients' diagnoses: {v.expected:.0%}"
    return text
