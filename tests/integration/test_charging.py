"""Charging invoices in Sippy through the simulator over real HTTP and XML-RPC (invariant 8):
for every kind of answer and fault the invoice ends right, the simulator's payment history
holds at most one debit per invoice, and every successful charge has exactly one settlement."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import create_customer
from billing.payments.charge_runner import charge_invoice
from billing.payments.charging import OPERATOR_REASON, ChargePolicy, due_charges
from billing.payments.sippy_client import ChargeOutcome, SippyClient
from billing.settings import put_settings
from billing.tables import invoices, notifications, payment_attempts
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.money import Money
from ledger.tables import transfers
from sippy_simulator.server import SimulatorHandle
from tests.conftest import Clock
from tests.scenarios import (
    DEFAULTS,
    at,
    close,
    debits_for,
    load_rates,
    post,
    rows,
    settlements,
    sms,
)

pytestmark = pytest.mark.postgres

POLICY = ChargePolicy(in_flight_grace=timedelta(minutes=2))
CLOSED_AT = at(2026, 11, 24, 2)


@pytest.fixture
def client(sim: SimulatorHandle) -> SippyClient:
    return SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=0.5)


def billed_customer(
    sessions: sessionmaker[Session],
    user: str = "42",
    sippy_account: str | None = "1001",
    messages: int = 3,
) -> uuid.UUID:
    """A customer with a Sippy account, `messages` SMS on 23 Nov and the daily close of them:
    the invoice's id (0.0070 each to +4474: 3 SMS = 0.021 -> 0.02)."""
    with unit_of_work(sessions) as session:
        fields = {"sippy_account_id": sippy_account} if sippy_account else {}
        create_customer(session, user, "USD", at(2026, 11, 1), **fields)
    post(
        sessions,
        at(2026, 11, 23, 23),
        *(sms(f"{user}-{n}", at(2026, 11, 23, 12), user=user) for n in range(messages)),
    )
    close(sessions, "daily", CLOSED_AT)
    (invoice,) = rows(sessions, invoices, invoices.c.customer_id == user)
    return uuid.UUID(str(invoice.id))


class World(NamedTuple):
    sessions: sessionmaker[Session]
    sim: SimulatorHandle
    client: SippyClient
    invoice_id: uuid.UUID
    clock: Clock


@pytest.fixture
def world(
    sessions: sessionmaker[Session], sim: SimulatorHandle, client: SippyClient, clock: Clock
) -> World:
    """One customer (Sippy account 1001) with one pending invoice of 0.02 USD, due now."""
    load_rates(sessions)
    clock.now = CLOSED_AT
    return World(sessions, sim, client, billed_customer(sessions), clock)


def charge(
    sessions: sessionmaker[Session], gateway: Any, invoice_id: uuid.UUID, clock: Clock
) -> str:
    return charge_invoice(sessions, gateway, invoice_id, clock, DEFAULTS, POLICY)


def invoice_of(sessions: sessionmaker[Session], invoice_id: uuid.UUID) -> Any:
    (row,) = rows(sessions, invoices, invoices.c.id == invoice_id)
    return row


def attempts_of(sessions: sessionmaker[Session], invoice_id: uuid.UUID) -> list[Any]:
    found = rows(sessions, payment_attempts, payment_attempts.c.invoice_id == invoice_id)
    return sorted(found, key=lambda a: a.attempt_no)


def notices(sessions: sessionmaker[Session], kind: str) -> list[Any]:
    return rows(sessions, notifications, notifications.c.kind == kind)


def assert_paid_once(
    sessions: sessionmaker[Session], sim: SimulatorHandle, invoice_id: uuid.UUID
) -> None:
    invoice = invoice_of(sessions, invoice_id)
    assert invoice.status == "paid" and invoice.next_retry_at is None
    (debit,) = debits_for(sim, invoice_id)
    assert debit["amount"] == Decimal("0.02")
    (settlement,) = settlements(sessions, invoice_id)
    assert settlement.amount == invoice.amount_micros == 20_000
    accepted = [a for a in attempts_of(sessions, invoice_id) if a.status == "accepted"]
    assert [a.reference for a in accepted] == [debit["notes"]]
    with unit_of_work(sessions) as session:
        assert account_balance(session, "customer:42:receivable").balance == 0
        assert account_balance(session, "sippy:clearing:USD").balance == 20_000
        assert check_ledger(session) == []


