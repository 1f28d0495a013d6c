"""Who is looking at a page: a staff member signed in with an API key (admin or accountant), or
an end user whose host-application token was exchanged for a session. The browser's signed
cookie holds only a random token per kind; `billing.access.web_sessions` keeps the rest."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import abort, g, session

from billing.access.web_sessions import WebSession, find_session, sign_out
from infra.runtime import now, transaction

F = TypeVar("F", bound=Callable[..., Any])

STAFF_COOKIE_KEY = "staff"
USER_COOKIE_KEY = "user"


def _live(kind: str) -> WebSession | None:
    cached = g.get(f"web_{kind}")
    if cached is not None:
        return cast(WebSession, cached)
    token = session.get(kind)
    if not isinstance(token, str):
        return None
    found = transaction(lambda s: find_session(s, token, now()))
    if found is None:
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
    session[kind] = token
    session.permanent = True


def forget(kind: str) -> None:
    token = session.pop(kind, None)
    if isinstance(token, str):
        transaction(lambda s: sign_out(s, token, now()))


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
