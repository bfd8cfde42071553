"""The console's HTML pages: the flagged queue, a claim, a member, a provider (with its
measures against its peers), and providers by risk (Jinja2 templates with autoescape; the
queue itself polls /api/queue from static/queue.js)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from model.peers import ProviderRisk
from model.score import Score
from stream.console.deps import (
    AttentionDep,
    FeedbackDep,
    ProfilesDep,
    StoreDep,
    TemplatesDep,
)
from stream.console.views import histogram, plot, summary

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def page(templates: Environment, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(name).render(**ctx), status_code=status)


def entity_page(templates: Environment, kind: str, ident: str, scores: list[Score],
                risk: ProviderRisk | None = None) -> HTMLResponse:
    return page(templates, "entity.html", title=f"{kind} {ident}", kind=kind,
                s=summary(ident, scores), plot=plot(scores), risk=risk,
                histograms=[histogram(v) for v in risk.measures] if risk else [])


@router.get("/", response_class=HTMLResponse)
def queue_page(templates: TemplatesDep) -> HTMLResponse:
    return page(templates, "queue.html", title="Flagged claims")


@router.get("/claims/{claim_id}", response_class=HTMLResponse)
def claim_page(claim_id: str, store: StoreDep, sink: FeedbackDep, attention: AttentionDep,
               templates: TemplatesDep) -> HTMLResponse:
    rec = store.record(claim_id)
    if rec is None:
        return page(templates, "missing.html", 404, title="Not found", what=f"claim {claim_id}")
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
    return page(templates, "claim.html", title=f"Claim {claim_id}", r=rec, claim=claim,
                attn=attn, attn_error=attn_error, feedback=sink.get(claim_id),
                fields=sorted(fi.items(), key=lambda kv: -kv[1]),
                fmax=max(fi.values(), default=1) or 1,
                member=store.by_member(rec["member_id"], 20),
                provider=store.by_provider(rec["provider_id"], 20))


@router.get("/members/{member_id}", response_class=HTMLResponse)
def member_page(member_id: str, store: StoreDep, templates: TemplatesDep) -> HTMLResponse:
    return entity_page(templates, "Member", member_id, store.by_member(member_id, 500))


@router.get("/providers/{provider_id}", response_class=HTMLResponse)
def provider_page(provider_id: str, store: StoreDep, profiles: ProfilesDep,
                  templates: TemplatesDep) -> HTMLResponse:
    """The provider's recent claims and, once the workers have ranked it, each measure
    drawn against its peers."""
    return entity_page(templates, "Provider", provider_id, store.by_provider(provider_id, 500),
                       profiles.risk(provider_id))


@router.get("/risk", response_class=HTMLResponse)
def risk_page(profiles: ProfilesDep, templates: TemplatesDep,
              specialty: str | None = None) -> HTMLResponse:
    """Providers ranked by risk against their peers, with their reasons."""
    return page(templates, "risk.html", title="Providers by risk", specialty=specialty,
                ranked=profiles.top(100, specialty or None))
