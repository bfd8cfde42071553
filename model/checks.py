"""Cross-claim checks: what no single claim shows, only the stream of them.

- **duplicate billing**: the same (member, provider, service date, procedure code) already
  arrived under another claim_id. A repeat that carries a repeat modifier (76, 77, 91) is
  not a duplicate where history shows that code repeated the same day (twice-daily
  therapy); a repeat modifier on a code history never repeats is no excuse.
- **member velocity**: more of one member's claims within `window_days` of each other than
  that kind of care explains. Claims count by kind (specialty and place of service): a
  kind whose history has members on it several times a week (dialysis three times a week,
  a therapy series, weekly chemotherapy or psychotherapy) counts as one visit per that many
  claims, so a dialysis patient's week reads as one visit, not as a burst.

What is normal is learned from history (`fit_limits`, run by `claimscope train` and kept
in the checkpoint's `checks.json`), not one flat limit. Both checks are idempotent: seeing
the same claim_id again (a redelivery after a crash) neither counts twice nor calls a
claim a duplicate of itself. State lives behind `CheckState` so the same rules run in
memory (evaluation, `claimscope score`) and in Redis (the workers, where it survives
restarts and rebalances).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from model.claims import Claim

DUPLICATE_PROBABILITY = 0.97  # how sure a fired check is, combined into the score
VELOCITY_PROBABILITY = 0.90
REPEAT_MODIFIERS = frozenset({"76", "77", "91"})  # repeat by same / other clinician, lab
VELOCITY_FPR = 0.01  # the velocity limit: visits at most this share of clean history exceeds
KIND_QUANTILE = 0.99  # a series kind's claims per visit: this quantile of its history
SERIES_KIND = 0.25  # a kind is series care when this share of its claims has company
MIN_SUPPORT = 200  # claims of a kind before its own limit is learned
MIN_REPEATS = 5  # same-day repeats with a modifier before a code counts as repeatable


@dataclass(frozen=True)
class CheckHit:
    name: str  # "duplicate_billing" | "member_velocity"
    probability: float
    reason: str


UNKNOWN_SPECIALTY = "unknown"  # a claim's kind when it does not know the specialty
# an institutional claim's kind: the visit its clinician also bills (brackets: no
# specialty's name can be it)
FACILITY = "[facility]"


@dataclass(frozen=True)
class CheckLimits:
    """What the checks take as normal. The defaults (a flat 3 claims a week, no repeats)
    are for a stream without history; `fit_limits` learns the rest.

    >>> CheckLimits(per_kind={"nephrology@22": 3}).visits({"nephrology@22": 4, "pharmacy@01": 1})
    3
    """

    window_days: int = 7
    velocity_limit: int = 3  # visits in a window that are still normal
    per_kind: dict[str, int] = field(default_factory=dict)  # kind -> claims per visit
    repeat_codes: frozenset[str] = frozenset()  # codes legitimately repeated the same day

    def visits(self, counts: dict[str, int]) -> int:
        """Visits' worth of a window's claims, counted per kind (`kind` below). A claim
        whose specialty is unknown may be any care at its place: it counts as the kind
        there that bills the most claims a visit (a series of therapy sessions without
        PRV is not a run of visits).

        A facility's claim is the visit its clinician's claim already counts: none.

        >>> CheckLimits(per_kind={"physical_therapy@11": 4}).visits({"unknown@11": 6})
        2
        >>> CheckLimits().visits({"emergency_medicine@23": 1, "[facility]@23": 1})
        1
        """
        return sum(math.ceil(n / self._per_visit(k)) for k, n in counts.items()
                   if not k.startswith(f"{FACILITY}@"))

    def _per_visit(self, kind: str) -> int:
        specialty, _, place = kind.partition("@")
        if specialty != UNKNOWN_SPECIALTY:
            return self.per_kind.get(kind, 1)
        return max((v for k, v in self.per_kind.items() if k.endswith(f"@{place}")),
                   default=1)

    def save(self, path: Path) -> None:
        d = asdict(self)
        d["repeat_codes"] = sorted(self.repeat_codes)
        path.write_text(json.dumps(d, indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> CheckLimits:
        d = json.loads(path.read_text())
        return cls(int(d["window_days"]), int(d["velocity_limit"]),
                   {str(k): int(v) for k, v in d["per_kind"].items()},
                   frozenset(d["repeat_codes"]))


def billed_lines(c: Claim) -> list[tuple[str, list[str]]]:
    """The (code, modifiers) of each line a duplicate is judged by: a procedure line's
    code, a revenue line's revenue code and HCPCS code (`0450:99284`, `0120:`). A line
    whose service is unknown is no evidence of the same service billed twice."""
    return [(p.code, p.modifiers) for p in c.coded_procedures] + [
        (f"{r.revenue_code or ''}:{r.code or ''}", r.modifiers) for r in c.revenue_lines
        if r.names_service]


def billed_by(c: Claim) -> str:
    """Who bills a claim, as the checks and provider risk group it: its specialty,
    `unknown` when the claim does not know it, FACILITY for an institutional claim."""
    if c.claim_type == "institutional":
        return FACILITY
    return c.provider_specialty or UNKNOWN_SPECIALTY


def kind(c: Claim) -> str:
    """The kind of care a claim is, for velocity: who bills it (`billed_by`) and where."""
    return f"{billed_by(c)}@{c.place_of_service}"


class CheckState(Protocol):
    """Where the checks remember claims. Each call handles a whole batch (one round trip)."""

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        """Record `keys[i] -> claim_ids[i]` where absent; return the id each key had first."""
        ...

    def member_near(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int], kinds: Sequence[str], window: int
                    ) -> list[dict[str, int]]:
        """Record each (member, claim_id, day, kind); return per claim, by kind, how many of
        its member's claims (itself included) have a day within `window` days of its own,
        counting everything recorded except the claims that come after it in this batch (so
        a claim sees what came before it, and a redelivered batch gets the same answers)."""
        ...

    def day_lines(self, days: Sequence[str], claim_ids: Sequence[str], lines: Sequence[str]
                  ) -> list[list[str]]:
        """Record claim `claim_ids[i]`'s service lines `lines[i]` (one string,
        `model.edits.line_text`) under `days[i]` (a provider, member and date:
        `model.edits.day_of`); return per entry the lines of the other claims recorded
        under its day, except those after it in this batch (a claim sees what came before
        it, as in `member_near`; a claim recorded again replaces itself)."""
        ...


class MemoryState:
    """In-process `CheckState` (unbounded: for evaluation and one-off scoring)."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}
        self.members: dict[str, dict[str, tuple[int, str]]] = {}
        self.days: dict[str, dict[str, str]] = {}

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        return [self.lines.setdefault(k, c) for k, c in zip(keys, claim_ids, strict=True)]

    def member_near(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int], kinds: Sequence[str], window: int
                    ) -> list[dict[str, int]]:
        for m, c, d, k in zip(members, claim_ids, days, kinds, strict=True):
            self.members.setdefault(m, {})[c] = (d, k)
        near: list[dict[str, int]] = [{} for _ in members]
        later: dict[str, set[str]] = {}  # member -> ids of batch claims after this one
        for i in range(len(members) - 1, -1, -1):
            after = later.setdefault(members[i], set())
            near[i] = dict(Counter(k for cid, (d, k) in self.members[members[i]].items()
                                   if cid not in after and abs(d - days[i]) < window))
            after.add(claim_ids[i])
        return near

    def day_lines(self, days: Sequence[str], claim_ids: Sequence[str], lines: Sequence[str]
                  ) -> list[list[str]]:
        for d, c, text in zip(days, claim_ids, lines, strict=True):
            self.days.setdefault(d, {})[c] = text
        out: list[list[str]] = [[] for _ in days]
        later: dict[str, set[str]] = {}
        for i in range(len(days) - 1, -1, -1):
            after = later.setdefault(days[i], set())
            out[i] = [text for c, text in self.days[days[i]].items()
                      if c != claim_ids[i] and c not in after]
            after.add(claim_ids[i])
        return out


