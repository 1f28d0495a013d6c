"""The pre-send check's read has two spellings, `billing_send_state` (migration 0010: its plan
is kept per connection) on PostgreSQL and the SQLAlchemy statement `_STATE` (SQLite): on one
PostgreSQL database they answer the same for every kind of state the check reads."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.invoice import InvoiceStatus
from billing.settings import BillingDefaults, put_settings
from billing.tables import invoices, usage_holds
from billing.usage.presend import read_state
from ledger.db import unit_of_work
from tests.conftest import NOW
from tests.scenarios import load_rates, post, sms

pytestmark = pytest.mark.postgres


def hold(session: Session, message_id: str, user: str, amount: int, expires_in: int) -> None:
    session.execute(
        sa.insert(usage_holds).values(
            message_id=message_id,
            customer_id=user,
            amount_micros=amount,
            currency="USD",
            created_at=NOW,
            expires_at=NOW + timedelta(seconds=expires_in),
        )
    )


def invoice(session: Session, user: str, status: InvoiceStatus, day: int) -> None:
    session.execute(
        sa.insert(invoices).values(
            id=uuid.uuid4(),
            customer_id=user,
            status=status,
            frequency="daily",
            period_start=NOW.replace(day=day),
            period_end=NOW.replace(day=day + 1),
            currency="USD",
            amount_micros=1_000_000,
            created_at=NOW,
        )
    )


@pytest.fixture
def states(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """User 42 with usage, overrides, unpaid and pending invoices, live, expired, own and
    captured holds; user 43 with nothing but a hold; user 99 unknown."""
    load_rates(sessions, NOW)
    post(sessions, NOW, sms("m-posted", NOW), sms("m-other", NOW, user="43"))
    with unit_of_work(sessions) as session:
        put_settings(session, "42", {"credit_limit": 50_000}, BillingDefaults(), NOW)
        invoice(session, "42", InvoiceStatus.PENDING, 1)
        invoice(session, "42", InvoiceStatus.FAILED, 3)
        invoice(session, "42", InvoiceStatus.PAID, 5)
        hold(session, "h-live", "42", 7_000, 60)
        hold(session, "h-own", "42", 6_000, 60)
        hold(session, "h-expired", "42", 5_000, -1)
        hold(session, "m-posted", "42", 7_000, 60)  # captured by a post that did not see it
        hold(session, "h-43", "43", 4_000, 60)
    return sessions


@pytest.mark.parametrize(
    ("user", "own"),
    [
        ("42", ""),
        ("42", "h-own"),
        ("42", "m-posted"),
        ("42", "h-expired"),
        ("43", "h-own"),
        ("43", ""),
        ("99", "new"),
    ],
)
def test_the_function_and_the_statement_read_the_same_state(
    states: sessionmaker[Session], user: str, own: str
) -> None:
    with unit_of_work(states) as session:
        by_function = vars(read_state(session, user, NOW, own, prepared=True))
        by_statement = dict(read_state(session, user, NOW, own, prepared=False)._mapping)
    assert by_function == by_statement
    if (user, own) == ("42", "h-own"):  # the reads are not trivially empty
        assert by_function["held"] == 7_000 and by_function["own_hold_amount"] == 6_000
        assert (by_function["unpaid"], by_function["awaiting_approval"]) == (2, 1)
        assert by_function["unbilled"] == 7_000 and by_function["overrides"]
    if own == "m-posted":
        assert by_function["own_posted_by"] == "42"
