"""`post_alone` and `execute_alone`: one entry as one autocommitted statement, with the same
answers as `post_entry` in a unit of work, and the database's refusals and outages translated as
`unit_of_work` translates them."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.chart import ensure_chart
from ledger.accounts import ensure_accounts
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import execute_alone, make_engine, unit_of_work
from ledger.errors import (
    BalanceLimitExceeded,
    DatabaseUnavailable,
    IdempotencyConflict,
    RetryableConflict,
    UnknownAccount,
)
from ledger.model import AccountSpec, AccountType, EntryRequest, Kind, Leg
from ledger.posting import post_alone, post_entry
from ledger.tables import transfers
from tests.conftest import NOW

pytestmark = pytest.mark.postgres

UNBILLED, REVENUE = "customer:42:unbilled", "revenue:sms:USD"


def usage(key: str, micros: int = 7_500) -> EntryRequest:
    return EntryRequest(Kind.USAGE, key, (Leg(UNBILLED, REVENUE, micros),), metadata={"n": 1})


@pytest.fixture
def chart(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
    return sessions


def balance(sessions: sessionmaker[Session], code: str) -> int:
    with unit_of_work(sessions) as session:
        return account_balance(session, code).balance


def test_an_entry_posted_alone_is_the_entry_a_unit_of_work_posts(
    chart: sessionmaker[Session], engine: sa.Engine
) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    first = post_alone(chart, usage("m-1"), NOW)
    assert statements == []  # the accounts were committed: known, and no SQLAlchemy statement
    again = post_alone(chart, usage("m-1"), NOW + timedelta(hours=1))
    with unit_of_work(chart) as session:
        third = post_entry(session, usage("m-1"), NOW)
        stored = session.execute(sa.select(transfers.c.id)).scalars().all()
    assert (first.status, again.status, third.status) == ("posted", "duplicate", "duplicate")
    assert first.transfers == again.transfers == third.transfers
    assert stored == [first.transfers[0].id]
    assert balance(chart, UNBILLED) == balance(chart, REVENUE) == 7_500
    with pytest.raises(IdempotencyConflict):
        post_alone(chart, usage("m-1", micros=9_999), NOW)
    with unit_of_work(chart) as session:
        assert check_ledger(session) == []


def test_what_one_statement_cannot_post_takes_the_unit_of_work(
    sessions: sessionmaker[Session],
) -> None:
    """Accounts not seen committed yet, a limited account (named when refused)."""
    with unit_of_work(sessions) as session:
        ensure_accounts(
            session,
            [
                AccountSpec("wallet:9", AccountType.LIABILITY, "USD", "9", True),
                AccountSpec("cash:USD", AccountType.ASSET, "USD"),
            ],
            NOW,
        )
    from ledger import accounts

    accounts._committed.clear()  # a new process: nothing seen yet
    entry = EntryRequest(Kind.OPENING, "fund", (Leg("cash:USD", "wallet:9", 1_000),))
    assert post_alone(sessions, entry, NOW).status == "posted"
    spend = EntryRequest(Kind.ADJUSTMENT, "spend", (Leg("wallet:9", "cash:USD", 1_001),))
    with pytest.raises(BalanceLimitExceeded) as refused:
        post_alone(sessions, spend, NOW)
    assert refused.value.details["account"] == "wallet:9"
    with pytest.raises(UnknownAccount):
        post_alone(sessions, EntryRequest(Kind.OPENING, "x", (Leg("cash:USD", "nope", 1),)), NOW)


def test_refusals_and_conflicts_of_the_database_are_translated(engine: sa.Engine) -> None:
    check = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '23514', CONSTRAINT = %s; END $$"
    with pytest.raises(BalanceLimitExceeded):
        execute_alone(engine, check.replace("%s", "'ck_balances_debits_within_credits'"), ())
    deadlock = "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$"
    started = time.monotonic()
    with pytest.raises(RetryableConflict):
        execute_alone(engine, deadlock, ())
    assert time.monotonic() - started < 1  # retried, briefly, then given up
    with pytest.raises(sa.exc.DBAPIError):
        execute_alone(engine, "SELECT 1 / %s", (0,))
    assert execute_alone(engine, "SELECT %s + 1", (1,)) == [(2,)]  # the pool is still fine


def test_a_database_that_is_not_there_is_unavailable_and_nothing_was_applied() -> None:
    with socket_closed() as port:
        engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/none")
        with pytest.raises(DatabaseUnavailable) as down:
            execute_alone(engine, "SELECT 1", ())
    assert down.value.may_have_committed is False


def test_a_connection_lost_with_the_statement_in_flight_may_have_committed(
    engine: sa.Engine,
) -> None:
    pids: list[int] = []
    execute_alone(engine, "SELECT 1", ())  # a pooled connection opened before the loss

    def terminate() -> None:
        for _ in range(100):  # a new connection each time: activity is read once per transaction
            with engine.connect() as connection:
                found = connection.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalars()
                pids.extend(found)
                if pids:
                    connection.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]})
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=terminate)
    killer.start()
    with pytest.raises(DatabaseUnavailable) as lost:
        execute_alone(engine, "SELECT pg_sleep(5)", ())
    killer.join()
    assert pids and lost.value.may_have_committed is True
    assert execute_alone(engine, "SELECT 1", ()) == [(1,)]  # a fresh connection


class socket_closed:
    """A local port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self.sock.close()
