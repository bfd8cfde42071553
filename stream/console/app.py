"""The investigator console: a FastAPI app over `ScoreStore` (pages + JSON API + feedback).

    app = create_app(load_settings())      # uvicorn.run(app) or `claimscope console`

Access: with `console_token` set, every route (pages, static files, API, /openapi.json)
needs `Authorization: Bearer <token>` or the session cookie that `?token=<token>` sets once
(HttpOnly, SameSite=Strict; the cookie holds an HMAC of the token, not the token).
Anything else gets 401. Without a token the app itself lets everyone in: `ConsoleServer`
then binds 127.0.0.1 only.

Claim data is untrusted (a claim's description is free text): pages are Jinja2 templates
with autoescape, JSON for scripts goes through `tojson` (<, >, & and ' escaped), the page
scripts write data with textContent only, and a Content-Security-Policy allows scripts
from the console's own /static/ only, so an injected <script> would not run anyway.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Annotated, Any

import redis
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from kafka.errors import KafkaError
from pydantic import BaseModel

from model.score import Score
from stream.console.heatmap import Attention
from stream.feedback import Feedback, FeedbackIn, FeedbackSink
from stream.settings import Settings
from stream.store import ScoreStore

HERE = Path(__file__).parent
COOKIE = "claimscope_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SCAN = 2000  # newest flagged records a filtered queue looks through
N = Annotated[int, Query(ge=1, le=1000, description="how many, newest first")]
Unit = Annotated[float, Query(ge=0, le=1)]


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


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"claimscope-console-session", hashlib.sha256).hexdigest()


def create_app(settings: Settings, store: ScoreStore | None = None) -> FastAPI:
    store = store or ScoreStore.from_settings(settings)
    sink = FeedbackSink(settings, store)
    attention = Attention(settings)
    token = settings.console_token.get_secret_value() if settings.console_token else None
    session = session_value(token) if token else None
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))

    app = FastAPI(title="ClaimScope console", version="1", docs_url=None, redoc_url=None,
                  description="Flagged claims, their explanations, and investigator feedback. "
                  "Send `Authorization: Bearer <CLAIMSCOPE_CONSOLE_TOKEN>`.")
    app.state.store, app.state.feedback, app.state.attention = store, sink, attention
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        set_cookie = False
        if token is not None:
            auth = request.headers.get("authorization", "")
            given = request.query_params.get("token")
            ok = (auth.startswith("Bearer ") and hmac.compare_digest(auth[7:], token)) or (
                hmac.compare_digest(request.cookies.get(COOKIE, ""), session or ""))
            if not ok and given is not None and hmac.compare_digest(given, token):
                ok = set_cookie = True
            if not ok:
                return JSONResponse({"detail": "console token required: send Authorization: "
                                     "Bearer <token>, or open the page once with ?token="},
                                    status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        if set_cookie:
            response.set_cookie(COOKIE, session or "", httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # ?token= must not leak onward
        return response

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis unavailable: {type(exc).__name__}"},
                            status_code=503)

    def page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**ctx), status_code=status)

    def record_or_404(claim_id: str) -> dict:
        rec = store.record(claim_id)
        if rec is None:
            raise HTTPException(404, f"no claim {claim_id!r} in the store (never scored, or "
                                "expired)")
        return rec

    # -- JSON API -----------------------------------------------------------------------
    @app.get("/api/claims/{claim_id}", response_model=ClaimRecord, tags=["claims"])
    def api_claim(claim_id: str) -> dict:
        """The stored Score of one claim, with the claim itself under `claim`."""
        return record_or_404(claim_id)

    @app.get("/api/claims/{claim_id}/attention", tags=["claims"])
    def api_attention(claim_id: str) -> dict:
        """Attention weights per layer and head over the claim's tokens (recomputed)."""
        rec = record_or_404(claim_id)
        if not rec.get("claim"):
            raise HTTPException(404, "the store holds no claim for this Score")
        return attention.of(rec["claim"])

    @app.get("/api/recent", response_model=list[Score], tags=["claims"])
    def api_recent(n: N = 50) -> list[Score]:
        """The n most recently scored claims."""
        return store.recent(n)

    @app.get("/api/flagged", response_model=list[Score], tags=["claims"])
    def api_flagged(n: N = 50, min_score: Unit = 0.0,
                    max_score: Unit = 1.0,
                    reason: str | None = None, provider: str | None = None,
                    specialty: str | None = None, since: dt.date | None = None,
                    until: dt.date | None = None) -> list[dict]:
        """Flagged Scores, newest first; filters as on the queue page (see /api/queue)."""
        return [strip(r) for r in flagged_records(n, min_score, max_score, reason, provider,
                                                  specialty, since, until)]

    @app.get("/api/queue", response_model=list[QueueRow], tags=["claims"])
    def api_queue(n: N = 100, min_score: Unit = 0.0,
                  max_score: Unit = 1.0,
                  reason: str | None = None, provider: str | None = None,
                  specialty: str | None = None, since: dt.date | None = None,
                  until: dt.date | None = None) -> list[QueueRow]:
        """The queue page's rows. `reason`: case-insensitive substring of the reason;
        `since`/`until`: the claim's service date, inclusive."""
        return [queue_row(r) for r in flagged_records(n, min_score, max_score, reason,
                                                      provider, specialty, since, until)]

    @app.get("/api/members/{member_id}", response_model=EntitySummary, tags=["entities"])
    def api_member(member_id: str, n: N = 200) -> EntitySummary:
        return summary(member_id, store.by_member(member_id, n))

    @app.get("/api/providers/{provider_id}", response_model=EntitySummary, tags=["entities"])
    def api_provider(provider_id: str, n: N = 200) -> EntitySummary:
        return summary(provider_id, store.by_provider(provider_id, n))

    @app.get("/api/claims/{claim_id}/feedback", response_model=Feedback, tags=["feedback"])
    def api_get_feedback(claim_id: str) -> Feedback:
        fb = sink.get(claim_id)
        if fb is None:
            raise HTTPException(404, "no feedback for this claim")
        return fb

    @app.post("/api/claims/{claim_id}/feedback", response_model=Feedback, tags=["feedback"],
              responses={404: {"description": "unknown claim"},
                         503: {"description": "Redis or the broker is unavailable"}})
    def api_feedback(claim_id: str, body: FeedbackIn) -> Feedback:
        """Label a scored claim; stored in Redis and published to `claims.feedback`."""
        rec = record_or_404(claim_id)
        try:
            return sink.put(claim_id, body, rec)
        except KafkaError as e:
            raise HTTPException(503, f"feedback stored in Redis, but publishing failed: "
                                f"{type(e).__name__}") from None

    # -- pages --------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def queue_page() -> HTMLResponse:
        return page("queue.html", title="Flagged claims")

    @app.get("/claims/{claim_id}", response_class=HTMLResponse, include_in_schema=False)
    def claim_page(claim_id: str) -> HTMLResponse:
        rec = store.record(claim_id)
        if rec is None:
            return page("missing.html", 404, title="Not found", what=f"claim {claim_id}")
        claim = rec.get("claim") or {}
        attn, attn_error = None, None
        if claim:
            try:
                attn = attention.of(claim)
            except Exception as e:  # the page still shows everything else
                attn_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            attn_error = "the store holds no claim for this Score"
        fi = rec["explanation"]["field_importance"]
        return page("claim.html", title=f"Claim {claim_id}", r=rec, claim=claim, attn=attn,
                    attn_error=attn_error, feedback=sink.get(claim_id),
                    fields=sorted(fi.items(), key=lambda kv: -kv[1]),
                    fmax=max(fi.values(), default=1) or 1,
                    member=store.by_member(rec["member_id"], 20),
                    provider=store.by_provider(rec["provider_id"], 20))

    @app.get("/members/{member_id}", response_class=HTMLResponse, include_in_schema=False)
    def member_page(member_id: str) -> HTMLResponse:
        return entity_page("Member", member_id, store.by_member(member_id, 500))

    @app.get("/providers/{provider_id}", response_class=HTMLResponse, include_in_schema=False)
    def provider_page(provider_id: str) -> HTMLResponse:
        return entity_page("Provider", provider_id, store.by_provider(provider_id, 500))

    # -- helpers ------------------------------------------------------------------------
    def flagged_records(n: int, lo: float, hi: float, reason: str | None,
                        provider: str | None, specialty: str | None, since: dt.date | None,
                        until: dt.date | None) -> list[dict]:
        filtered = any(x is not None for x in (reason, provider, specialty, since, until)) or (
            lo > 0 or hi < 1)
        out = []
        for r in records(f"{store.prefix}flagged", SCAN if filtered else n):
            c = r.get("claim") or {}
            sd = c.get("service_date")
            if not lo <= r["score"] <= hi:
                continue
            if reason and reason.lower() not in r["explanation"]["reason"].lower():
                continue
            if provider and provider != r["provider_id"]:
                continue
            if specialty and specialty != c.get("provider_specialty"):
                continue
            if (since or until) and not sd:
                continue
            if (since and sd < since.isoformat()) or (until and sd > until.isoformat()):
                continue
            out.append(r)
            if len(out) >= n:
                break
        return out

    def records(key: str, n: int) -> list[dict]:
        ids = [i.decode() for i in store.r.zrevrange(key, 0, n - 1)]
        raws = store.r.mget([store.claim_key(i) for i in ids]) if ids else []
        return [json.loads(raw) for raw in raws if raw is not None]

    def entity_page(kind: str, ident: str, scores: list[Score]) -> HTMLResponse:
        return page("entity.html", title=f"{kind} {ident}", kind=kind, s=summary(ident, scores),
                    plot=plot(scores))

    return app


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
