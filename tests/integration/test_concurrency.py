"""Racing units of work: overlapping idempotency keys never post twice, and a balance-limited
account is never overdrawn (invariants 5, 6 and 9 under contention)."""

from __future__ import annotations

import random
import threading
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.chart import ensure_chart, system_specs
from ledger.accounts import ensure_accounts
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.errors import BalanceLimitExceeded
from ledger.model import AccountSpec, AccountType, EntryRequest, Kind, Leg
from ledger.posting import post_entries, post_entry
from ledger.tables import transfers
from tests.conftest import NOW

pytestmark = pytest.mark.postgres

THREADS = 8
WALLET = "customer:9:wallet"
UNIT = 1_000_000


def test_racing_spends_from_a_limited_wallet_never_overdraw_or_duplicate(
    sessions: sessionmaker[Session],
) -> None:
    with unit_of_work(sessions) as session:
        ensure_accounts(
            session,
            [
                AccountSpec(
                    WALLET, AccountType.LIABILITY, "USD", "9", debits_must_not_exceed_credits=True
                ),
                *system_specs("USD"),
            ],
            NOW,
        )
        post_entry(
            session,
            EntryRequest(Kind.OPENING, "fund", (Leg("opening-balance:USD", WALLET, 100 * UNIT),)),
            NOW,
        )
    keys = [f"spend-{n}" for n in range(30)]
    outcomes: dict[str, set[uuid.UUID]] = defaultdict(set)
    refusals = 0
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def client(seed: int) -> None:
        nonlocal refusals
        order = keys[:]
        random.Random(seed).shuffle(order)
        start.wait()
        for key in order:
            entry = EntryRequest(Kind.USAGE, key, (Leg(WALLET, "revenue:sms:USD", 7 * UNIT),))
            try:
                result = run_in_transaction(
                    sessions, lambda s, e=entry: post_entry(s, e, NOW), attempts=10
                )
            except BalanceLimitExceeded:
                with lock:
                    refusals += 1
                continue
            with lock:
                outcomes[key].add(result.transfers[0].id)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(client, range(THREADS)))

    # 100 funds 14 spends of 7; the 15th and later must all be refused.
    assert len(outcomes) == 14
    assert all(len(ids) == 1 for ids in outcomes.values()), "a replay saw another transfer"
    assert refusals == (30 - 14) * THREADS
    with unit_of_work(sessions) as session:
        spent = session.execute(
            sa.select(
                sa.func.count(), sa.func.count(sa.distinct(transfers.c.idempotency_key))
            ).where(transfers.c.kind == "usage")
        ).one()
        assert tuple(spent) == (14, 14)
        assert account_balance(session, WALLET).balance == 2 * UNIT
        assert check_ledger(session) == []


def test_overlapping_batches_from_many_clients_post_each_key_once(
    sessions: sessionmaker[Session],
) -> None:
    customers = [str(n) for n in range(10)]
    with unit_of_work(sessions) as session:
        for customer in customers:
            ensure_chart(session, customer, "USD", NOW)
    pool_of_keys = [(f"msg-{n}", customers[n % 10], 1_000 + n) for n in range(200)]

    def client(seed: int) -> list[str]:
        rng = random.Random(seed)
        statuses = []
        for _ in range(10):
            batch = rng.sample(pool_of_keys, 80)  # above BULK_MIN_ROWS: the array insert
            entries = [
                EntryRequest(
                    Kind.USAGE, key, (Leg(f"customer:{c}:unbilled", "revenue:sms:USD", m),)
                )
                for key, c, m in batch
            ]
            results = run_in_transaction(
                sessions, lambda s, e=entries: post_entries(s, e, NOW), attempts=10
            )
            statuses.extend(r.status for r in results)
        return statuses

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = [s for chunk in pool.map(client, range(THREADS)) for s in chunk]

    with unit_of_work(sessions) as session:
        posted_keys = session.execute(sa.select(transfers.c.idempotency_key)).scalars().all()
        assert len(posted_keys) == len(set(posted_keys))
        assert statuses.count("posted") == len(posted_keys)
        expected = defaultdict(int)
        for key, customer, micros in pool_of_keys:
            if key in set(posted_keys):
                expected[customer] += micros
        for customer in customers:
            balance = account_balance(session, f"customer:{customer}:unbilled").balance
            assert balance == expected[customer]
        assert account_balance(session, "revenue:sms:USD").balance == sum(expected.values())
        assert check_ledger(session) == []