def test_an_accepted_charge_settles_the_invoice_once(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)
    assert sim.state.balance(1001) == Decimal("99.98")
    (attempt,) = attempts_of(sessions, invoice_id)
    assert attempt.reference == f"smsledger:{invoice_id}:{attempt.id}"
    (paid,) = notices(sessions, "invoice_paid")
    assert paid.payload["invoice_id"] == str(invoice_id) and paid.payload["amount_micros"] == 20_000
    clock.now += timedelta(days=1)
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


def test_a_terminal_decline_fails_the_invoice_without_a_retry(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.put_account(
        {
            "i_account": 1001,
            "username": "poor",
            "currency": "USD",
            "balance": "0.01",
            "credit_limit": "0",
        }
    )
    assert charge(sessions, client, invoice_id, clock) == "failed"
    invoice = invoice_of(sessions, invoice_id)
    assert (invoice.status, invoice.next_retry_at, invoice.attempts) == ("failed", None, 1)
    assert invoice.last_error.startswith("402:")
    (attempt,) = attempts_of(sessions, invoice_id)
    assert (attempt.status, attempt.code, attempt.retryable) == ("declined", "402", False)
    (failed,) = notices(sessions, "payment_failed")
    assert failed.payload["next_retry_at"] is None
    clock.now += timedelta(days=30)
    assert charge(sessions, client, invoice_id, clock) == "not_due"
    assert debits_for(sim, invoice_id) == [] and settlements(sessions, invoice_id) == []


def test_a_retryable_fault_is_retried_on_the_backoff_schedule_then_left_failed(
    world: World,
) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(
        method="accountDebit", kind="fault", count=10, fault_code=500, fault_string="busy"
    )
    waits = []
    for _ in range(4):
        assert charge(sessions, client, invoice_id, clock) == "failed"
        invoice = invoice_of(sessions, invoice_id)
        waits.append(invoice.next_retry_at - clock.now if invoice.next_retry_at else None)
        assert charge(sessions, client, invoice_id, clock) == "not_due"
        clock.now = invoice.next_retry_at or clock.now + timedelta(days=1)
    assert waits == [timedelta(hours=1), timedelta(hours=6), timedelta(hours=24), None]
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["declined"] * 4
    assert len(notices(sessions, "payment_failed")) == 4
    assert debits_for(sim, invoice_id) == []


def test_a_retry_after_a_temporary_fault_pays(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="*", kind="fault", count=1, fault_code=500, fault_string="x")
    assert charge(sessions, client, invoice_id, clock) == "failed"
    assert due_charges_at(sessions, clock.now + timedelta(minutes=59)) == []
    clock.now += timedelta(hours=1)
    assert due_charges_at(sessions, clock.now) == [invoice_id]
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["declined", "accepted"]


def due_charges_at(sessions: sessionmaker[Session], now: datetime) -> list[uuid.UUID]:
    return run_in_transaction(sessions, lambda s: due_charges(s, now, POLICY))


def test_a_timeout_after_the_charge_applied_is_settled_by_lookup_never_charged_again(
    world: World,
) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind="timeout_after_apply", delay_s=1.5)
    assert charge(sessions, client, invoice_id, clock) == "unknown"
    invoice = invoice_of(sessions, invoice_id)
    assert invoice.status == "processing" and invoice.last_error.startswith("timeout")
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["unknown"]
    assert charge(sessions, client, invoice_id, clock) == "in_flight"
    assert due_charges_at(sessions, clock.now) == []
    clock.now += POLICY.in_flight_grace
    assert due_charges_at(sessions, clock.now) == [invoice_id]
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)
    (attempt,) = attempts_of(sessions, invoice_id)
    assert attempt.sippy_payment_id == str(debits_for(sim, invoice_id)[0]["i_payment"])


