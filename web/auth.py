"""Who is looking at a page: a staff member signed in with an API key (admin or accountant), or
an end user whose host-application token was exchanged for a session. The browser holds only a
random token per kind; `billing.access.web_sessions` keeps the rest.

The staff token lives in Flask's signed session cookie (`SameSite=Lax`). The end user's lives
in a cookie of its own, because the widget is framed by the host application: over HTTPS it is
`SameSite=None; Secure; Partitioned` (a cross-site frame gets it back, in a jar partitioned by
the host's site), over plain HTTP `SameSite=Lax` (a same-site frame, or development)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, after_this_request, current_app, g, request, session
from werkzeug.wrappers import Response

from billing.access.web_sessions import USER_SESSION, WebSession, find_session, sign_out
from infra.runtime import now, transaction

F = TypeVar("F", bound=Callable[..., Any])

STAFF_COOKIE_KEY = "staff"
USER_COOKIE_KEY = "user"


USER_COOKIE = "smsledger_user"
_UNSET = object()


def _stored(kind: str) -> str | None:
    if kind == STAFF_COOKIE_KEY:
        token = session.get(kind)
    else:
        pending = g.get("user_cookie", _UNSET)
        token = request.cookies.get(USER_COOKIE) if pending is _UNSET else pending
    return token if isinstance(token, str) and token else None


def _live(kind: str) -> WebSession | None:
    cached = g.get(f"web_{kind}")
    if cached is not None:
        return cast(WebSession, cached)
    token = _stored(kind)
    if token is None:
        return None
    found = transaction(lambda s: find_session(s, token, now()))
    if found is None:
        if kind == STAFF_COOKIE_KEY:
            session.pop(kind, None)
        return None
    setattr(g, f"web_{kind}", found)
    return found


def staff() -> WebSession | None:
    """The signed-in admin or accountant, or None."""
    return _live(STAFF_COOKIE_KEY)


def staff_role() -> str | None:
    found = staff()
    return None if found is None else found.role


def signed_in_user() -> str | None:
    """The end user of this browser session, or None."""
    found = _live(USER_COOKIE_KEY)
    return None if found is None else found.user_id


def remember(kind: str, token: str) -> None:
    """Give this browser the session `token` of `kind`."""
    if kind == STAFF_COOKIE_KEY:
        session[kind] = token
        session.permanent = True
    else:
        _set_user_cookie(token)
    g.pop(f"web_{kind}", None)


def forget(kind: str) -> None:
    """End this browser's session of `kind`, on the server too."""
    token = _stored(kind)
    if kind == STAFF_COOKIE_KEY:
        session.pop(kind, None)
    else:
        _set_user_cookie(None)
    g.pop(f"web_{kind}", None)
    if token is not None:
        transaction(lambda s: sign_out(s, token, now()))


def _set_user_cookie(token: str | None) -> None:
    """Write (or, with None, delete) the end user's cookie on this request's response."""
    if "user_cookie" not in g:
        after_this_request(_write_user_cookie)
    g.user_cookie = token


def _write_user_cookie(response: Response) -> Response:
    token = g.get("user_cookie")
    secure = bool(current_app.config["SESSION_COOKIE_SECURE"]) or request.is_secure
    attributes: dict[str, Any] = {
        "path": "/",
        "httponly": True,
        "secure": secure,
        "samesite": "None" if secure else "Lax",
        "partitioned": secure,
    }
    if token is None:
        response.delete_cookie(USER_COOKIE, **attributes)
    else:
        max_age = int(USER_SESSION.total_seconds())
        response.set_cookie(USER_COOKIE, token, max_age=max_age, **attributes)
    return response


def staff_only(*roles: str) -> Callable[[F], F]:
    """A staff page or action for `roles`: without a session, the sign-in page (401); with
    another role, a 403 page."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            role = staff_role()
            if role is None:
                abort(401)
            if role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return cast(F, guarded)

    return decorate
