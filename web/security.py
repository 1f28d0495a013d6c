"""What every page response carries and every page request is checked for: the
Content-Security-Policy (`default-src 'self'`, nothing from another host), no framing except the
widget's allowed origins, CSRF tokens on every state-changing form, and a session cookie that is
`HttpOnly`, `SameSite=Lax` and `Secure` whenever the request came over HTTPS."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, Request, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Response

csrf = CSRFProtect()

SECRET_KEY_FILE = Path("var") / "secret_key"


def stored_secret_key(path: Path = SECRET_KEY_FILE) -> str:
    """The cookie-signing key kept in `path`, created (mode 0600) on first use, so restarts and
    every process on the host share it. Used when `SECRET_KEY` is not set."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        out.write(key)
    return key


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, marked `Secure` when the request came over HTTPS (behind a proxy,
    when `X-Forwarded-Proto` is trusted through ProxyFix), even if the config did not say so."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def policy(frame_ancestors: str) -> str:
    return (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self';"
        f" form-action 'self'; frame-ancestors {frame_ancestors}"
    )


def harden(response: Response, frame_ancestors: str = "'none'") -> Response:
    """The headers of every page: no inline script or style, no other host, no sniffing, no
    caching of anyone's figures, and no referrer (a widget URL may still hold a token)."""
    response.headers["Content-Security-Policy"] = policy(frame_ancestors)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if frame_ancestors == "'none'":
        response.headers["X-Frame-Options"] = "DENY"
    # Every answer of the pages is someone's figures (pages, fragments, CSV, SVG): never cached.
    response.headers["Cache-Control"] = "no-store"
    return response


def is_htmx(req: Request) -> bool:
    """An htmx request (it wants a fragment back, not a whole page)."""
    return req.headers.get("HX-Request") == "true"
