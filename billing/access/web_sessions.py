"""Sign-ins of the web pages, kept server-side: a staff session is started with an admin's or
accountant's API key, an end user's with the host application's token (SPEC §7). The browser
holds only a random token; its digest finds the row, so signing out, expiry or revoking the
key ends the session at once, everywhere."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.access.api_keys import digest
from billing.tables import api_keys, web_sessions

STAFF_ROLES = ("admin", "accountant")
"""The roles that may sign in to the pages; the SMS service's key may not."""

STAFF_SESSION = timedelta(hours=12)
USER_SESSION = timedelta(hours=8)


@dataclass(frozen=True, slots=True)
class WebSession:
    role: str | None  # a staff session's role
    user_id: str | None  # an end user's session


def sign_in_staff(session: Session, key: str, now: datetime) -> tuple[str, str] | None:
    """A new session token and the role for a live admin or accountant key; None otherwise
    (unknown, revoked, or the service role)."""
    found = session.execute(
        sa.select(api_keys.c.id, api_keys.c.role).where(
            api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
        )
    ).one_or_none()
    if found is None or found.role not in STAFF_ROLES:
        return None
    token = _start(session, now, STAFF_SESSION, api_key_id=found.id, role=found.role)
    return token, found.role


def sign_in_user(session: Session, user_id: str, now: datetime) -> str:
    """A new session token for an end user whose host-application token was verified."""
    return _start(session, now, USER_SESSION, user_id=user_id)


def find_session(session: Session, token: str, now: datetime) -> WebSession | None:
    """The live session of `token`: unexpired, and for staff, its key still live."""
    row = session.execute(
        sa.select(web_sessions.c.role, web_sessions.c.user_id)
        .select_from(web_sessions.outerjoin(api_keys, api_keys.c.id == web_sessions.c.api_key_id))
        .where(
            web_sessions.c.token_hash == digest(token),
            web_sessions.c.expires_at > now,
            sa.or_(web_sessions.c.api_key_id.is_(None), api_keys.c.revoked_at.is_(None)),
        )
    ).one_or_none()
    return None if row is None else WebSession(row.role, row.user_id)


def sign_out(session: Session, token: str, now: datetime) -> None:
    """End `token`'s session, and sweep expired ones while here."""
    session.execute(
        sa.delete(web_sessions).where(
            sa.or_(web_sessions.c.token_hash == digest(token), web_sessions.c.expires_at <= now)
        )
    )


def _start(session: Session, now: datetime, lasts: timedelta, **owner: object) -> str:
    """A new session row; expired rows are swept on the way (an index on `expires_at`)."""
    token = secrets.token_urlsafe(32)
    session.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
    session.execute(
        sa.insert(web_sessions).values(
            token_hash=digest(token), created_at=now, expires_at=now + lasts, **owner
        )
    )
    return token
