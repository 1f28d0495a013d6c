"""Usage ingestion on PostgreSQL: pricing, replays, conflicts, all-or-nothing batches,
provisioning, customer plans, the threshold hook, and concurrent clients."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import update_customer
from billing.errors import InvalidUsage, UnknownCustomer
from billing.settings import BillingDefaults, put_settings
from billing.tables import close_requests, customers, notifications, rates, usage_counters
from billing.usage.ingestion import UsageResult, ingest_usage, validate_events
from billing.usage.rate_sheets import add_rates, parse_rate
from billing.usage.rating import MISS_RELOAD_S
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.errors import IdempotencyConflict
from ledger.tables import accounts, transfers
from tests.conftest import NOW
from tests.scenarios import load_rates, sms

pytestmark = pytest.mark.postgres

DEFAULTS = BillingDefaults()


@pytest.fixture
def rated(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    return load_rates(sessions, NOW)


def event(
    message_id: str, user: str = "42", *, sent_at: str = "2026-11-24T10:00:00Z", **extra: Any
) -> dict[str, Any]:
    """An SMS, by default sent on the morning of NOW's day."""
    return sms(message_id, sent_at, user=user, **extra)


def post(
    sessions: sessionmaker[Session], *events: dict[str, Any], defaults: BillingDefaults = DEFAULTS
) -> list[UsageResult]:
    validated = validate_events(list(events))
    return run_in_transaction(
        sessions, lambda s: ingest_usage(s, validated, NOW, defaults), attempts=10
    )


