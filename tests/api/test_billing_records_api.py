"""Billing records for admins: listing with filters and pagination, one invoice with its lines
and transfers, and the actions (process, approve, retry, cancel) with their state rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from billing.customers import update_customer
from billing.settings import put_settings
from billing.tables import invoices, outbox
from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.config import Config
from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import SAMPLE_RATES, charge_at_once, sms

pytestmark = pytest.mark.postgres

RECORDS = "/api/admin/sms/billing"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 0, 30, tzinfo=UTC))


@pytest.fixture
def api(make_api: Callable[..., ApiClient], pg_url: str, clock: Clock) -> ApiClient:
    """Two SMS of user 42 and one of "manual" (who needs manual approval) on 23 Nov, closed at
    02:00 into two pending invoices."""
    api = make_api(Config(database_url=pg_url, cron_secret="s"))
    with unit_of_work(api.sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), clock())
        put_settings(
            session,
            "manual",
            {"require_manual_approval": True},
            api.runtime.config.billing,
            clock(),
        )
    service = api.as_role("service")
    for user, sent in (
        ("42", "2026-11-23T10:00:00Z"),
        ("42", "2026-11-23T11:00:00Z"),
        ("manual", "2026-11-23T12:00:00Z"),
    ):
        assert service.post("/api/usage", sms(f"{user}-{sent}", sent, user=user)).status_code == 201
    clock.now = datetime(2026, 11, 24, 2, tzinfo=UTC)
    closed = api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    assert closed.json["invoices_created"] == 2
    return api


def invoice_of(api: ApiClient, user: str) -> dict[str, Any]:
    items = api.as_role("admin").get(RECORDS).json["items"]
    return next(i for i in items if i["user_id"] == user)


def test_records_list_with_filters_and_the_documented_shape(api: ApiClient) -> None:
    admin = api.as_role("admin")
    page = admin.get(RECORDS).json
    assert (page["page"], page["per_page"], page["total"]) == (1, 50, 2)
    record = invoice_of(api, "42")
    assert {
        k: record[k]
        for k in (
            "user_id",
            "status",
            "frequency",
            "message_count",
            "amount",
            "currency",
            "attempts",
        )
    } == {
        "user_id": "42",
        "status": "pending",
        "frequency": "daily",
        "message_count": 2,
        "amount": "0.01",
        "currency": "USD",
        "attempts": 0,
    }
    assert (
        record["period_start"] == "2026-11-23T00:00:00Z"
        and record["period_end"] == "2026-11-24T00:00:00Z"
    )
    assert admin.get(RECORDS, query_string={"userId": "manual"}).json["total"] == 1
    assert admin.get(RECORDS, query_string={"status": "failed"}).json["total"] == 0
    assert admin.get(RECORDS, query_string={"from": "2026-11-24T00:00:00Z"}).json["total"] == 0
    assert admin.get(RECORDS, query_string={"per_page": 1, "page": 2}).json["items"][0]["id"]
    assert admin.get(RECORDS, query_string={"status": "lost"}).status_code == 422


def test_one_record_carries_lines_and_ledger_transfers(api: ApiClient) -> None:
    admin = api.as_role("admin")
    record = invoice_of(api, "42")
    detail = admin.get(f"{RECORDS}/{record['id']}").json
    assert detail["lines"] == [
        {"country": "GB", "prefix": "4474", "messages": 2, "segments": 2, "amount": "0.014"}
    ]
    assert {t["kind"] for t in detail["transfers"]} == {"invoice", "rounding"}
    assert detail["usage"] == "0.014" and detail["rounding"] == "0.004"
    assert detail["settings"]["rounding"].startswith("ROUND_HALF_UP") and detail["rate_ids"]
    assert detail["payment_attempts"] == []
    accountant = api.as_role("accountant").get(f"{RECORDS}/{record['id']}")
    assert accountant.status_code == 200
    assert (
        admin.get(f"{RECORDS}/00000000-0000-0000-0000-000000000000").json["error"]["code"]
        == "invoice_not_found"
    )


def test_approving_a_manual_invoice_queues_its_charge_once(api: ApiClient) -> None:
    admin = api.as_role("admin")
    manual = invoice_of(api, "manual")
    assert manual["approved_at"] is None
    approved = admin.post(RECORDS, {"billingId": manual["id"], "action": "approve"})
    assert approved.status_code == 200 and approved.json["approved_at"] == "2026-11-24T02:00:00Z"
    again = admin.post(RECORDS, {"billingId": manual["id"], "action": "approve"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "invalid_state")
    with unit_of_work(api.sessions) as session:
        keys = session.execute(sa.select(outbox.c.key)).scalars().all()
    assert sorted(keys) == sorted(
        [f"charge:{invoice_of(api, '42')['id']}:1", f"charge:{manual['id']}:1"]
    )


def test_retry_needs_a_failed_invoice(api: ApiClient) -> None:
    admin = api.as_role("admin")
    record = invoice_of(api, "42")
    refused = admin.post(RECORDS, {"billingId": record["id"], "action": "retry"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "invalid_state")
    with unit_of_work(api.sessions) as session:
        session.execute(
            sa.update(invoices)
            .where(invoices.c.id == record["id"])
            .values(status="failed", attempts=1)
        )
    retried = admin.post(RECORDS, {"billingId": record["id"], "action": "retry"})
    assert retried.json["status"] == "pending"
    with unit_of_work(api.sessions) as session:
        assert (
            f"charge:{record['id']}:2" in session.execute(sa.select(outbox.c.key)).scalars().all()
        )


def test_cancelling_reverses_the_invoice_and_writes_the_usage_off(api: ApiClient) -> None:
    admin = api.as_role("admin")
    record = invoice_of(api, "42")
    cancelled = admin.post(RECORDS, {"billingId": record["id"], "action": "cancel"})
    assert cancelled.json["status"] == "cancelled"
    with unit_of_work(api.sessions) as session:
        assert account_balance(session, "customer:42:receivable").balance == 0
        assert account_balance(session, "customer:42:unbilled").balance == 0
        assert account_balance(session, "adjustments:USD").balance == 14_000
        assert check_ledger(session) == []
    kinds = sorted(t["kind"] for t in admin.get(f"{RECORDS}/{record['id']}").json["transfers"])
    assert kinds == ["adjustment", "invoice", "reversal", "reversal", "rounding"]
    assert admin.post(RECORDS, {"billingId": record["id"], "action": "cancel"}).status_code == 409


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"billingId": "nope"}, 422),
        ({"billingId": "00000000-0000-0000-0000-000000000000"}, 404),
        ({"billingId": "00000000-0000-0000-0000-000000000000", "action": "pay"}, 422),
    ],
)
def test_bad_actions_are_refused(api: ApiClient, body: dict[str, Any], status: int) -> None:
    assert api.as_role("admin").post(RECORDS, body).status_code == status


def test_only_admins_list_and_act(api: ApiClient) -> None:
    for role in ("service", "accountant"):
        caller = api.as_role(role)
        assert caller.get(RECORDS).status_code == 403
        assert caller.post(RECORDS, {}).status_code == 403


def test_processing_now_approves_and_queues_the_charge(api: ApiClient) -> None:
    admin = api.as_role("admin")
    manual = invoice_of(api, "manual")
    processed = admin.post(RECORDS, {"billingId": manual["id"]})  # action defaults to process
    assert processed.status_code == 200 and processed.json["approved_at"] is not None
    with unit_of_work(api.sessions) as session:
        assert (
            f"charge:{manual['id']}:1" in session.execute(sa.select(outbox.c.key)).scalars().all()
        )


def test_processing_now_charges_in_sippy_and_the_record_shows_the_attempt(
    api: ApiClient, start_sim: Callable[..., SimulatorHandle]
) -> None:
    """As in the embedded mode: the action's commit wakes the charge dispatch at once."""
    admin = api.as_role("admin")
    state = api.runtime
    sim = start_sim(clock=state.clock)
    try:
        charge_at_once(api, sim)
        manual = invoice_of(api, "manual")
        with unit_of_work(api.sessions) as session:
            update_customer(session, "manual", state.clock(), sippy_account_id="1001")
        assert admin.post(RECORDS, {"billingId": manual["id"]}).status_code == 200
        detail = admin.get(f"{RECORDS}/{manual['id']}").json
        assert detail["status"] == "paid" and detail["next_retry_at"] is None
        (attempt,) = detail["payment_attempts"]
        assert attempt["status"] == "accepted" and attempt["amount"] == "0.01"
        assert attempt["reference"] == f"smsledger:{manual['id']}:{attempt['id']}"
        assert "settlement" in {t["kind"] for t in detail["transfers"]}
        (payment,) = sim.state.payments(1001)
        assert payment["notes"] == attempt["reference"]
        # The customer "42" had no Sippy account: an admin-visible failure, not a crash.
        failed = admin.get(f"{RECORDS}?status=failed").json["items"]
        assert [r["user_id"] for r in failed] == ["42"]
        assert failed[0]["last_error"].startswith("no_sippy_account")
    finally:
        state.extras.pop("dispatch_charges")
