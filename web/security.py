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
    if path.exists():
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_urlsafe(48))
    try:  # appears whole or not at all: a process starting beside us never reads half a key
        os.link(draft, path)
    except FileExistsError:  # another process won the race: use theirs
        pass
    finally:
        draft.unlink()
    return _read_key(path)


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: remove it (a new key is made) or set SECRET_KEY")
    return key


class SessionCookie(SecureCookieSessionInterface):
    """Flask's signed cookie, marked `Secure` when the request came over HTTPS (behind a proxy:
    `TRUST_PROXY_HEADERS` believes its `X-Forwarded-Proto`), or always with
    `SESSION_COOKIE_SECURE`."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def policy(frame_ancestors: str) -> str:
    return (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self';"
        f" form-action 'self'; frame-ancestors {frame_ancestors}"
    )


def harden(
    response: Response, frame_ancestors: str = "'none'", referrer: str = "same-origin"
) -> Response:
    """The headers of every page: no inline script or style, no other host, no sniffing, no
    caching of anyone's figures. The staff pages send their referrer to this host only
    (flask-wtf's CSRF check over HTTPS requires a same-origin `Referer`); the user pages send
    none (a widget URL may still hold a token). A response that set its own policy keeps it."""
    response.headers.setdefault("Content-Security-Policy", policy(frame_ancestors))
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = referrer
    if frame_ancestors == "'none'":
        response.headers["X-Frame-Options"] = "DENY"
    # Every answer of the pages is someone's figures (pages, fragments, CSV, SVG): never cached.
    response.headers["Cache-Control"] = "no-store"
    return response


def is_htmx(req: Request) -> bool:
    """An htmx request (it wants a fragment back, not a whole page)."""
    return req.headers.get("HX-Request") == "true"
