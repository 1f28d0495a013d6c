"""The pages' sessions, kept server-side: who may start one, when one ends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from billing.access.api_keys import create_key, revoke_key
from billing.access.web_sessions import (
    STAFF_SESSION,
    USER_SESSION,
    WebSession,
    find_session,
    sign_in_staff,
    sign_in_user,
    sign_out,
)
from ledger.db import unit_of_work
from tests.conftest import NOW

pytestmark = pytest.mark.postgres


def test_admin_and_accountant_keys_start_sessions_and_the_service_key_does_not(
    sessions: sessionmaker[Session],
) -> None:
    with unit_of_work(sessions) as session:
        keys = {
            role: create_key(session, role, role, NOW)[0]
            for role in ("admin", "accountant", "service")
        }
        started = {role: sign_in_staff(session, key, NOW) for role, key in keys.items()}
        unknown = sign_in_staff(session, "sk_unknown", NOW)

    assert started["service"] is None and unknown is None
    with unit_of_work(sessions) as session:
        for role in ("admin", "accountant"):
            token, named = started[role]  # type: ignore[misc]
            assert named == role
            assert find_session(session, token, NOW) == WebSession(role, None)


def test_a_session_ends_when_it_expires_is_signed_out_or_its_key_is_revoked(
    sessions: sessionmaker[Session],
) -> None:
    with unit_of_work(sessions) as session:
        key, record = create_key(session, "admin", "a", NOW)
        first, _ = sign_in_staff(session, key, NOW)  # type: ignore[misc]
        second, _ = sign_in_staff(session, key, NOW)  # type: ignore[misc]
        user = sign_in_user(session, "42", NOW)

    with unit_of_work(sessions) as session:
        assert find_session(session, first, NOW + STAFF_SESSION - timedelta(seconds=1))
        assert find_session(session, first, NOW + STAFF_SESSION) is None
        assert find_session(session, user, NOW + USER_SESSION - timedelta(seconds=1)) == WebSession(
            None, "42"
        )
        assert find_session(session, user, NOW + USER_SESSION) is None
        sign_out(session, first, NOW)
        assert find_session(session, first, NOW) is None
        assert find_session(session, second, NOW) is not None
        assert revoke_key(session, record.id, NOW)
        assert find_session(session, second, NOW) is None
        assert find_session(session, user, NOW) is not None  # a user's session has no key
        assert not revoke_key(session, record.id, NOW)
        assert find_session(session, "forged-token", NOW) is None