def test_a_slow_answer_that_applies_after_the_timeout_is_found_by_lookup(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind="slow", delay_s=1.0)
    assert charge(sessions, client, invoice_id, clock) == "unknown"
    deadline = time.monotonic() + 5
    while not debits_for(sim, invoice_id) and time.monotonic() < deadline:
        time.sleep(0.05)  # the simulator's handler thread finishes the call after our timeout
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


@pytest.mark.parametrize("kind", ["reset", "http_5xx"])
def test_a_charge_lost_in_transport_is_looked_up_then_retried_once(world: World, kind: str) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind=kind)
    assert charge(sessions, client, invoice_id, clock) == "unknown"
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "failed"  # lookup: never applied
    invoice = invoice_of(sessions, invoice_id)
    assert invoice.next_retry_at == clock.now + timedelta(hours=1)
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["not_applied"]
    clock.now = invoice.next_retry_at
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


def test_a_debit_sippy_applies_after_the_lookup_found_nothing_is_never_charged_twice(
    world: World,
) -> None:
    """Measured from outside: a debit applied 90 s late, after the grace and after the lookup
    had found nothing, was followed by a second debit. Before a new attempt every earlier
    attempt's reference is looked up again, and the late debit settles the invoice."""
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind="slow", delay_s=2.0)
    assert charge(sessions, client, invoice_id, clock) == "unknown"  # timed out at 0.5 s
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "failed"  # not there yet
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["not_applied"]
    deadline = time.monotonic() + 5
    while not debits_for(sim, invoice_id) and time.monotonic() < deadline:
        time.sleep(0.05)  # Sippy applies it now, late
    assert len(debits_for(sim, invoice_id)) == 1
    clock.now = invoice_of(sessions, invoice_id).next_retry_at
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)
    assert len(attempts_of(sessions, invoice_id)) == 1  # no second attempt was made


def test_no_new_attempt_starts_while_earlier_ones_cannot_be_looked_up(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind="reset")
    assert charge(sessions, client, invoice_id, clock) == "unknown"
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "failed"
    clock.now = invoice_of(sessions, invoice_id).next_retry_at
    sim.state.inject_fault(method="getPaymentsList", kind="http_5xx")
    assert charge(sessions, client, invoice_id, clock) == "unresolved"
    assert len(attempts_of(sessions, invoice_id)) == 1 and debits_for(sim, invoice_id) == []
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


def test_a_lookup_that_cannot_reach_sippy_leaves_the_attempt_open(world: World) -> None:
    sessions, sim, client, invoice_id, clock = world
    sim.state.inject_fault(method="accountDebit", kind="timeout_after_apply", delay_s=1.5)
    assert charge(sessions, client, invoice_id, clock) == "unknown"
    sim.state.inject_fault(method="getPaymentsList", kind="http_5xx")
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "unresolved"
    assert invoice_of(sessions, invoice_id).status == "processing"
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


def test_wrong_credentials_are_an_operator_error_not_retried_and_the_user_told_only_that(
    world: World,
) -> None:
    sessions, sim, _, invoice_id, clock = world
    wrong = SippyClient(sim.xmlapi_url, "smsledger", "wrong", timeout_s=2)
    assert charge(sessions, wrong, invoice_id, clock) == "failed"
    invoice = invoice_of(sessions, invoice_id)
    assert invoice.next_retry_at is None and invoice.last_error.startswith("http_401")
    (notice,) = notices(sessions, "payment_failed")
    assert notice.payload["reason"] == OPERATOR_REASON  # no credentials talk to the user
    assert sim.state.payments() == []


def test_a_customer_without_a_sippy_account_is_an_admin_visible_failure(
    sessions: sessionmaker[Session],
    sim: SimulatorHandle,
    client: SippyClient,
    clock: Clock,
) -> None:
    load_rates(sessions)
    clock.now = CLOSED_AT
    invoice_id = billed_customer(sessions, user="7", sippy_account=None)
    assert charge(sessions, client, invoice_id, clock) == "failed"
    invoice = invoice_of(sessions, invoice_id)
    assert invoice.status == "failed" and invoice.last_error.startswith("no_sippy_account")
    (attempt,) = attempts_of(sessions, invoice_id)
    assert (attempt.code, attempt.retryable) == ("no_sippy_account", False)
    assert sim.state.payments() == []
    (notice,) = notices(sessions, "payment_failed")  # every failed invoice tells its user
    assert notice.customer_id == "7" and notice.payload["reason"] == OPERATOR_REASON
    assert notice.payload["invoice_id"] == str(invoice_id)


