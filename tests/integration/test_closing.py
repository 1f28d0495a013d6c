"""Closing periods into invoices on PostgreSQL, with a controlled clock: the right window for
each frequency, late usage in the next invoice, idempotent re-runs, rounding that loses
nothing, threshold closes, and closes racing usage posts (invariant 7)."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from billing.invoicing.closing import round_half_up
from billing.settings import put_settings
from billing.tables import (
    close_requests,
    invoice_lines,
    invoice_usage,
    invoices,
    outbox,
    usage_counters,
)
from billing.usage.ingestion import ingest_usage, validate_events
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.tables import transfers
from tests.scenarios import DEFAULTS, at, close, load_rates, post, rows, sms

pytestmark = pytest.mark.postgres


@pytest.fixture
def rated(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    return load_rates(sessions)


def invariant_seven(sessions: sessionmaker[Session], user: str) -> None:
    """usage == invoiced + rounding + unbilled, and no usage billed twice."""
    with unit_of_work(sessions) as session:
        usage = session.execute(
            sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0)).where(
                transfers.c.kind == "usage",
                transfers.c.metadata["user_id"].as_string() == user,
            )
        ).scalar_one()
        billed = session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(invoices.c.amount_micros), 0),
                sa.func.coalesce(sa.func.sum(invoices.c.rounding_micros), 0),
            ).where(invoices.c.customer_id == user)
        ).one()
        unbilled = account_balance(session, f"customer:{user}:unbilled").balance
        assert usage == billed[0] + billed[1] + unbilled
        billed_rows = session.execute(
            sa.select(sa.func.count()).select_from(invoice_usage)
        ).scalar_one()
        distinct = session.execute(
            sa.select(sa.func.count(sa.distinct(invoice_usage.c.transfer_id)))
        ).scalar_one()
        assert billed_rows == distinct
        assert check_ledger(session) == []


def test_a_daily_close_bills_the_previous_day_and_nothing_else(
    rated: sessionmaker[Session],
) -> None:
    post(
        rated,
        at(2026, 11, 24, 0, 30),
        sms("a", at(2026, 11, 23, 0, 0)),
        sms("b", at(2026, 11, 23, 23, 59, 59), segments=3),
        sms("c", at(2026, 11, 23, 12), destination="+12025550123"),
        sms("next-day", at(2026, 11, 24, 0, 0)),
    )
    summary = close(rated, "daily", at(2026, 11, 24, 2))
    assert (summary.invoices_created, summary.charges_enqueued) == (1, 1)
    (invoice,) = rows(rated, invoices)
    assert (invoice.period_start, invoice.period_end) == (at(2026, 11, 23), at(2026, 11, 24))
    assert (invoice.message_count, invoice.segments) == (3, 5)
    assert invoice.usage_micros == 4 * 7_000 + 6_000  # 0.034
    assert invoice.amount_micros == 30_000 and invoice.rounding_micros == 4_000  # 0.03, half up
    assert invoice.status == "pending" and invoice.approved_at is not None
    assert invoice.settings["frequency"] == "daily" and invoice.rate_ids
    lines = {
        (line.country, line.prefix): (line.messages, line.segments, line.amount_micros)
        for line in rows(rated, invoice_lines)
    }
    assert lines == {("GB", "4474"): (2, 4, 28_000), ("US", "1"): (1, 1, 6_000)}
    with unit_of_work(rated) as session:
        assert account_balance(session, "customer:42:unbilled").balance == 7_000  # next-day
        assert account_balance(session, "customer:42:receivable").balance == 30_000
        assert account_balance(session, "rounding:USD").balance == -4_000  # rounded down
        counters = session.execute(sa.select(usage_counters)).one()
        assert (counters.unbilled_messages, counters.oldest_unbilled_at) == (1, at(2026, 11, 24))
    (charge,) = rows(rated, outbox)
    assert charge.topic == "charge_invoice" and charge.payload["invoice_id"] == str(invoice.id)
    invariant_seven(rated, "42")


def test_a_close_run_twice_leaves_one_invoice(rated: sessionmaker[Session]) -> None:
    post(rated, at(2026, 11, 24, 0, 30), sms("a", at(2026, 11, 23, 10)))
    assert close(rated, "daily", at(2026, 11, 24, 2)).invoices_created == 1
    again = close(rated, "daily", at(2026, 11, 24, 2, 30))
    assert again.invoices_created == 0
    assert len(rows(rated, invoices)) == 1
    invariant_seven(rated, "42")


def test_late_usage_lands_in_the_next_invoice(rated: sessionmaker[Session]) -> None:
    post(rated, at(2026, 11, 24, 0, 30), sms("a", at(2026, 11, 23, 10)))
    close(rated, "daily", at(2026, 11, 24, 2))
    post(
        rated,
        at(2026, 11, 24, 9),
        sms("late", at(2026, 11, 23, 22)),
        sms("today", at(2026, 11, 24, 8)),
    )
    close(rated, "daily", at(2026, 11, 25, 2))
    first, second = sorted(rows(rated, invoices), key=lambda i: i.period_start)
    assert first.message_count == 1
    assert (second.period_start, second.message_count) == (at(2026, 11, 24), 2)
    invariant_seven(rated, "42")


def test_a_period_without_usage_makes_no_invoice(rated: sessionmaker[Session]) -> None:
    post(rated, at(2026, 11, 24, 9), sms("today", at(2026, 11, 24, 8)))
    summary = close(rated, "daily", at(2026, 11, 24, 10))
    assert summary.invoices_created == 0 and rows(rated, invoices) == []


def test_weekly_and_monthly_customers_close_on_their_own_calendar(
    rated: sessionmaker[Session],
) -> None:
    post(
        rated,
        at(2026, 11, 30, 1),
        sms("w1", at(2026, 11, 23, 0), user="weekly"),  # Monday
        sms("w2", at(2026, 11, 29, 23, 59), user="weekly"),  # Sunday
        sms("w3", at(2026, 11, 30, 0, 30), user="weekly"),  # next Monday
        sms("m1", at(2026, 11, 1), user="monthly"),
        sms("m2", at(2026, 11, 30, 23, 59), user="monthly"),
    )
    with unit_of_work(rated) as session:
        put_settings(session, "weekly", {"frequency": "weekly"}, DEFAULTS, at(2026, 11, 30))
        put_settings(session, "monthly", {"frequency": "monthly"}, DEFAULTS, at(2026, 11, 30))
    assert close(rated, "daily", at(2026, 11, 30, 2)).invoices_created == 0
    assert close(rated, "weekly", at(2026, 11, 30, 3)).invoices_created == 1
    assert close(rated, "monthly", at(2026, 11, 30, 4)).invoices_created == 0  # month not over
    assert close(rated, "monthly", at(2026, 12, 1, 4)).invoices_created == 1
    by_user = {i.customer_id: i for i in rows(rated, invoices)}
    weekly, monthly = by_user["weekly"], by_user["monthly"]
    assert (weekly.period_start, weekly.period_end, weekly.message_count) == (
        at(2026, 11, 23),
        at(2026, 11, 30),
        2,
    )
    assert (monthly.period_start, monthly.period_end, monthly.message_count) == (
        at(2026, 11, 1),
        at(2026, 12, 1),
        2,
    )


def test_crossing_a_threshold_closes_once(rated: sessionmaker[Session]) -> None:
    post(rated, at(2026, 11, 24, 9), sms("seed", at(2026, 11, 24, 9), user="t"))
    with unit_of_work(rated) as session:
        put_settings(
            session,
            "t",
            {"frequency": "threshold", "threshold_amount": 30_000},
            DEFAULTS,
            at(2026, 11, 24),
        )
    post(
        rated,
        at(2026, 11, 24, 10),
        *[sms(f"b{n}", at(2026, 11, 24, 10), user="t") for n in range(5)],
    )
    summary = close(rated, "threshold", at(2026, 11, 24, 10, 1))
    assert summary.invoices_created == 1
    (invoice,) = rows(rated, invoices)
    assert invoice.message_count == 6 and invoice.frequency == "threshold"
    assert rows(rated, close_requests)[0].served_at == at(2026, 11, 24, 10, 1)
    assert close(rated, "threshold", at(2026, 11, 24, 10, 2)).invoices_created == 0
    invariant_seven(rated, "t")


def test_manual_approval_keeps_the_invoice_from_the_charge_queue(
    rated: sessionmaker[Session],
) -> None:
    post(rated, at(2026, 11, 24, 0, 30), sms("a", at(2026, 11, 23, 10)))
    with unit_of_work(rated) as session:
        put_settings(session, "42", {"require_manual_approval": True}, DEFAULTS, at(2026, 11, 24))
    summary = close(rated, "daily", at(2026, 11, 24, 2))
    assert (summary.invoices_created, summary.charges_enqueued) == (1, 0)
    assert rows(rated, invoices)[0].approved_at is None and rows(rated, outbox) == []


def test_reversed_usage_is_not_billed(rated: sessionmaker[Session]) -> None:
    from ledger.posting import reverse_transfer

    post(
        rated,
        at(2026, 11, 24, 0, 30),
        sms("a", at(2026, 11, 23, 10)),
        sms("oops", at(2026, 11, 23, 11)),
    )
    with unit_of_work(rated) as session:
        oops = session.execute(
            sa.select(transfers.c.id).where(transfers.c.idempotency_key == "oops")
        ).scalar_one()
        reverse_transfer(session, oops, "undo-oops", at(2026, 11, 24, 1))
    close(rated, "daily", at(2026, 11, 24, 2))
    (invoice,) = rows(rated, invoices)
    assert invoice.message_count == 1
    with unit_of_work(rated) as session:
        assert account_balance(session, "customer:42:unbilled").balance == 0
        assert check_ledger(session) == []


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 2_000_000), min_size=1, max_size=8))
def test_rounding_loses_nothing(sessions: sessionmaker[Session], costs: list[int]) -> None:
    user = f"r-{uuid.uuid4().hex[:8]}"
    events = [
        sms(f"{user}-{n}", at(2026, 11, 23, 10), user=user, cost=str(Decimal(c).scaleb(-6)))
        for n, c in enumerate(costs)
    ]
    validated = validate_events(events)
    run_in_transaction(
        sessions, lambda s: ingest_usage(s, validated, at(2026, 11, 24, 1), DEFAULTS)
    )
    close(sessions, "daily", at(2026, 11, 24, 2), only=[user])
    with unit_of_work(sessions) as session:
        (invoice,) = session.execute(
            sa.select(invoices).where(invoices.c.customer_id == user)
        ).all()
        assert invoice.usage_micros == sum(costs)
        assert invoice.amount_micros == round_half_up(sum(costs), "USD")
        assert invoice.amount_micros % 10_000 == 0
        assert invoice.amount_micros + invoice.rounding_micros == sum(costs)
        receivable = account_balance(session, f"customer:{user}:receivable").balance
        assert receivable == invoice.amount_micros
        assert account_balance(session, f"customer:{user}:unbilled").balance == 0
    invariant_seven(sessions, user)


def test_usage_posted_while_closing_is_billed_exactly_once(rated: sessionmaker[Session]) -> None:
    post(
        rated,
        at(2026, 11, 24, 0, 10),
        *[sms(f"seed-{u}", at(2026, 11, 23, 9), user=f"u{u}") for u in range(10)],
    )
    stop = threading.Event()
    posted: list[str] = []

    def poster(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 60:
            batch = [
                sms(f"p{worker}-{n}-{k}", at(2026, 11, 23, 20), user=f"u{(n + k) % 10}")
                for k in range(5)
            ]
            post(rated, at(2026, 11, 24, 1), *batch)
            posted.extend(e["message_id"] for e in batch)
            n += 1

    threads = [threading.Thread(target=poster, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        close(rated, "daily", at(2026, 11, 24, 2))
    stop.set()
    for thread in threads:
        thread.join()
    close(rated, "daily", at(2026, 11, 25, 2))  # everything late lands in the next period
    with unit_of_work(rated) as session:
        unbilled_total = sum(
            account_balance(session, f"customer:u{u}:unbilled").balance for u in range(10)
        )
        assert unbilled_total == 0
        billed = session.execute(sa.select(sa.func.count()).select_from(invoice_usage)).scalar_one()
        assert billed == len(posted) + 10
    for u in range(10):
        invariant_seven(rated, f"u{u}")


def test_a_close_killed_after_its_invoices_were_written_leaves_nothing_and_reruns_once(
    rated: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    import billing.invoicing.closing as closing

    post(
        rated,
        at(2026, 11, 24, 0, 30),
        sms("a", at(2026, 11, 23, 10)),
        sms("b", at(2026, 11, 23, 11)),
    )

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("worker killed between the invoice rows and the transfers")

    monkeypatch.setattr(closing, "_post_transfers", crash)
    with pytest.raises(RuntimeError):
        close(rated, "daily", at(2026, 11, 24, 2))
    assert rows(rated, invoices) == [] and rows(rated, invoice_usage) == []
    monkeypatch.undo()
    assert close(rated, "daily", at(2026, 11, 24, 2, 5)).invoices_created == 1
    assert close(rated, "daily", at(2026, 11, 24, 2, 10)).invoices_created == 0
    (invoice,) = rows(rated, invoices)
    assert invoice.message_count == 2
    invariant_seven(rated, "42")
