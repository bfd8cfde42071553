"""The console's JSON API under /api: stored Scores, the queue's rows, member and provider
summaries, attention maps, and investigator feedback (docs/console.md lists them)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from kafka.errors import KafkaError

from model.peers import ProviderRisk
from model.score import Score
from stream.console.deps import AttentionDep, FeedbackDep, ProfilesDep, StoreDep
from stream.console.views import (
    ClaimRecord,
    EntitySummary,
    QueueFilter,
    QueueRow,
    queue_row,
    strip,
    summary,
)
from stream.feedback import Feedback, FeedbackIn
from stream.store import ScoreStore

SCAN = 2000  # newest flagged records a filtered queue looks through
N = Annotated[int, Query(ge=1, le=1000, description="how many, newest first")]
Unit = Annotated[float, Query(ge=0, le=1)]

router = APIRouter(prefix="/api")


async def queue_filter(min_score: Unit = 0.0, max_score: Unit = 1.0, reason: str | None = None,
                       provider: str | None = None, specialty: str | None = None,
                       since: dt.date | None = None,
                       until: dt.date | None = None) -> QueueFilter:
    """The queue's filters from the query string (shared by /api/flagged and /api/queue)."""
    return QueueFilter(min_score, max_score, reason, provider, specialty, since, until)


Filter = Annotated[QueueFilter, Depends(queue_filter)]


def record_or_404(store: ScoreStore, claim_id: str) -> dict:
    rec = store.record(claim_id)
    if rec is None:
        raise HTTPException(404, f"no claim {claim_id!r} in the store (never scored, or "
                            "expired)")
    return rec


def flagged_records(store: ScoreStore, n: int, f: QueueFilter) -> list[dict]:
    """The n newest flagged records that pass `f` (among the newest SCAN when filtered)."""
    out = []
    for r in store.flagged_records(SCAN if f.active else n):
        if f.matches(r):
            out.append(r)
            if len(out) >= n:
                break
    return out


@router.get("/claims/{claim_id}", response_model=ClaimRecord, tags=["claims"])
def api_claim(claim_id: str, store: StoreDep) -> dict:
    """The stored Score of one claim, with the claim itself under `claim`."""
    return record_or_404(store, claim_id)


@router.get("/claims/{claim_id}/attention", tags=["claims"])
def api_attention(claim_id: str, store: StoreDep, attention: AttentionDep) -> dict:
    """Attention weights per layer and head over the claim's tokens (recomputed)."""
    rec = record_or_404(store, claim_id)
    if not rec.get("claim"):
        raise HTTPException(404, "the store holds no claim for this Score")
    return attention.of(rec["claim"])


@router.get("/recent", response_model=list[Score], tags=["claims"])
def api_recent(store: StoreDep, n: N = 50) -> list[Score]:
    """The n most recently scored claims."""
    return store.recent(n)


@router.get("/flagged", response_model=list[Score], tags=["claims"])
def api_flagged(store: StoreDep, f: Filter, n: N = 50) -> list[dict]:
    """Flagged Scores, newest first; filters as on the queue page (see /api/queue)."""
    return [strip(r) for r in flagged_records(store, n, f)]


@router.get("/queue", response_model=list[QueueRow], tags=["claims"])
def api_queue(store: StoreDep, f: Filter, n: N = 100) -> list[QueueRow]:
    """The queue page's rows. `reason`: case-insensitive substring of the reason;
    `since`/`until`: the claim's service date, inclusive."""
    return [queue_row(r) for r in flagged_records(store, n, f)]


@router.get("/members/{member_id}", response_model=EntitySummary, tags=["entities"])
def api_member(member_id: str, store: StoreDep, n: N = 200) -> EntitySummary:
    return summary(member_id, store.by_member(member_id, n))


@router.get("/providers/{provider_id}", response_model=EntitySummary, tags=["entities"])
def api_provider(provider_id: str, store: StoreDep, n: N = 200) -> EntitySummary:
    return summary(provider_id, store.by_provider(provider_id, n))


@router.get("/claims/{claim_id}/feedback", response_model=Feedback, tags=["feedback"])
def api_get_feedback(claim_id: str, sink: FeedbackDep) -> Feedback:
    fb = sink.get(claim_id)
    if fb is None:
        raise HTTPException(404, "no feedback for this claim")
    return fb


@router.post("/claims/{claim_id}/feedback", response_model=Feedback, tags=["feedback"],
             responses={404: {"description": "unknown claim"},
                        503: {"description": "Redis or the broker is unavailable"}})
def api_feedback(claim_id: str, body: FeedbackIn, store: StoreDep,
                 sink: FeedbackDep) -> Feedback:
    """Label a scored claim; stored in Redis and published to `claims.feedback`."""
    rec = record_or_404(store, claim_id)
    try:
        return sink.put(claim_id, body, rec)
    except KafkaError as e:
        raise HTTPException(503, f"feedback stored in Redis, but publishing failed: "
                            f"{type(e).__name__}") from None


@router.get("/providers", response_model=list[ProviderRisk], tags=["providers"])
def api_providers(profiles: ProfilesDep, n: Annotated[int, Query(ge=1, le=1000)] = 20,
                  specialty: str | None = None) -> list[ProviderRisk]:
    """Providers ranked by risk against their peers, highest first (the workers' latest
    ranking), each with its reasons and every measure."""
    return profiles.top(n, specialty)


@router.get("/providers/{provider_id}/risk", response_model=ProviderRisk, tags=["providers"])
def api_provider_risk(provider_id: str, profiles: ProfilesDep) -> ProviderRisk:
    risk = profiles.risk(provider_id)
    if risk is None:
        raise HTTPException(404, f"provider {provider_id} is not ranked")
    return risk
