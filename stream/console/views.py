"""What the console shows, built from stored records: the API's response models, the queue
filter, and the pure functions that fill them (no Redis, no FastAPI routes here)."""

from __future__ import annotations

import collections
import datetime as dt
from dataclasses import dataclass

from pydantic import BaseModel

from model.peers import MEASURES, MeasureView
from model.score import Score


class ClaimRecord(Score):
    """A Score plus the claim as received (when the worker stored it)."""

    claim: dict | None = None


class QueueRow(BaseModel):
    claim_id: str
    member_id: str
    provider_id: str
    specialty: str | None
    score: float
    reason: str
    total_charge: float | None
    service_date: str | None
    scored_at: dt.datetime


class EntitySummary(BaseModel):
    """A member's or provider's recent claims (newest first) and what they add up to."""

    id: str
    count: int
    flagged: int
    flagged_share: float
    top_reasons: list[tuple[str, int]]
    scores: list[Score]


@dataclass(frozen=True)
class QueueFilter:
    """The queue's filters: score range, reason (case-insensitive substring), provider id,
    specialty, and the claim's service date range (inclusive)."""

    min_score: float = 0.0
    max_score: float = 1.0
    reason: str | None = None
    provider: str | None = None
    specialty: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None

    @property
    def active(self) -> bool:
        """Whether it can drop a record (then a queue looks further back than n)."""
        return any(x is not None for x in (self.reason, self.provider, self.specialty,
                                           self.since, self.until)) or (
            self.min_score > 0 or self.max_score < 1)

    def matches(self, r: dict) -> bool:
        c = r.get("claim") or {}
        sd = c.get("service_date")
        if not self.min_score <= r["score"] <= self.max_score:
            return False
        if self.reason and self.reason.lower() not in r["explanation"]["reason"].lower():
            return False
        if self.provider and self.provider != r["provider_id"]:
            return False
        if self.specialty and self.specialty != c.get("provider_specialty"):
            return False
        if (self.since or self.until) and not sd:
            return False
        return not ((self.since and sd < self.since.isoformat())
                    or (self.until and sd > self.until.isoformat()))


def strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "claim"}


def queue_row(r: dict) -> QueueRow:
    c = r.get("claim") or {}
    total = c.get("total_charge")
    return QueueRow(claim_id=r["claim_id"], member_id=r["member_id"],
                    provider_id=r["provider_id"], specialty=c.get("provider_specialty"),
                    score=r["score"], reason=r["explanation"]["reason"],
                    total_charge=float(total) if total is not None else None,
                    service_date=c.get("service_date"), scored_at=r["scored_at"])


def summary(ident: str, scores: list[Score]) -> EntitySummary:
    flagged = sum(s.flagged for s in scores)
    reasons = collections.Counter(s.explanation.reason for s in scores if s.flagged)
    return EntitySummary(id=ident, count=len(scores), flagged=flagged,
                         flagged_share=flagged / len(scores) if scores else 0.0,
                         top_reasons=reasons.most_common(5), scores=scores)


def plot(scores: list[Score], w: int = 640, h: int = 180, pad: int = 30) -> dict:
    """Score over time as SVG coordinates: x = scored_at, y = score (0 at the bottom)."""
    if not scores:
        return {"w": w, "h": h, "pad": pad, "points": [], "t0": "", "t1": ""}
    ts = [s.scored_at.timestamp() for s in scores]
    t0, t1 = min(ts), max(ts)
    span = (t1 - t0) or 1.0
    pts = [{"x": round(pad + (t - t0) / span * (w - 2 * pad), 1),
            "y": round(h - pad - s.score * (h - 2 * pad), 1), "s": s}
           for t, s in sorted(zip(ts, scores, strict=True), key=lambda p: p[0])]
    thr = scores[0].threshold
    return {"w": w, "h": h, "pad": pad, "points": pts,
            "line": " ".join(f"{p['x']},{p['y']}" for p in pts),
            "thr_y": round(h - pad - thr * (h - 2 * pad), 1), "thr": thr,
            "t0": min(s.scored_at for s in scores).strftime("%Y-%m-%d %H:%M"),
            "t1": max(s.scored_at for s in scores).strftime("%Y-%m-%d %H:%M")}


def histogram(v: MeasureView, bins: int = 20, w: int = 320, h: int = 90, pad: int = 18
              ) -> dict:
    """A measure's peers as SVG bars, with the provider's own value marked: `bars` (x, y,
    width, height, count), `mark` (its x), and the axis ends. Shares run from 0 to the
    largest of the peers' and its own value; a count measure is drawn as value / expected
    (1 = what peers bill)."""
    count = MEASURES[v.measure].kind == "count"
    own = v.value / v.expected if count and v.expected else v.value
    top = max([own, *v.peers, 1e-9])
    width = (w - 2 * pad) / bins
    counts = [0] * bins
    for x in v.peers:
        counts[min(bins - 1, int(x / top * bins))] += 1
    tallest = max(counts) or 1
    bars = [{"x": round(pad + i * width, 1), "w": round(width - 1, 1), "n": n,
             "h": round(n / tallest * (h - 2 * pad), 1),
             "y": round(h - pad - n / tallest * (h - 2 * pad), 1)}
            for i, n in enumerate(counts)]
    return {"w": w, "h": h, "pad": pad, "bars": bars, "peers": len(v.peers),
            "mark": round(pad + min(own / top, 1.0) * (w - 2 * pad), 1),
            "own": own, "top": top, "count": count, "measure": v.measure, "group": v.peer_group,
            "value": v.value, "short": v.short_value,
            "what": MEASURES[v.measure].counted, "of": MEASURES[v.measure].what}
