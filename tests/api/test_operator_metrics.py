"""The metrics operators alert on, read from the real app's `/metrics`: every Sippy call timed
and counted by method and outcome (the real client against the simulator), billing cycles and
their last success, pre-send checks that failed open, and the database's figures (open and
stuck charges, the outbox and webhook backlogs) counted at scrape, a scrape that still answers
while the database is down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from billing.payments.charge_runner import charge_invoice
from billing.payments.sippy_client import SippyClient
from infra.config import Config
from infra.metrics import observe_sippy
from jobs import context
from jobs.billing import billing_cycle
from ledger.money import Money
from sippy_simulator.server import SimulatorHandle
from tests.api.test_outage_answers import EVENT, _nothing_listens
from tests.client import ApiClient, Caller
from tests.conftest import Clock
from tests.scenarios import DEFAULTS, bill_yesterday, load_rates

pytestmark = pytest.mark.postgres

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(client: Caller) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.data[:500]
    found = {}
    for family in text_string_to_metric_families(answer.data.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_sippy_call_is_timed_and_counted_by_method_and_outcome(
    api: ApiClient, sim: SimulatorHandle, clock: Clock
) -> None:
    client = SippyClient(
        sim.xmlapi_url, "smsledger", "secret", timeout_s=0.3, observe=observe_sippy
    )
    usd = Money.parse("1.00", "USD")
    before = samples(api.anonymous())
    assert client.debit(1001, usd, "ok-1", clock()).status == "accepted"
    client.account_balance(1001)
    faults: list[tuple[dict[str, Any], str]] = [
        ({"kind": "fault", "fault_code": 402}, "declined"),  # terminal
        ({"kind": "fault", "fault_code": 500}, "declined"),  # retryable
        ({"kind": "http_401"}, "declined"),
        ({"kind": "http_5xx"}, "unknown"),
        ({"kind": "reset"}, "unknown"),
        ({"kind": "slow", "delay_s": 1.5}, "unknown"),  # past the 0.3 s timeout
    ]
    for rule, status in faults:
        sim.state.inject_fault(method="accountDebit", **rule)
        assert client.debit(1001, usd, f"r-{rule['kind']}", clock()).status == status
    after = samples(api.anonymous())

    def grew(name: str, method: str, outcome: str) -> float:
        labels = {"method": method, "outcome": outcome}
        return value(after, name, **labels) - value(before, name, **labels)

    expected = {
        ("accountDebit", "ok"): 1,
        ("getAccountInfo", "ok"): 1,
        ("accountDebit", "fault_terminal"): 1,
        ("accountDebit", "fault_retryable"): 1,
        ("accountDebit", "auth_failed"): 1,
        ("accountDebit", "transport_error"): 2,
        ("accountDebit", "timeout"): 1,
    }
    for (method, outcome), count in expected.items():
        assert grew("smsledger_sippy_requests_total", method, outcome) == count, outcome
        assert grew("smsledger_sippy_request_duration_seconds_count", method, outcome) == count, (
            outcome
        )
    timed_out = grew("smsledger_sippy_request_duration_seconds_sum", "accountDebit", "timeout")
    assert 0.3 <= timed_out < 1.5  # the client's timeout, not the simulator's delay
    fast = {"method": "accountDebit", "outcome": "ok", "le": "0.25"}
    slow = {"method": "accountDebit", "outcome": "timeout", "le": "0.25"}
    assert (
        value(after, "smsledger_sippy_request_duration_seconds_bucket", **fast)
        - value(before, "smsledger_sippy_request_duration_seconds_bucket", **fast)
        == 1
    )
    assert value(after, "smsledger_sippy_request_duration_seconds_bucket", **slow) == value(
        before, "smsledger_sippy_request_duration_seconds_bucket", **slow
    )


def test_a_failing_observer_never_changes_a_charges_answer(
    sim: SimulatorHandle, clock: Clock
) -> None:
    def broken(method: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics backend gone")

    client = SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=2, observe=broken)
    assert client.debit(1001, Money.parse("1.00", "USD"), "o-1", clock()).status == "accepted"
    assert [p["notes"] for p in sim.state.payments(1001) if p["notes"] == "o-1"] == ["o-1"]


def test_the_workers_sippy_client_reports_to_the_metrics(sim: SimulatorHandle) -> None:
    config = Config(database_url="sqlite://", sippy_url=sim.xmlapi_url, sippy_username="u")
    client = context.sippy_client(config)
    assert client is not None and client.observe is observe_sippy


@pytest.fixture
def job_context() -> Iterator[None]:
    """The jobs' context as it was before the test (the test configures its own)."""
    before = list(context._current)
    yield
    context._current[:] = before


@pytest.mark.usefixtures("job_context")
def test_a_billing_cycle_is_counted_and_its_success_time_exported(
    api: ApiClient, sessions: sessionmaker[Session], clock: Clock
) -> None:
    before = samples(api.anonymous())
    context.configure(context.JobContext(sessions, clock, DEFAULTS))
    billing_cycle("weekly")
    after = samples(api.anonymous())
    labels = {"frequency": "weekly", "outcome": "ok"}
    assert (
        value(after, "smsledger_billing_cycles_total", **labels)
        - value(before, "smsledger_billing_cycles_total", **labels)
        == 1
    )
    assert (
        value(after, "smsledger_billing_cycle_last_success_timestamp_seconds", frequency="weekly")
        == clock().timestamp()
    )