def counts(sessions: sessionmaker[Session]) -> tuple[int, int, int]:
    with unit_of_work(sessions) as session:

        def count(table: sa.Table) -> int:
            return int(session.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

        return count(transfers), count(customers), count(accounts)


def unbilled(sessions: sessionmaker[Session], user: str) -> int:
    with unit_of_work(sessions) as session:
        return account_balance(session, f"customer:{user}:unbilled").balance


def test_an_sms_is_priced_by_the_longest_prefix_and_posted(rated: sessionmaker[Session]) -> None:
    (result,) = post(rated, event("m1", segments=2))
    assert result.status == "posted"
    transfer = result.transfer
    assert (transfer.debit_account, transfer.credit_account) == (
        "customer:42:unbilled",
        "revenue:sms:USD",
    )
    assert transfer.amount == 2 * 7_000  # 4474 beats 447 and 44
    assert transfer.idempotency_key == "m1"
    details = result.details
    assert (details["prefix"], details["country"], details["segments"], details["unit_price"]) == (
        "4474",
        "GB",
        2,
        7_000,
    )
    assert details["rate_id"] is not None and details["priced_by"] == "rate"
    assert transfer.effective_at.isoformat() == "2026-11-24T10:00:00+00:00"
    assert unbilled(rated, "42") == 14_000
    with unit_of_work(rated) as session:
        counters = session.execute(sa.select(usage_counters)).one()
        assert (counters.unbilled_messages, counters.unbilled_segments) == (1, 2)
        assert check_ledger(session) == []


def test_a_replay_answers_the_original_amount_even_after_a_rate_change(
    rated: sessionmaker[Session],
) -> None:
    (first,) = post(rated, event("m1"))
    with unit_of_work(rated) as session:
        add_rates(
            session,
            [
                parse_rate(
                    {
                        "prefix": "4474",
                        "price": "0.5",
                        "currency": "USD",
                        "valid_from": "2026-01-01T00:00:00Z",
                    }
                )
            ],
            NOW,
        )
    (again,) = post(rated, event("m1"))
    assert again.status == "duplicate"
    assert again.transfer.id == first.transfer.id and again.transfer.amount == 7_000
    assert unbilled(rated, "42") == 7_000


def test_a_conflicting_replay_is_refused_and_writes_nothing(rated: sessionmaker[Session]) -> None:
    post(rated, event("m1"))
    before = counts(rated)
    with pytest.raises(IdempotencyConflict):
        post(rated, event("m2", user="43"), event("m1", segments=3))
    assert counts(rated) == before  # user 43 was not provisioned either


def test_an_unpriceable_event_refuses_the_whole_batch(rated: sessionmaker[Session]) -> None:
    before = counts(rated)
    with pytest.raises(InvalidUsage) as raised:
        post(rated, event("m1", user="new"), event("m2", destination="+61412345678"))
    assert raised.value.details["errors"][0]["code"] == "unpriceable_destination"
    assert raised.value.details["errors"][0]["index"] == 1
    assert counts(rated) == before


def test_a_rate_another_process_just_imported_prices_a_new_prefix_at_once(
    rated: sessionmaker[Session],
) -> None:
    """`smsledger rates import` runs in its own process, so this one's rate table stays cached;
    a miss reloads it before the event is refused as unpriceable."""
    post(rated, event("warm"))  # the table is cached now, without an Australian rate
    time.sleep(MISS_RELOAD_S)  # the import comes a moment later; misses reload this often
    with unit_of_work(rated) as session:  # as the CLI would, without this process knowing
        session.execute(
            sa.insert(rates).values(
                plan="default",
                prefix="614",
                country="AU",
                currency="USD",
                price_micros=42_000,
                valid_from=NOW - timedelta(days=1),
                created_at=NOW,
            )
        )
    (result,) = post(rated, event("au-1", destination="+61412345678"))
    assert result.status == "posted" and result.transfer.amount == 42_000


def test_a_given_cost_is_the_price(rated: sessionmaker[Session]) -> None:
    (result,) = post(rated, event("m1", cost="0.0123", destination="+61412345678"))
    assert result.transfer.amount == 12_300
    assert result.details["priced_by"] == "cost" and result.details["prefix"] == "61"


def test_currency_must_match_the_customer(rated: sessionmaker[Session]) -> None:
    post(rated, event("m1"))
    with pytest.raises(InvalidUsage) as raised:
        post(rated, event("m2", currency="EUR"))
    assert raised.value.details["errors"][0]["code"] == "currency_mismatch"


def test_unknown_users_are_refused_when_auto_provisioning_is_off(
    rated: sessionmaker[Session],
) -> None:
    before = counts(rated)
    with pytest.raises(UnknownCustomer):
        post(rated, event("m1"), defaults=BillingDefaults(auto_create_customers=False))
    assert counts(rated) == before


def test_unknown_users_get_the_global_default_currency(rated: sessionmaker[Session]) -> None:
    (result,) = post(rated, event("m1", user="eu-1"), defaults=BillingDefaults(currency="EUR"))
    assert result.transfer.currency == "EUR" and result.transfer.amount == 6_800


def test_a_customer_plan_overrides_the_default_rates(rated: sessionmaker[Session]) -> None:
    post(rated, event("m0"))
    with unit_of_work(rated) as session:
        update_customer(session, "42", NOW, rate_plan="wholesale")
    wholesale, fallback = post(
        rated, event("m1", destination="+447911123456"), event("m2", destination="+33612345678")
    )
    assert wholesale.transfer.amount == 5_000  # wholesale 447
    assert fallback.transfer.amount == 60_000  # default 336, not in the plan


def test_crossing_the_threshold_requests_one_close_and_one_notification(
    rated: sessionmaker[Session],
) -> None:
    post(rated, event("m0"))
    with unit_of_work(rated) as session:
        put_settings(
            session,
            "42",
            {"frequency": "threshold", "threshold_amount": 35_000, "notify_at_percent": 50},
            DEFAULTS,
            NOW,
        )
    for n in range(1, 3):  # 21,000 of 35,000: 60 %, notified once, no close yet
        post(rated, event(f"m{n}"))
    with unit_of_work(rated) as session:
        assert (
            session.execute(sa.select(sa.func.count()).select_from(close_requests)).scalar_one()
            == 0
        )
        (note,) = session.execute(sa.select(notifications)).all()
        assert note.kind == "approaching_threshold" and note.customer_id == "42"
    post(rated, *[event(f"b{n}") for n in range(5)])  # one batch crosses
    post(rated, event("after"))
    with unit_of_work(rated) as session:
        (request,) = session.execute(sa.select(close_requests)).all()
        assert (request.customer_id, request.reason, request.served_at) == ("42", "threshold", None)
        assert (
            session.execute(sa.select(sa.func.count()).select_from(notifications)).scalar_one() == 1
        )


def test_threshold_by_message_count(rated: sessionmaker[Session]) -> None:
    post(rated, event("m0", user="7"))
    with unit_of_work(rated) as session:
        put_settings(
            session, "7", {"frequency": "threshold", "threshold_messages": 3}, DEFAULTS, NOW
        )
    post(rated, event("m1", user="7"))
    with unit_of_work(rated) as session:
        assert (
            session.execute(sa.select(sa.func.count()).select_from(close_requests)).scalar_one()
            == 0
        )
    post(rated, event("m2", user="7"))
    with unit_of_work(rated) as session:
        assert session.execute(sa.select(close_requests.c.customer_id)).scalar_one() == "7"


def test_replaying_clients_bill_each_message_once(rated: sessionmaker[Session]) -> None:
    pool = [event(f"msg-{n}", user=f"u{n % 5}", segments=1 + n % 3) for n in range(300)]
    barrier = threading.Barrier(8)

    def client(seed: int) -> int:
        rng = random.Random(seed)
        barrier.wait()
        posted = 0
        for _ in range(8):
            results = post(rated, *rng.sample(pool, 60))
            posted += sum(r.status == "posted" for r in results)
        return posted

    with ThreadPoolExecutor(8) as executor:
        posted = sum(executor.map(client, range(8)))
    with unit_of_work(rated) as session:
        keys = session.execute(sa.select(transfers.c.idempotency_key)).scalars().all()
        assert len(keys) == len(set(keys)) == posted
        for user in range(5):
            expected = sum(
                7_000 * e["segments"]
                for e in pool
                if e["user_id"] == f"u{user}" and e["message_id"] in set(keys)
            )
            assert account_balance(session, f"customer:u{user}:unbilled").balance == expected
        messages = session.execute(
            sa.select(sa.func.sum(usage_counters.c.unbilled_messages))
        ).scalar_one()
        assert messages == posted
        assert check_ledger(session) == []


def test_sixteen_clients_for_fifty_customers_keep_balances_exact(
    rated: sessionmaker[Session],
) -> None:
    def client(index: int) -> None:
        for n in range(12):
            batch = [
                event(f"c{index}-{n}-{k}", user=f"cust{(index * 7 + n + k) % 50}") for k in range(5)
            ]
            post(rated, *batch)

    with ThreadPoolExecutor(16) as executor:
        list(executor.map(client, range(16)))
    with unit_of_work(rated) as session:
        per_customer = dict(
            (row[0], int(row[1]))
            for row in session.execute(
                sa.select(
                    sa.func.jsonb_extract_path_text(transfers.c.metadata, "user_id"),
                    sa.func.sum(transfers.c.amount),
                ).group_by(sa.text("1"))
            )
        )
        assert sum(per_customer.values()) == 16 * 12 * 5 * 7_000
        for customer, amount in per_customer.items():
            assert account_balance(session, f"customer:{customer}:unbilled").balance == amount
        assert account_balance(session, "revenue:sms:USD").balance == 16 * 12 * 5 * 7_000
        assert check_ledger(session) == []


def test_late_usage_keeps_its_sent_time(rated: sessionmaker[Session]) -> None:
    (result,) = post(rated, event("late", sent_at=(NOW - timedelta(days=3)).isoformat()))
    assert result.transfer.effective_at == NOW - timedelta(days=3)
    assert result.transfer.posted_at == NOW
