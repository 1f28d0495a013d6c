"""Monthly partitions (migration 0011, decision 0026): converted in place on a database that
holds data, with every row, balance and guard as before; the months ahead made by the job; a
month without a partition still taking usage; idempotency and "reversed once" holding across
months, where no partitioned index can."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

import migrations
from billing.tables import invoice_usage
from infra.partitions import default_rows, ensure_partitions, month_partition, months_ahead
from ledger.balances import trial_balance
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, run_in_transaction, unit_of_work
from ledger.errors import AlreadyReversed, IdempotencyConflict, ImmutableTransfer
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry, reverse_transfer
from ledger.tables import transfer_keys, transfers
from tests.scenarios import at, close, load_rates, post, sms

pytestmark = pytest.mark.postgres

SEPTEMBER, OCTOBER, NOVEMBER = at(2026, 9, 10, 12), at(2026, 10, 10, 12), at(2026, 11, 10, 12)


def _kinds(session: Session, table: str) -> dict[str, str]:
    """relname -> relkind of `table` and its partitions."""
    found = session.execute(
        sa.text(
            "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relname = :t"
            " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(:t))"
        ),
        {"t": table},
    )
    return dict(found.all())


def _partition_of(session: Session, key: str) -> str:
    found = session.execute(
        sa.text("SELECT tableoid::regclass::text FROM transfers WHERE idempotency_key = :key"),
        {"key": key},
    )
    return str(found.scalar_one())


def _snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Everything the conversion must keep: every transfer and link, the trial balance."""
    with unit_of_work(sessions, commit=False) as session:
        return {
            "transfers": sorted(
                session.execute(sa.select(transfers)).all(), key=lambda r: str(r[0])
            ),
            "links": sorted(
                session.execute(
                    sa.select(invoice_usage.c.transfer_id, invoice_usage.c.invoice_id)
                ).all()
            ),
            "trial": trial_balance(session),
        }


def _history(sessions: sessionmaker[Session]) -> uuid.UUID:
    """Usage in September, October and November 2026, the two first months closed into
    invoices (their links in `invoice_usage`), one October message reversed; the id of an
    unreversed November usage transfer."""
    load_rates(sessions)
    post(sessions, SEPTEMBER, sms("s1", SEPTEMBER), sms("s2", SEPTEMBER, user="43"))
    post(sessions, OCTOBER, sms("o1", OCTOBER), sms("o2", OCTOBER))
    close(sessions, "daily", at(2026, 11, 1, 2))
    post(sessions, NOVEMBER, sms("n1", NOVEMBER), sms("n2", NOVEMBER, user="43"))
    with unit_of_work(sessions) as session:
        (o2,) = session.execute(
            sa.select(transfers.c.id).where(transfers.c.idempotency_key == "o2")
        ).scalars()
        reverse_transfer(session, o2, "undo-o2", NOVEMBER)
        (n1,) = session.execute(
            sa.select(transfers.c.id).where(transfers.c.idempotency_key == "n1")
        ).scalars()
    return n1


