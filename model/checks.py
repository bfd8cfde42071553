"""Cross-claim checks: what no single claim shows, only the stream of them.

- **duplicate billing**: the same (member, provider, service date, procedure code) already
  arrived under another claim_id;
- **member velocity**: more than `velocity_limit` claims of one member with service dates
  within `window_days` of each other.

Both are idempotent: seeing the same claim_id again (a redelivery after a crash) neither
counts twice nor calls a claim a duplicate of itself. State lives behind `CheckState` so
the same rules run in memory (evaluation, `claimscope score`) and in Redis (the workers,
where it survives restarts and rebalances).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from model.claims import Claim

DUPLICATE_PROBABILITY = 0.97  # how sure a fired check is, combined into the score
VELOCITY_PROBABILITY = 0.90


@dataclass(frozen=True)
class CheckHit:
    name: str  # "duplicate_billing" | "member_velocity"
    probability: float
    reason: str


class CheckState(Protocol):
    """Where the checks remember claims. Each call handles a whole batch (one round trip)."""

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        """Record `keys[i] -> claim_ids[i]` where absent; return the id each key had first."""
        ...

    def member_near(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int], window: int) -> list[int]:
        """Record each (member, claim_id, day); return per claim how many of its member's
        claims (itself included) have a day within `window` days of its own, counting
        everything recorded except the claims that come after it in this batch (so a claim
        sees what came before it, and a redelivered batch gets the same answers)."""
        ...


class MemoryState:
    """In-process `CheckState` (unbounded: for evaluation and one-off scoring)."""

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}
        self.members: dict[str, dict[str, int]] = {}

    def claim_lines(self, keys: Sequence[str], claim_ids: Sequence[str]) -> list[str | None]:
        return [self.lines.setdefault(k, c) for k, c in zip(keys, claim_ids, strict=True)]

    def member_near(self, members: Sequence[str], claim_ids: Sequence[str],
                    days: Sequence[int], window: int) -> list[int]:
        for m, c, d in zip(members, claim_ids, days, strict=True):
            self.members.setdefault(m, {})[c] = d
        near = [0] * len(members)
        later: dict[str, set[str]] = {}  # member -> ids of batch claims after this one
        for i in range(len(members) - 1, -1, -1):
            after = later.setdefault(members[i], set())
            near[i] = sum(1 for cid, d in self.members[members[i]].items()
                          if cid not in after and abs(d - days[i]) < window)
            after.add(claim_ids[i])
        return near


@dataclass
class CrossClaimChecks:
    state: CheckState
    window_days: int = 7
    velocity_limit: int = 3

    def run(self, claims: Sequence[Claim]) -> list[list[CheckHit]]:
        """Hits per claim. A claim sees what came before it, its own batch included, so
        the verdicts do not depend on how claims were batched (or redelivered)."""
        keys, owners = [], []
        for i, c in enumerate(claims):
            for p in c.procedures:
                keys.append(f"{c.member_id}|{c.provider_id}|{c.service_date}|{p.code}")
                owners.append(i)
        first = self.state.claim_lines(keys, [claims[i].claim_id for i in owners])
        hits: list[list[CheckHit]] = [[] for _ in claims]
        for key, i, original in zip(keys, owners, first, strict=True):
            if original != claims[i].claim_id and not any(
                    h.name == "duplicate_billing" for h in hits[i]):
                code = key.rsplit("|", 1)[1]
                hits[i].append(CheckHit("duplicate_billing", DUPLICATE_PROBABILITY,
                                        f"duplicate billing: {code} for the same member, provider"
                                        f" and date as claim {original}"))
        days = [c.service_date.toordinal() for c in claims]
        near = self.state.member_near([c.member_id for c in claims],
                                      [c.claim_id for c in claims], days, self.window_days)
        for i, n in enumerate(near):
            if n > self.velocity_limit:
                hits[i].append(CheckHit(
                    "member_velocity", VELOCITY_PROBABILITY,
                    f"member velocity: {n} claims within {self.window_days} days of "
                    f"{dt.date.fromordinal(days[i])} (normal is {self.velocity_limit} or fewer)"))
        return hits