@dataclass
class CrossClaimChecks:
    state: CheckState
    limits: CheckLimits = field(default_factory=CheckLimits)

    def line_key(self, c: Claim, code: str, modifiers: Sequence[str]) -> str:
        """A line's identity for duplicates; a repeat modifier on a repeatable code makes
        it a line of its own."""
        key = f"{c.member_id}|{c.provider_id}|{c.service_date}|{code}"
        if code in self.limits.repeat_codes:
            mods = sorted(REPEAT_MODIFIERS.intersection(modifiers))
            if mods:
                key += "|" + mods[0]
        return key

    def run(self, claims: Sequence[Claim]) -> list[list[CheckHit]]:
        """Hits per claim. A claim sees what came before it, its own batch included, so
        the verdicts do not depend on how claims were batched (or redelivered)."""
        keys, codes, owners = [], [], []
        for i, c in enumerate(claims):
            for code, modifiers in billed_lines(c):
                keys.append(self.line_key(c, code, modifiers))
                codes.append(code)
                owners.append(i)
        first = self.state.claim_lines(keys, [claims[i].claim_id for i in owners])
        hits: list[list[CheckHit]] = [[] for _ in claims]
        for code, i, original in zip(codes, owners, first, strict=True):
            if original != claims[i].claim_id and not any(
                    h.name == "duplicate_billing" for h in hits[i]):
                hits[i].append(CheckHit("duplicate_billing", DUPLICATE_PROBABILITY,
                                        f"duplicate billing: {code} for the same member, provider"
                                        f" and date as claim {original}"))
        lim = self.limits
        days = [c.service_date.toordinal() for c in claims]
        near = self.state.member_near([c.member_id for c in claims],
                                      [c.claim_id for c in claims], days,
                                      [kind(c) for c in claims], lim.window_days)
        for i, counts in enumerate(near):
            visits = lim.visits(counts)
            if visits > lim.velocity_limit:
                n = sum(counts.values())
                series = "" if visits == n else f", {visits} visits' worth for their kinds of care"
                hits[i].append(CheckHit(
                    "member_velocity", VELOCITY_PROBABILITY,
                    f"member velocity: {n} claims within {lim.window_days} days of "
                    f"{dt.date.fromordinal(days[i])}{series} (normal is {lim.velocity_limit} "
                    f"or fewer)"))
        return hits