def test_the_conversion_keeps_every_row_and_guard_of_a_database_with_data(pg_url: str) -> None:
    """The history is written at head, the database taken back to 0010 (plain tables, the
    rows copied back) and converted again: the same rows, each in its month, the ledger sound,
    and the guards that moved to `transfer_keys` still refusing what they refused."""
    engine = make_engine(pg_url)
    sessions = make_session_factory(engine)
    n1 = _history(sessions)
    before = _snapshot(sessions)
    assert len(before["links"]) == 4  # September's and October's usage was billed

    migrations.downgrade(pg_url, "0010")
    engine.dispose()
    with unit_of_work(sessions, commit=False) as session:
        assert _kinds(session, "transfers") == {"transfers": "r"}  # one plain table again
        assert session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one() == len(
            before["transfers"]
        )
        assert session.execute(sa.text("SELECT to_regclass('transfer_keys')")).scalar() is None

    migrations.upgrade(pg_url)
    engine.dispose()
    migrations.check(pg_url)
    assert _snapshot(sessions) == before
    with unit_of_work(sessions, commit=False) as session:
        kinds = {**_kinds(session, "transfers"), **_kinds(session, "invoice_usage")}
        assert kinds["transfers"] == kinds["invoice_usage"] == "p"
        for month in (SEPTEMBER, OCTOBER, NOVEMBER):
            assert month_partition("transfers", month.date()) in kinds
            assert month_partition("invoice_usage", month.date()) in kinds
        placed = session.execute(
            sa.text(
                "SELECT idempotency_key, tableoid::regclass::text FROM transfers"
                " WHERE kind = 'usage'"
            )
        ).all()
        assert dict(placed) == {
            "s1": "transfers_p2026_09",
            "s2": "transfers_p2026_09",
            "o1": "transfers_p2026_10",
            "o2": "transfers_p2026_10",
            "n1": "transfers_p2026_11",
            "n2": "transfers_p2026_11",
        }
        links = session.execute(
            sa.text("SELECT DISTINCT tableoid::regclass::text FROM invoice_usage")
        ).scalars()
        assert set(links) == {"invoice_usage_p2026_09", "invoice_usage_p2026_10"}
        assert session.execute(sa.select(sa.func.count()).select_from(transfer_keys)).scalar() == (
            len(before["transfers"])
        )
        assert check_ledger(session) == []
        assert default_rows(session) == {"transfers": 0, "invoice_usage": 0}

    # a replay of September's message is still a replay, its key reused is still refused
    post(sessions, NOVEMBER, sms("s1", SEPTEMBER))
    assert len(_snapshot(sessions)["transfers"]) == len(before["transfers"])
    with pytest.raises(IdempotencyConflict):
        run_in_transaction(
            sessions,
            lambda s: post_entry(
                s,
                EntryRequest(
                    Kind.USAGE,
                    "s1",
                    (Leg("customer:42:unbilled", "revenue:sms:USD", 1),),
                    effective_at=NOVEMBER,  # another month: no partition index could see it
                ),
                NOVEMBER,
            ),
        )
    # reversed once, whatever the key and the month of the second try
    with unit_of_work(sessions) as session:
        (o2,) = session.execute(
            sa.select(transfers.c.id).where(transfers.c.idempotency_key == "o2")
        ).scalars()
    with pytest.raises(AlreadyReversed):
        run_in_transaction(sessions, lambda s: reverse_transfer(s, o2, "undo-o2-again", NOVEMBER))
    # and the ledger takes new usage and reversals after the conversion
    post(sessions, NOVEMBER, sms("n3", NOVEMBER))
    run_in_transaction(sessions, lambda s: reverse_transfer(s, n1, "undo-n1", NOVEMBER))
    with unit_of_work(sessions, commit=False) as session:
        assert check_ledger(session) == []
    engine.dispose()


def test_the_job_makes_the_months_ahead_and_a_month_without_one_still_takes_usage(
    sessions: sessionmaker[Session],
) -> None:
    load_rates(sessions)
    far = at(2031, 5, 3, 9)  # years past any partition the migration made
    post(sessions, far, sms("far-1", far))
    with unit_of_work(sessions, commit=False) as session:
        where = session.execute(
            sa.text(
                "SELECT tableoid::regclass::text FROM transfers WHERE idempotency_key = 'far-1'"
            )
        ).scalar_one()
        assert where == "transfers_default"
        assert default_rows(session)["transfers"] == 1

    def ensure(now: datetime) -> list[Any]:
        return run_in_transaction(sessions, lambda s: ensure_partitions(s, now))

    states = {(s.partition, s.state) for s in ensure(at(2031, 4, 20))}
    # March through July 2031 for both tables; May's transfers stay in the default partition
    assert ("transfers_p2031_05", "rows_in_default") in states
    assert ("invoice_usage_p2031_05", "created") in states
    assert ("transfers_p2031_07", "created") in states
    assert {state for _, state in states} == {"created", "rows_in_default"}
    again = ensure(at(2031, 4, 20))
    assert {s.state for s in again if s.partition != "transfers_p2031_05"} == {"exists"}
    with unit_of_work(sessions, commit=False) as session:
        assert months_ahead(session, at(2031, 4, 20)) == {"transfers": 0, "invoice_usage": 3}
        assert months_ahead(session, at(2031, 6, 20)) == {"transfers": 1, "invoice_usage": 1}
    # a month with its partition: usage lands there, and the month's TRUNCATE is refused too
    june = at(2031, 6, 2, 8)
    post(sessions, june, sms("june-1", june))
    with unit_of_work(sessions, commit=False) as session:
        assert _partition_of(session, "june-1") == "transfers_p2031_06"
        assert check_ledger(session) == []
    with pytest.raises(ImmutableTransfer):
        run_in_transaction(
            sessions, lambda s: s.execute(sa.text("TRUNCATE transfers_p2031_06 CASCADE"))
        )