class WorkerKilled(BaseException):
    """A worker process dying between Sippy's answer and the settlement's commit."""


class DiesAfterCharging:
    def __init__(self, client: SippyClient) -> None:
        self.client = client

    def debit(self, account_id: int, amount: Money, reference: str, at: datetime) -> ChargeOutcome:
        self.client.debit(account_id, amount, reference, at)
        raise WorkerKilled

    def find_debit(self, *args: Any) -> Any:
        return self.client.find_debit(*args)


def test_a_worker_killed_between_the_charge_and_the_settlement_settles_once_on_rerun(
    world: World,
) -> None:
    sessions, sim, client, invoice_id, clock = world
    with pytest.raises(WorkerKilled):
        charge(sessions, DiesAfterCharging(client), invoice_id, clock)
    assert [a.status for a in attempts_of(sessions, invoice_id)] == ["started"]
    assert len(debits_for(sim, invoice_id)) == 1 and settlements(sessions, invoice_id) == []
    assert charge(sessions, client, invoice_id, clock) == "in_flight"  # too soon to tell
    clock.now += POLICY.in_flight_grace
    assert charge(sessions, client, invoice_id, clock) == "paid"
    assert_paid_once(sessions, sim, invoice_id)


def test_invoices_awaiting_approval_are_not_charged(
    sessions: sessionmaker[Session], sim: SimulatorHandle, client: SippyClient, clock: Clock
) -> None:
    load_rates(sessions)
    with unit_of_work(sessions) as session:
        put_settings(session, "42", {"require_manual_approval": True}, DEFAULTS, clock.now)
    clock.now = CLOSED_AT
    invoice_id = billed_customer(sessions)
    assert charge(sessions, client, invoice_id, clock) == "awaiting_approval"
    assert sim.state.payments() == []


def test_two_workers_charging_200_invoices_at_once_settle_each_once(
    sessions: sessionmaker[Session], sim: SimulatorHandle, clock: Clock
) -> None:
    load_rates(sessions)
    users = [f"c{n}" for n in range(200)]
    with unit_of_work(sessions) as session:
        for n, user in enumerate(users):
            sim.state.put_account(
                {
                    "i_account": 5000 + n,
                    "username": user,
                    "currency": "USD",
                    "balance": "10",
                    "credit_limit": "0",
                }
            )
            create_customer(session, user, "USD", at(2026, 11, 1), sippy_account_id=str(5000 + n))
    post(
        sessions,
        at(2026, 11, 23, 23),
        *(sms(f"m-{u}", at(2026, 11, 23, 12), user=u) for u in users),
    )
    clock.now = CLOSED_AT
    assert close(sessions, "daily", CLOSED_AT).invoices_created == 200
    invoice_ids = due_charges_at(sessions, clock.now)
    assert len(invoice_ids) == 200
    results: list[list[str]] = [[], []]

    def worker(slot: int) -> None:
        gateway = SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5)
        order = invoice_ids if slot == 0 else list(reversed(invoice_ids))
        results[slot] = [charge(sessions, gateway, i, clock) for i in order]

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0].count("paid") + results[1].count("paid") >= 200
    debits = [p for p in sim.state.payments() if p["type"] == "debit"]
    assert len(debits) == 200
    assert len({p["notes"].split(":")[1] for p in debits}) == 200
    with unit_of_work(sessions) as session:
        paid = session.execute(
            sa.select(sa.func.count()).where(invoices.c.status == "paid")
        ).scalar_one()
        settled = session.execute(
            sa.select(
                sa.func.count(), sa.func.count(sa.distinct(transfers.c.idempotency_key))
            ).where(transfers.c.kind == "settlement")
        ).one()
        assert paid == 200 and tuple(settled) == (200, 200)
        assert check_ledger(session) == []