def fit_limits(claims: Sequence[Claim], clean: Sequence[bool] | None = None,
               window_days: int = 7, fpr: float = VELOCITY_FPR) -> CheckLimits:
    """Learn what is normal from history, in stream order.

    - Series kinds: a kind of care (at least MIN_SUPPORT claims) where at least
      SERIES_KIND of the claims have another of the member's claims of that kind in their
      window; its claims per visit are the KIND_QUANTILE of that count. (Everyday kinds
      stay one claim a visit: two family-medicine visits in a week are two visits.)
    - The velocity limit: visits in a window that only `fpr` of clean claims exceed.
    - Repeatable codes: billed again on another claim the same day, member and provider,
      with a repeat modifier, at least MIN_REPEATS times.

    `clean` marks the claims known clean (labels); without it every claim counts, fraud
    in the history included, which makes the limits laxer, never stricter.
    """
    ok = np.ones(len(claims), bool) if clean is None else np.asarray(clean, bool)
    state = MemoryState()
    per_kind: dict[str, list[int]] = {}
    near_all: list[dict[str, int]] = []
    repeats: Counter[str] = Counter()
    seen: dict[str, str] = {}  # line key -> the claim that billed it first
    for s in range(0, len(claims), 1000):
        batch = claims[s:s + 1000]
        near = state.member_near([c.member_id for c in batch], [c.claim_id for c in batch],
                                 [c.service_date.toordinal() for c in batch],
                                 [kind(c) for c in batch], window_days)
        for c, counts, good in zip(batch, near, ok[s:s + 1000], strict=True):
            if not good:
                continue
            near_all.append(counts)
            per_kind.setdefault(kind(c), []).append(counts[kind(c)])
            for code, modifiers in billed_lines(c):
                key = f"{c.member_id}|{c.provider_id}|{c.service_date}|{code}"
                first = seen.setdefault(key, c.claim_id)
                if first != c.claim_id and REPEAT_MODIFIERS.intersection(modifiers):
                    repeats[code] += 1
    series = {k: int(np.quantile(v, KIND_QUANTILE, method="higher"))
              for k, v in per_kind.items()
              if len(v) >= MIN_SUPPORT and np.mean(np.array(v) > 1) >= SERIES_KIND}
    limits = CheckLimits(window_days, 1, {k: n for k, n in series.items() if n > 1},
                         frozenset(c for c, n in repeats.items() if n >= MIN_REPEATS))
    visits = [limits.visits(c) for c in near_all] or [CheckLimits.velocity_limit]
    return CheckLimits(window_days, int(np.quantile(visits, 1 - fpr, method="higher")),
                       limits.per_kind, limits.repeat_codes)
