"""Property: any sequence of posts, replays, conflicting replays, over-limit invoices and
reversals leaves the ledger satisfying invariants 1-6, with balances equal to a plain model."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from billing.chart import ensure_chart
from ledger.balances import account_balance, trial_balance
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from ledger.errors import AlreadyReversed, BalanceLimitExceeded, IdempotencyConflict
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry, reverse_transfer
from ledger.tables import transfers
from tests.conftest import NOW

pytestmark = pytest.mark.postgres

CUSTOMERS = 3


@dataclass(frozen=True)
class Post:
    key: int
    customer: int
    micros: int


@dataclass(frozen=True)
class Invoice:
    key: int
    customer: int
    micros: int


@dataclass(frozen=True)
class Reverse:
    target: int
    key: int


operations = st.lists(
    st.one_of(
        st.builds(Post, st.integers(0, 12), st.integers(0, CUSTOMERS - 1), st.integers(1, 50_000)),
        st.builds(
            Invoice, st.integers(0, 4), st.integers(0, CUSTOMERS - 1), st.integers(1, 80_000)
        ),
        st.builds(Reverse, st.integers(0, 30), st.integers(0, 3)),
    ),
    max_size=25,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations)
def test_any_history_keeps_the_invariants(sessions: sessionmaker[Session], ops: list) -> None:
    run = uuid.uuid4().hex[:8]
    customers = [f"{run}-{n}" for n in range(CUSTOMERS)]
    unbilled = [f"customer:{c}:unbilled" for c in customers]
    receivable = [f"customer:{c}:receivable" for c in customers]
    with unit_of_work(sessions) as session:
        for customer in customers:
            ensure_chart(session, customer, "USD", NOW)

    model: dict[str, int] = defaultdict(int)  # signed balance, asset accounts only
    posted_content: dict[tuple[str, str], tuple[str, str, int]] = {}
    posted_ids: list[uuid.UUID] = []
    reversed_by: dict[uuid.UUID, str] = {}
    expected_rows = 0

    for op in ops:
        if isinstance(op, Post | Invoice):
            kind = Kind.USAGE if isinstance(op, Post) else Kind.INVOICE
            key = f"{run}-{kind.value}-{op.key}"
            if kind is Kind.USAGE:
                debit, credit = unbilled[op.customer], "revenue:sms:USD"
            else:
                debit, credit = receivable[op.customer], unbilled[op.customer]
            entry = EntryRequest(kind, key, (Leg(debit, credit, op.micros),))
            content = (debit, credit, op.micros)
            previous = posted_content.get((kind.value, key))
            try:
                with unit_of_work(sessions) as session:
                    result = post_entry(session, entry, NOW)
            except IdempotencyConflict:
                assert previous is not None and previous != content
                continue
            except BalanceLimitExceeded:
                assert kind is Kind.INVOICE and model[unbilled[op.customer]] < op.micros
                continue
            if previous is not None:
                assert previous == content and result.status == "duplicate"
                continue
            assert result.status == "posted"
            posted_content[(kind.value, key)] = content
            posted_ids.append(result.transfers[0].id)
            expected_rows += 1
            model[debit] += op.micros
            if credit != "revenue:sms:USD":
                model[credit] -= op.micros
        elif posted_ids:
            target = posted_ids[op.target % len(posted_ids)]
            key = f"{run}-rev-{op.key}"
            try:
                with unit_of_work(sessions) as session:
                    result = reverse_transfer(session, target, key, NOW)
            except AlreadyReversed:
                assert target in reversed_by and reversed_by[target] != key
                continue
            except IdempotencyConflict:
                continue  # that reversal key already undid another transfer
            except BalanceLimitExceeded:
                continue  # undoing usage that was already invoiced
            if result.status == "duplicate":
                assert reversed_by.get(target) == key
                continue
            reversed_by[target] = key
            expected_rows += 1
            (undo,) = result.transfers
            for code, delta in (
                (undo.debit_account, undo.amount),
                (undo.credit_account, -undo.amount),
            ):
                if code.startswith("customer:"):
                    model[code] += delta

    with unit_of_work(sessions) as session:
        assert check_ledger(session) == []
        assert all(t.balanced for t in trial_balance(session).currencies.values())
        for code in unbilled + receivable:
            assert account_balance(session, code).balance == model[code], code
            assert account_balance(session, code).balance >= 0 or code in receivable
        rows = session.execute(
            sa.select(sa.func.count()).where(transfers.c.idempotency_key.like(f"{run}-%"))
        ).scalar_one()
        assert rows == expected_rows
