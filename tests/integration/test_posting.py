"""Posting, replays, conflicts, limits, reversals and balance reads on PostgreSQL, told as
small accounting situations."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.chart import ensure_chart
from ledger.accounts import ensure_accounts
from ledger.balances import account_balance, statement, trial_balance
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from ledger.errors import (
    AccountConflict,
    AlreadyReversed,
    BalanceLimitExceeded,
    CurrencyMismatch,
    IdempotencyConflict,
    UnknownAccount,
)
from ledger.model import AccountSpec, AccountType, EntryRequest, Kind, Leg
from ledger.posting import post_entries, post_entry, reverse_transfer
from ledger.tables import balances, transfers
from tests.conftest import NOW

pytestmark = pytest.mark.postgres

REVENUE = "revenue:sms:USD"


def usage(key: str, customer: str = "42", micros: int = 7_500, **extra: object) -> EntryRequest:
    return EntryRequest(
        Kind.USAGE,
        key,
        (Leg(f"customer:{customer}:unbilled", REVENUE, micros),),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def chart(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    with unit_of_work(sessions) as session:
        for customer in ("42", "43"):
            ensure_chart(session, customer, "USD", NOW)
        ensure_chart(session, "77", "EUR", NOW)
    return sessions


def count_transfers(sessions: sessionmaker[Session]) -> int:
    with unit_of_work(sessions) as session:
        return int(session.execute(sa.select(sa.func.count()).select_from(transfers)).scalar_one())


def balance_of(sessions: sessionmaker[Session], code: str, as_of=None) -> int:  # type: ignore[no-untyped-def]
    with unit_of_work(sessions) as session:
        return account_balance(session, code, as_of).balance


def test_a_sent_sms_debits_the_customer_and_credits_revenue(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        result = post_entry(session, usage("msg-1"), NOW)
    assert result.status == "posted"
    (transfer,) = result.transfers
    assert (transfer.debit_account, transfer.credit_account) == ("customer:42:unbilled", REVENUE)
    assert transfer.currency == "USD" and transfer.amount == 7_500
    assert balance_of(chart, "customer:42:unbilled") == 7_500
    assert balance_of(chart, REVENUE) == 7_500
    with unit_of_work(chart) as session:
        assert check_ledger(session) == []


def test_a_replayed_entry_returns_the_original_and_moves_nothing(
    chart: sessionmaker[Session],
) -> None:
    with unit_of_work(chart) as session:
        first = post_entry(session, usage("msg-1"), NOW)
    with unit_of_work(chart) as session:
        again = post_entry(session, usage("msg-1"), NOW + timedelta(hours=1))
    assert again.status == "duplicate"
    assert again.transfers == first.transfers
    assert balance_of(chart, "customer:42:unbilled") == 7_500
    assert count_transfers(chart) == 1


def test_a_key_reused_for_other_content_is_a_conflict_and_writes_nothing(
    chart: sessionmaker[Session],
) -> None:
    with unit_of_work(chart) as session:
        post_entry(session, usage("msg-1"), NOW)
    with pytest.raises(IdempotencyConflict), unit_of_work(chart) as session:
        post_entries(session, [usage("msg-2"), usage("msg-1", micros=9_999)], NOW)
    assert count_transfers(chart) == 1
    assert balance_of(chart, "customer:42:unbilled") == 7_500


def test_one_key_twice_in_one_batch_posts_once_or_conflicts(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        results = post_entries(session, [usage("msg-1"), usage("msg-1")], NOW)
    assert [r.status for r in results] == ["posted", "duplicate"]
    with pytest.raises(IdempotencyConflict), unit_of_work(chart) as session:
        post_entries(session, [usage("msg-9"), usage("msg-9", micros=1)], NOW)
    assert count_transfers(chart) == 1


def test_the_same_key_under_another_kind_is_a_different_entry(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        post_entry(session, usage("shared-key"), NOW)
        other = EntryRequest(
            Kind.ADJUSTMENT, "shared-key", (Leg("adjustments:USD", "customer:42:receivable", 5),)
        )
        assert post_entry(session, other, NOW).status == "posted"
    assert count_transfers(chart) == 2


def test_a_journal_entry_commits_all_its_legs_or_none(chart: sessionmaker[Session]) -> None:
    entry = EntryRequest(
        Kind.ADJUSTMENT,
        "adj-1",
        (
            Leg("adjustments:USD", "customer:42:receivable", 1_000_000),
            Leg("adjustments:USD", "customer:nobody:receivable", 1_000_000),
        ),
    )
    with pytest.raises(UnknownAccount) as raised, unit_of_work(chart) as session:
        post_entry(session, entry, NOW)
    assert raised.value.details["account"] == "customer:nobody:receivable"
    assert count_transfers(chart) == 0


def test_accounts_of_different_currencies_cannot_be_linked(chart: sessionmaker[Session]) -> None:
    entry = EntryRequest(
        Kind.ADJUSTMENT, "x", (Leg("adjustments:USD", "customer:77:receivable", 1),)
    )
    with pytest.raises(CurrencyMismatch), unit_of_work(chart) as session:
        post_entry(session, entry, NOW)
    stated = EntryRequest(
        Kind.ADJUSTMENT, "y", (Leg("adjustments:USD", "customer:42:receivable", 1),), currency="EUR"
    )
    with pytest.raises(CurrencyMismatch), unit_of_work(chart) as session:
        post_entry(session, stated, NOW)
    assert count_transfers(chart) == 0


def test_unbilled_usage_cannot_be_invoiced_past_what_was_used(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        post_entry(session, usage("msg-1", micros=10_000), NOW)
    too_much = EntryRequest(
        Kind.INVOICE, "inv-1", (Leg("customer:42:receivable", "customer:42:unbilled", 10_001),)
    )
    with pytest.raises(BalanceLimitExceeded) as raised, unit_of_work(chart) as session:
        post_entry(session, too_much, NOW)
    assert raised.value.details["account"] == "customer:42:unbilled"
    exact = EntryRequest(
        Kind.INVOICE, "inv-1", (Leg("customer:42:receivable", "customer:42:unbilled", 10_000),)
    )
    with unit_of_work(chart) as session:
        post_entry(session, exact, NOW)
    assert balance_of(chart, "customer:42:unbilled") == 0
    assert balance_of(chart, "customer:42:receivable") == 10_000


def test_a_mistake_is_corrected_by_a_reversal_once(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        original = post_entry(session, usage("msg-1"), NOW).transfers[0]
    with unit_of_work(chart) as session:
        reversal = reverse_transfer(session, original.id, "rev-1", NOW)
    (undo,) = reversal.transfers
    assert undo.kind == Kind.REVERSAL and undo.reverses_id == original.id
    assert (undo.debit_account, undo.credit_account) == (REVENUE, "customer:42:unbilled")
    assert balance_of(chart, "customer:42:unbilled") == 0
    with unit_of_work(chart) as session:
        assert reverse_transfer(session, original.id, "rev-1", NOW).status == "duplicate"
    with pytest.raises(AlreadyReversed), unit_of_work(chart) as session:
        reverse_transfer(session, original.id, "rev-2", NOW)
    assert count_transfers(chart) == 2


def test_balances_as_of_a_past_instant_follow_effective_time(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        for hour in range(5):
            post_entry(session, usage(f"msg-{hour}", effective_at=NOW + timedelta(hours=hour)), NOW)
    code = "customer:42:unbilled"
    assert balance_of(chart, code, NOW - timedelta(seconds=1)) == 0
    assert balance_of(chart, code, NOW) == 7_500  # inclusive
    assert balance_of(chart, code, NOW + timedelta(hours=2, minutes=30)) == 3 * 7_500
    assert balance_of(chart, code) == 5 * 7_500
    with unit_of_work(chart) as session:
        past = trial_balance(session, NOW + timedelta(hours=1))
    assert past.currencies["USD"].debits == past.currencies["USD"].credits == 2 * 7_500


def test_a_statement_carries_running_balances_across_pages(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        for hour in range(6):
            post_entry(session, usage(f"msg-{hour}", effective_at=NOW + timedelta(hours=hour)), NOW)
        post_entry(
            session,
            EntryRequest(
                Kind.INVOICE,
                "inv-1",
                (Leg("customer:42:receivable", "customer:42:unbilled", 15_000),),
                effective_at=NOW + timedelta(hours=3, minutes=30),
            ),
            NOW,
        )
    with unit_of_work(chart) as session:
        page = statement(
            session,
            "customer:42:unbilled",
            start=NOW + timedelta(hours=1),
            end=NOW + timedelta(hours=5),
            limit=2,
            offset=2,
        )
    # In range: 7.5k at 1h, 2h, 3h, -15k at 3h30, 7.5k at 4h; opening = 7.5k (the 0h usage).
    assert page.opening_balance == 7_500
    assert page.total == 5
    assert [(line.side, line.balance_after) for line in page.lines] == [
        ("debit", 30_000),
        ("credit", 15_000),
    ]
    assert page.closing_balance == 22_500


def test_a_hot_account_spreads_its_balance_but_sums_exactly(chart: sessionmaker[Session]) -> None:
    for index in range(40):
        with unit_of_work(chart) as session:
            post_entry(session, usage(f"msg-{index}", micros=1_000 + index), NOW)
    expected = sum(1_000 + index for index in range(40))
    assert balance_of(chart, REVENUE) == expected
    with unit_of_work(chart) as session:
        used_slots = session.execute(
            sa.select(sa.func.count()).where(balances.c.credits > 0)
        ).scalar_one()
        assert check_ledger(session) == []
    assert used_slots > 1


def test_an_account_redeclared_differently_is_refused(chart: sessionmaker[Session]) -> None:
    with pytest.raises(AccountConflict), unit_of_work(chart) as session:
        ensure_accounts(session, [AccountSpec("rounding:USD", AccountType.EXPENSE, "USD")], NOW)


def test_the_trial_balance_balances_per_currency(chart: sessionmaker[Session]) -> None:
    with unit_of_work(chart) as session:
        post_entry(session, usage("msg-1"), NOW)
        post_entry(
            session,
            EntryRequest(
                Kind.USAGE, "msg-eur", (Leg("customer:77:unbilled", "revenue:sms:EUR", 3),)
            ),
            NOW,
        )
        result = trial_balance(session)
    assert set(result.currencies) == {"USD", "EUR"}
    assert all(totals.balanced for totals in result.currencies.values())
    assert result.currencies["EUR"].debits == 3


def test_a_large_batch_takes_the_bulk_path_with_the_same_rules(
    chart: sessionmaker[Session],
) -> None:
    from ledger.bulk import BULK_MIN_ROWS

    first = [usage(f"bulk-{n}", micros=1_000 + n, metadata={"n": n}) for n in range(200)]
    assert len(first) > BULK_MIN_ROWS
    with unit_of_work(chart) as session:
        results = post_entries(session, first, NOW)
    assert all(r.status == "posted" for r in results)
    assert results[7].transfers[0].metadata == {"n": 7}
    replayed = first[:100] + [usage(f"bulk-new-{n}") for n in range(100)]
    with unit_of_work(chart) as session:
        again = post_entries(session, replayed, NOW)
    assert [r.status for r in again] == ["duplicate"] * 100 + ["posted"] * 100
    assert again[5].transfers == results[5].transfers
    with pytest.raises(IdempotencyConflict), unit_of_work(chart) as session:
        post_entries(session, [*replayed[:99], usage("bulk-3", micros=1)], NOW)
    assert count_transfers(chart) == 300
    with unit_of_work(chart) as session:
        stored = session.execute(
            sa.select(transfers.c.metadata, transfers.c.effective_at).where(
                transfers.c.idempotency_key == "bulk-7"
            )
        ).one()
        assert stored.metadata == {"n": 7} and stored.effective_at == NOW
        assert (
            account_balance(session, "customer:42:unbilled").balance
            == sum(1_000 + n for n in range(200)) + 100 * 7_500
        )
        assert check_ledger(session) == []


def test_many_limited_accounts_in_one_posting_move_through_one_statement(
    sessions: sessionmaker[Session],
) -> None:
    from ledger.bulk import BULK_MIN_ROWS

    customers = [f"bulk-{n}" for n in range(BULK_MIN_ROWS + 6)]
    with unit_of_work(sessions) as session:
        for customer in customers:
            ensure_chart(session, customer, "USD", NOW)
        post_entries(session, [usage(f"u-{c}", customer=c, micros=5_000) for c in customers], NOW)
    invoices_ = [
        EntryRequest(
            Kind.INVOICE,
            f"inv-{c}",
            (Leg(f"customer:{c}:receivable", f"customer:{c}:unbilled", 4_000),),
        )
        for c in customers
    ]
    with unit_of_work(sessions) as session:
        post_entries(session, invoices_, NOW)
    with unit_of_work(sessions) as session:
        assert all(
            account_balance(session, f"customer:{c}:unbilled").balance == 1_000 for c in customers
        )
        assert check_ledger(session) == []
    too_much = [
        EntryRequest(
            Kind.INVOICE,
            f"inv2-{c}",
            (
                Leg(
                    f"customer:{c}:receivable",
                    f"customer:{c}:unbilled",
                    1_000 + (c == customers[-1]),
                ),
            ),
        )
        for c in customers
    ]
    with pytest.raises(BalanceLimitExceeded) as raised, unit_of_work(sessions) as session:
        post_entries(session, too_much, NOW)
    assert raised.value.details["account"] == f"customer:{customers[-1]}:unbilled"


def test_a_one_transfer_entry_is_posted_in_one_statement(
    chart: sessionmaker[Session], engine: sa.Engine
) -> None:
    """`ledger_post_transfer`: the insert, both balance moves and the answer in one round trip
    (besides BEGIN and COMMIT), for a new key and for a replay alike."""
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_rest) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    with unit_of_work(chart) as session:  # the accounts are read once per process, not per post
        post_entry(session, usage("warm-up"), NOW)
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        with unit_of_work(chart) as session:
            assert post_entry(session, usage("msg-1"), NOW).status == "posted"
        with unit_of_work(chart) as session:
            assert post_entry(session, usage("msg-1"), NOW).status == "duplicate"
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert [s.split("(")[0] for s in statements] == ["SELECT * FROM ledger_post_transfer"] * 2
    assert balance_of(chart, "customer:42:unbilled") == 15_000


def test_a_one_transfer_replay_of_other_content_or_shape_is_a_conflict(
    chart: sessionmaker[Session],
) -> None:
    two_legs = EntryRequest(
        Kind.ADJUSTMENT,
        "adj-1",
        (
            Leg("customer:42:unbilled", REVENUE, 1_000),
            Leg("customer:43:unbilled", REVENUE, 2_000),
        ),
    )
    with unit_of_work(chart) as session:
        post_entry(session, usage("msg-1"), NOW)
        post_entry(session, two_legs, NOW)
    one_leg = EntryRequest(Kind.ADJUSTMENT, "adj-1", two_legs.legs[:1])
    for entry in (usage("msg-1", micros=9_999), one_leg):
        with pytest.raises(IdempotencyConflict), unit_of_work(chart) as session:
            post_entry(session, entry, NOW)
    assert count_transfers(chart) == 3
    assert balance_of(chart, "customer:42:unbilled") == 8_500