@pytest.mark.usefixtures("job_context")
def test_a_failed_billing_cycle_is_counted_and_moves_no_success_time(
    api: ApiClient, sessions: sessionmaker[Session], clock: Clock
) -> None:
    def no_database() -> Session:
        raise ConnectionError("the database is gone")

    context.configure(context.JobContext(sessions, clock, DEFAULTS))
    billing_cycle("monthly")
    before = samples(api.anonymous())
    clock.now += timedelta(days=1)
    context.configure(context.JobContext(no_database, clock, DEFAULTS))
    assert billing_cycle("monthly")["errors"] == 1
    after = samples(api.anonymous())
    failed = {"frequency": "monthly", "outcome": "failed"}
    assert (
        value(after, "smsledger_billing_cycles_total", **failed)
        - value(before, "smsledger_billing_cycles_total", **failed)
        == 1
    )
    success = "smsledger_billing_cycle_last_success_timestamp_seconds"
    assert value(after, success, frequency="monthly") == value(before, success, frequency="monthly")


def test_open_and_stuck_charges_and_the_backlogs_are_counted_at_scrape(
    api: ApiClient, sessions: sessionmaker[Session], sim: SimulatorHandle, clock: Clock
) -> None:
    quiet = samples(api.anonymous())
    assert value(quiet, "smsledger_metrics_database_up") == 1
    assert value(quiet, "smsledger_charges_open") == value(quiet, "smsledger_charges_stuck") == 0
    for topic in ("charge_invoice", "refund_invoice"):
        assert value(quiet, "smsledger_outbox_pending", topic=topic) == 0
    assert value(quiet, "smsledger_webhooks_due") == 0

    load_rates(sessions)
    summary = bill_yesterday(sessions, clock())  # queues the charge, stores invoice_issued
    assert summary.charges_enqueued == 1
    clock.now += timedelta(minutes=3)
    waiting = samples(api.anonymous())
    assert value(waiting, "smsledger_outbox_pending", topic="charge_invoice") == 1
    assert (
        value(waiting, "smsledger_outbox_oldest_pending_age_seconds", topic="charge_invoice") == 180
    )
    assert (
        value(waiting, "smsledger_webhooks_pending")
        == value(waiting, "smsledger_webhooks_due")
        == 1
    )
    assert value(waiting, "smsledger_webhooks_oldest_due_age_seconds") == 180
    assert value(waiting, "smsledger_invoices", status="pending") == 1

    # Sippy applies the charge and answers too late: the attempt stays open (processing).
    sim.state.inject_fault(method="accountDebit", kind="timeout_after_apply", delay_s=2)
    client = SippyClient(
        sim.xmlapi_url, "smsledger", "secret", timeout_s=0.3, observe=observe_sippy
    )
    invoice_id = uuid.UUID(str(summary.invoice_ids[0]))
    assert charge_invoice(sessions, client, invoice_id, clock, DEFAULTS) == "unknown"
    clock.now += timedelta(minutes=5)
    fresh = samples(api.anonymous())
    assert value(fresh, "smsledger_invoices", status="processing") == 1
    assert value(fresh, "smsledger_charges_open") == 1
    assert value(fresh, "smsledger_charges_stuck") == 0
    assert value(fresh, "smsledger_charges_oldest_open_age_seconds") == 300
    clock.now += timedelta(minutes=15)
    stuck = samples(api.anonymous())
    assert value(stuck, "smsledger_charges_stuck") == 1
    assert value(stuck, "smsledger_charges_oldest_open_age_seconds") == 1200


@pytest.fixture
def down(api: ApiClient) -> Iterator[ApiClient]:
    """An app whose database refuses every connection (service key checked a moment ago on a
    live app, so the pre-send check reaches its view)."""
    assert api.as_role("service").get("/api/ledger/accounts").status_code in (200, 403)
    app = create_app(Config(database_url=_nothing_listens()), clock=Clock())
    app.config["TESTING"] = True
    client = ApiClient(app, api.keys)
    yield client
    client.dispose()


def test_a_scrape_answers_without_its_database_and_counts_checks_that_failed_open(
    down: ApiClient,
) -> None:
    before = samples(down.anonymous())
    assert value(before, "smsledger_metrics_database_up") == 0
    assert ("smsledger_charges_open", ()) not in before  # no figure rather than a false zero
    check = {"user_id": EVENT["user_id"], "message_count": 1, "destination": EVENT["destination"]}
    answer = down.as_role("service").post("/api/usage/check", check)
    assert answer.status_code == 503 and answer.json["allowed"] is True
    after = samples(down.anonymous())
    reason = {"reason": "database_unavailable"}
    assert (
        value(after, "smsledger_presend_fail_open_total", **reason)
        - value(before, "smsledger_presend_fail_open_total", **reason)
        == 1
    )
