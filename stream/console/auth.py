"""The console's access guard and response headers (one HTTP middleware for every route).

With `console_token` set, every route (pages, static files, API, /openapi.json) needs
`Authorization: Bearer <token>` or the session cookie that `?token=<token>` sets once
(HttpOnly, SameSite=Strict; the cookie holds an HMAC of the token, not the token).
Anything else gets 401. Without a token the app itself lets everyone in: `ConsoleServer`
then binds 127.0.0.1 only.

Every response carries a Content-Security-Policy that allows scripts from the console's own
/static/ only, so an injected <script> would not run even if escaping failed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, Response

COOKIE = "claimscope_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

CallNext = Callable[[Request], Awaitable[Response]]


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"claimscope-console-session", hashlib.sha256).hexdigest()


def token_guard(token: str | None) -> Callable[[Request, CallNext], Awaitable[Response]]:
    """The "http" middleware: 401 without the token (when one is set), else the route's
    response with the session cookie (after `?token=`) and the security headers."""
    session = session_value(token) if token else None

    async def guard(request: Request, call_next: CallNext) -> Response:
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
        response = await call_next(request)
        if set_cookie:
            response.set_cookie(COOKIE, session or "", httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # ?token= must not leak onward
        return response

    return guard
