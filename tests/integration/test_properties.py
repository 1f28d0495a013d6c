"""Property: any sequence of posts, replays, conflicting replays, over-limit invoices and
reversals leaves the ledger satisfying invariants 1-6, with balances equal to a plain model."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

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


class History:
    """What the ledger must hold after the operations applied so far: the signed balance of
    each customer account, every key posted with its content, and who reversed what."""

    def __init__(self, sessions: sessionmaker[Session], run: str) -> None:
        self.sessions = sessions
        self.run = run
        customers = [f"{run}-{n}" for n in range(CUSTOMERS)]
        self.unbilled = [f"customer:{c}:unbilled" for c in customers]
        self.receivable = [f"customer:{c}:receivable" for c in customers]
        with unit_of_work(sessions) as session:
            for customer in customers:
                ensure_chart(session, customer, "USD", NOW)
        self.model: dict[str, int] = defaultdict(int)  # signed balance, asset accounts only
        self.posted_content: dict[tuple[str, str], tuple[str, str, int]] = {}
        self.posted_ids: list[uuid.UUID] = []
        self.reversed_by: dict[uuid.UUID, str] = {}
        self.expected_rows = 0

    def post(self, op: Post | Invoice) -> None:
        kind = Kind.USAGE if isinstance(op, Post) else Kind.INVOICE
        key = f"{self.run}-{kind.value}-{op.key}"
        if kind is Kind.USAGE:
            debit, credit = self.unbilled[op.customer], "revenue:sms:USD"
        else:
            debit, credit = self.receivable[op.customer], self.unbilled[op.customer]
        entry = EntryRequest(kind, key, (Leg(debit, credit, op.micros),))
        content = (debit, credit, op.micros)
        previous = self.posted_content.get((kind.value, key))
        try:
            with unit_of_work(self.sessions) as session:
                result = post_entry(session, entry, NOW)
        except IdempotencyConflict:
            assert previous is not None and previous != content
            return
        except BalanceLimitExceeded:
            assert kind is Kind.INVOICE and self.model[self.unbilled[op.customer]] < op.micros
            return
        if previous is not None:
            assert previous == content and result.status == "duplicate"
            return
        assert result.status == "posted"
        self.posted_content[(kind.value, key)] = content
        self.posted_ids.append(result.transfers[0].id)
        self.expected_rows += 1
        self.model[debit] += op.micros
        if credit != "revenue:sms:USD":
            self.model[credit] -= op.micros

    def reverse(self, op: Any) -> None:
        target = self.posted_ids[op.target % len(self.posted_ids)]
        key = f"{self.run}-rev-{op.key}"
        try:
            with unit_of_work(self.sessions) as session:
                result = reverse_transfer(session, target, key, NOW)
        except AlreadyReversed:
            assert target in self.reversed_by and self.reversed_by[target] != key
            return
        except IdempotencyConflict:
            return  # that reversal key already undid another transfer
        except BalanceLimitExceeded:
            return  # undoing usage that was already invoiced
        if result.status == "duplicate":
            assert self.reversed_by.get(target) == key
            return
        self.reversed_by[target] = key
        self.expected_rows += 1
        (undo,) = result.transfers
        for code, delta in ((undo.debit_account, undo.amount), (undo.credit_account, -undo.amount)):
            if code.startswith("customer:"):
                self.model[code] += delta


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations)
def test_any_history_keeps_the_invariants(sessions: sessionmaker[Session], ops: list) -> None:
    history = History(sessions, uuid.uuid4().hex[:8])
    for op in ops:
        if isinstance(op, Post | Invoice):
            history.post(op)
        elif history.posted_ids:
            history.reverse(op)

    with unit_of_work(sessions) as session:
        assert check_ledger(session) == []
        assert all(t.balanced for t in trial_balance(session).currencies.values())
        for code in history.unbilled + history.receivable:
            assert account_balance(session, code).balance == history.model[code], code
            assert account_balance(session, code).balance >= 0 or code in history.receivable
        rows = session.execute(
            sa.select(sa.func.count()).where(transfers.c.idempotency_key.like(f"{history.run}-%"))
        ).scalar_one()
        assert rows == history.expected_rows
