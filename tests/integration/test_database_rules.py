"""The database repeats the ledger's rules: raw SQL that bypasses Python is refused by name."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from billing.chart import ensure_chart
from ledger import db
from ledger.accounts import find_accounts
from ledger.db import unit_of_work
from ledger.errors import ImmutableTransfer
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry
from tests.conftest import NOW

pytestmark = pytest.mark.postgres


@pytest.fixture
def posted(sessions: sessionmaker[Session]) -> uuid.UUID:
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        ensure_chart(session, "77", "EUR", NOW)
        entry = EntryRequest(Kind.USAGE, "m1", (Leg("customer:42:unbilled", "revenue:sms:USD", 5),))
        return post_entry(session, entry, NOW).transfers[0].id


def refusal(sessions: sessionmaker[Session], sql: str, **params: object) -> str | None:
    """Run raw SQL; return the name of the rule that refused it."""
    with pytest.raises(DBAPIError) as raised, sessions() as session:
        session.execute(sa.text(sql), params)
        session.commit()
    return db.constraint_name(raised.value)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE transfers SET amount = amount + 1",
        "UPDATE transfers SET metadata = '{}'",
        "DELETE FROM transfers",
        "TRUNCATE transfers CASCADE",
        # each month is refused on its own too (row triggers are inherited, TRUNCATE's is
        # created with the month), and so is the default partition
        "UPDATE {partition} SET amount = amount + 1",
        "DELETE FROM {partition}",
        "TRUNCATE {partition}",
        "TRUNCATE transfers_default",
        "TRUNCATE transfer_keys CASCADE",
    ],
)
def test_raw_updates_and_deletes_of_posted_transfers_are_refused(
    sessions: sessionmaker[Session], posted: uuid.UUID, sql: str
) -> None:
    with sessions() as session:
        partition = session.execute(
            sa.text("SELECT tableoid::regclass::text FROM transfers WHERE id = :id"), {"id": posted}
        ).scalar_one()
    assert partition.startswith("transfers_")  # a month's partition, or the default one
    assert refusal(sessions, sql.replace("{partition}", partition)) == db.IMMUTABLE_MARKER
    with sessions() as session:
        assert session.execute(sa.text("SELECT amount FROM transfers")).scalar_one() == 5


def test_the_refusal_surfaces_as_a_ledger_error(
    sessions: sessionmaker[Session], posted: uuid.UUID
) -> None:
    with pytest.raises(ImmutableTransfer), unit_of_work(sessions) as session:
        session.execute(sa.text("DELETE FROM transfers"))


def _raw_insert(sessions: sessionmaker[Session], **overrides: object) -> str | None:
    with sessions() as session:
        found = find_accounts(
            session, ["customer:42:unbilled", "revenue:sms:USD", "customer:77:unbilled"]
        )
    row = {
        "id": uuid.uuid4(),
        "journal_id": uuid.uuid4(),
        "kind": "usage",
        "key": f"raw-{uuid.uuid4()}",
        "debit": found["customer:42:unbilled"].id,
        "credit": found["revenue:sms:USD"].id,
        "amount": 1,
        "currency": "USD",
        "at": NOW,
    }
    row.update(overrides)
    if row.get("credit") == "eur":
        row["credit"] = found["customer:77:unbilled"].id
    return refusal(
        sessions,
        "INSERT INTO transfers (id, journal_id, kind, idempotency_key, leg, fingerprint,"
        " debit_account_id, credit_account_id, amount, currency, effective_at, posted_at)"
        " VALUES (:id, :journal_id, :kind, :key, 0, 'x', :debit, :credit, :amount, :currency,"
        " :at, :at)",
        **row,
    )


def test_raw_inserts_breaking_invariant_one_are_refused_by_name(
    sessions: sessionmaker[Session], posted: uuid.UUID
) -> None:
    assert _raw_insert(sessions, amount=0) == "ck_transfers_amount_positive"
    assert _raw_insert(sessions, amount=-5) == "ck_transfers_amount_positive"
    with sessions() as session:
        same = find_accounts(session, ["customer:42:unbilled"])["customer:42:unbilled"].id
    assert _raw_insert(sessions, credit=same) == "ck_transfers_distinct_accounts"
    assert _raw_insert(sessions, credit="eur") == "fk_transfers_credit_account"
    assert _raw_insert(sessions, kind="gift") == "ck_transfers_kind_known"
    # a transfer written around `transfer_keys`, with a taken key or a new one, is refused
    assert _raw_insert(sessions, key="m1") == "fk_transfers_key"
    assert _raw_insert(sessions, key="never-taken") == "fk_transfers_key"
    taken = refusal(
        sessions,
        "INSERT INTO transfer_keys (kind, idempotency_key, leg, transfer_id, effective_at)"
        " VALUES ('usage', 'm1', 0, :id, now())",
        id=uuid.uuid4(),
    )
    assert taken == "pk_transfer_keys"


def test_a_cached_balance_cannot_break_its_limit_even_by_raw_sql(
    sessions: sessionmaker[Session], posted: uuid.UUID
) -> None:
    name = refusal(
        sessions,
        "UPDATE balances SET credits = debits + 1 WHERE account_id ="
        " (SELECT id FROM accounts WHERE code = 'customer:42:unbilled')",
    )
    assert name == "ck_balances_credits_within_debits"
