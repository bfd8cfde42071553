"""The investigator console: a FastAPI app over `ScoreStore` (pages + JSON API + feedback).

    app = create_app(load_settings())      # uvicorn.run(app) or `claimscope console`

`create_app` only assembles: the shared objects go on `app.state` (read by the routes
through `deps`), then the access guard (`auth`), the static files, the JSON API (`api`) and
the pages (`pages`). Access: with `console_token` set every route needs the token (Bearer
header or the session cookie that `?token=` sets once); without one `ConsoleServer` binds
127.0.0.1 only (details in `auth`).

Claim data is untrusted (a claim's description is free text): pages are Jinja2 templates
with autoescape, JSON for scripts goes through `tojson` (<, >, & and ' escaped), the page
scripts write data with textContent only, and a Content-Security-Policy allows scripts
from the console's own /static/ only, so an injected <script> would not run anyway.
"""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stream.console import api, pages
from stream.console.auth import COOKIE, CSP, session_value, token_guard
from stream.console.heatmap import Attention
from stream.feedback import FeedbackSink
from stream.profiles import ProfileStore
from stream.settings import Settings
from stream.store import ScoreStore

__all__ = ["COOKIE", "CSP", "create_app", "session_value"]

HERE = Path(__file__).parent


def templates() -> Environment:
    """The pages' Jinja2 environment (autoescape on everywhere, strings included)."""
    return Environment(loader=FileSystemLoader(HERE / "templates"),
                       autoescape=select_autoescape(default=True, default_for_string=True))


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"Redis unavailable: {type(exc).__name__}"},
                        status_code=503)


def create_app(settings: Settings, store: ScoreStore | None = None) -> FastAPI:
    store = store or ScoreStore.from_settings(settings)
    token = settings.console_token.get_secret_value() if settings.console_token else None

    app = FastAPI(title="ClaimScope console", version="1", docs_url=None, redoc_url=None,
                  description="Flagged claims, their explanations, and investigator feedback. "
                  "Send `Authorization: Bearer <CLAIMSCOPE_CONSOLE_TOKEN>`.")
    app.state.settings, app.state.store = settings, store
    app.state.feedback = FeedbackSink(settings, store)
    app.state.attention = Attention(settings)
    app.state.templates = templates()
    app.state.profiles = ProfileStore.from_settings(settings)
    app.middleware("http")(token_guard(token))
    app.add_exception_handler(redis.RedisError, redis_unavailable)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    return app
