"""What keeps another page from acting through a manager's browser on the dashboard.

- **Every POST** must come from the dashboard's own origin (its `Origin`, or without one its
  `Referer`) and carry the form token of its page. SameSite=Strict cookies are not enough: a
  page on another port of the same host is the same site, and may even set cookies there.
- **The form token** is an HMAC keyed by a secret only the browser's HttpOnly cookie holds (the
  session's token once signed in, a random sign-in cookie before), so no other page can read or
  compute it, and any worker or instance can check it without shared server state.
- **Every page** carries a Content-Security-Policy (scripts only from the dashboard itself, no
  framing), `nosniff`, a same-origin referrer policy, and `Cache-Control: no-store` on private
  pages (a shared computer's back button or a proxy keeps no forecast).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FORM_COOKIE = "forecast_form"  # the sign-in form's secret, before there is a session
TOKEN_FIELD = "csrf"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
PUBLIC = ("/dashboard/static/", "/dashboard/assets/")  # files every browser may keep


def form_token(secret: str) -> str:
    """The token a page's forms carry, from the cookie secret its browser holds."""
    return hmac.new(secret.encode(), b"forecast dashboard form", hashlib.sha256).hexdigest()


def post_refusal(
    headers: Mapping[str, str], own_origin: str, secret: str | None, token: str | None
) -> str | None:
    """Why a dashboard POST is refused, or None when it came from the dashboard's own page."""
    sender = headers.get("origin") or _origin_of(headers.get("referer"))
    if sender is not None and sender != own_origin:
        return f"the form was sent from {sender}, not from this dashboard"
    if not secret or not token or not hmac.compare_digest(token, form_token(secret)):
        return "the form's token does not match this browser's page"
    return None


def _origin_of(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


class PageHeaders:
    """The security headers on every dashboard answer; no-store on all but its static files."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/dashboard"):
            await self.app(scope, receive, send)
            return
        private = not path.startswith(PUBLIC)
        extra = [(k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
        extra += [(b"cache-control", b"no-store")] if private else []

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if private:  # no-store replaces whatever caching the page asked for
                    headers = [h for h in headers if h[0].lower() != b"cache-control"]
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, with_headers)
