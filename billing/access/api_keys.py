"""API keys: random secrets shown once, stored only as SHA-256 digests, one role each.

A fast digest is right here (unlike passwords): the keys carry 256 bits of entropy, so the
digest cannot be brute-forced, and every request must be checked in microseconds.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.errors import InvalidRole
from billing.tables import ROLES, api_keys

KEY_PREFIX = "sk_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    role: str
    key_prefix: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, role: str, name: str, now: datetime) -> tuple[str, ApiKey]:
    """Create a key; the plain key is returned here and never stored.

    Raises: InvalidRole.
    """
    if role not in ROLES:
        raise InvalidRole(f"role must be one of {', '.join(ROLES)}", role=role)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = session.execute(
        sa.insert(api_keys)
        .values(
            name=name or role,
            role=role,
            key_prefix=key[:10],
            key_hash=digest(key),
            created_at=now,
        )
        .returning(api_keys.c.id)
    ).scalar_one()
    return key, ApiKey(key_id, name or role, role, key[:10])


def role_for_key(session: Session, key: str) -> str | None:
    """The role of a live key, or None for an unknown or revoked one."""
    return session.execute(
        sa.select(api_keys.c.role).where(
            api_keys.c.key_hash == digest(key), api_keys.c.revoked_at.is_(None)
        )
    ).scalar_one_or_none()


def first_admin_key(session: Session, now: datetime) -> str | None:
    """A new admin key when no key exists at all (a fresh install), shown once; else None."""
    if session.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one():
        return None
    key, _ = create_key(session, "admin", "first admin", now)
    return key


def list_keys(session: Session) -> list[tuple[ApiKey, datetime, datetime | None]]:
    """Every key with when it was created and revoked (None: live), oldest first."""
    rows = session.execute(sa.select(api_keys).order_by(api_keys.c.id)).all()
    return [(ApiKey(r.id, r.name, r.role, r.key_prefix), r.created_at, r.revoked_at) for r in rows]


def revoke_key(session: Session, key_id: int, now: datetime) -> bool:
    """Revoke a live key: the API refuses it within the key cache's seconds, and the pages'
    sessions started with it end at once. False when no live key has that id."""
    revoked = session.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(api_keys.c.id)
    ).scalar_one_or_none()
    return revoked is not None
