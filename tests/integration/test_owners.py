"""Billing-owned transfers change only through their owners (DESIGN invariant 10): the generic
ledger reversal refuses usage, invoice, rounding and settlement transfers and names the owner's
action; voiding, cancelling and refunding move the billing state with the ledger. Every public
path is tried, then billing state and the ledger must agree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.customers import update_customer
from jobs.payments import dispatch_charges, refund_invoice
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import billing_disagreements, charge_at_once, charging_config, load_rates, sms

pytestmark = pytest.mark.postgres

RECORDS = "/api/admin/sms/billing"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))


@pytest.fixture
def api(
    make_api: Callable[..., ApiClient],
    pg_url: str,
    clock: Clock,
    start_sim: Callable[..., SimulatorHandle],
) -> Iterator[ApiClient]:
    """User 42 with Sippy account 1001; charges run at once against the simulator."""
    sim = start_sim(clock=clock)
    api = make_api(charging_config(pg_url, sim))
    load_rates(api.sessions, datetime(2026, 1, 1, tzinfo=UTC))
    charge_at_once(api, sim)
    state = api.runtime
    state.extras["sim"] = sim
    assert api.as_role("service").post("/api/usage", sms("first", clock())).status_code == 201
    with unit_of_work(api.sessions) as session:
        update_customer(session, "42", clock(), sippy_account_id="1001")
    yield api
    state.extras.pop("dispatch_charges")


def agree(api: ApiClient) -> None:
    with unit_of_work(api.sessions) as session:
        assert billing_disagreements(session, "42") == []
        assert check_ledger(session) == []


def transfer_of(api: ApiClient, kind: str, detail: dict[str, Any]) -> str:
    return next(t["id"] for t in detail["transfers"] if t["kind"] == kind)


def reverse(api: ApiClient, transfer_id: str, key: str) -> Any:
    return api.as_role("admin").post(
        f"/api/ledger/transfers/{transfer_id}/reverse", {"idempotency_key": key}
    )


def summary_messages(api: ApiClient) -> int:
    found: int = api.as_user("42").get("/api/user/billing-summary").json["usage"]["messages"]
    return found


def test_a_usage_transfer_is_voided_by_its_owner_not_by_the_generic_reversal(
    api: ApiClient,
) -> None:
    service = api.as_role("service")
    assert service.post("/api/usage", sms("second", api.runtime.clock())).status_code == 201
    assert summary_messages(api) == 2
    replay = service.post("/api/usage", sms("second", api.runtime.clock())).json
    usage_id = replay["results"][0]["transfer_id"]

    refused = reverse(api, usage_id, "by-hand")
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "billing_owned_transfer"
    assert "POST /api/usage/second/void" in refused.json["error"]["message"]
    agree(api)

    voided = service.post("/api/usage/second/void", {"reason": "send failed"})
    assert voided.status_code == 201 and voided.json["status"] == "voided"
    assert voided.json["reversal"]["kind"] == "reversal"
    assert summary_messages(api) == 1
    again = service.post("/api/usage/second/void", {})
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert again.json["reversal"]["id"] == voided.json["reversal"]["id"]
    assert summary_messages(api) == 1
    unknown = service.post("/api/usage/never-sent/void", {})
    assert (unknown.status_code, unknown.json["error"]["code"]) == (404, "usage_not_found")
    agree(api)


def test_invoice_and_settlement_transfers_are_refused_and_their_owners_act(
    api: ApiClient, clock: Clock
) -> None:
    admin = api.as_role("admin")
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert (
        api.as_cron().post("/api/cron/process-sms-billing?type=daily").json["invoices_created"] == 1
    )
    (record,) = admin.get(RECORDS).json["items"]
    detail = admin.get(f"{RECORDS}/{record['id']}").json
    assert detail["status"] == "paid"  # charged at once through the simulator

    for kind, action in (("invoice", "cancel the invoice"), ("settlement", "refund the invoice")):
        refused = reverse(api, transfer_of(api, kind, detail), f"by-hand-{kind}")
        assert refused.status_code == 409, kind
        assert refused.json["error"]["code"] == "billing_owned_transfer"
        assert action in refused.json["error"]["message"]
    agree(api)

    # A manual entry is still reversed by the generic path.
    entry = admin.post(
        "/api/ledger/transfers",
        {
            "kind": "adjustment",
            "idempotency_key": "goodwill-1",
            "transfers": [
                {
                    "debit_account": "adjustments:USD",
                    "credit_account": "customer:42:receivable",
                    "amount": "1.00",
                }
            ],
        },
    )
    assert entry.status_code == 201, entry.json
    undone = reverse(api, entry.json["transfers"][0]["id"], "goodwill-1-undo")
    assert undone.status_code == 201
    agree(api)


def test_a_cancelled_invoice_agrees_with_the_ledger_and_its_reversal_is_refused(
    api: ApiClient, clock: Clock
) -> None:
    api.runtime.extras.pop("dispatch_charges")
    with unit_of_work(api.sessions) as session:
        update_customer(session, "42", clock(), sippy_account_id=None)
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    admin = api.as_role("admin")
    (record,) = admin.get(RECORDS).json["items"]
    cancelled = admin.post(RECORDS, {"billingId": record["id"], "action": "cancel"})
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    detail = admin.get(f"{RECORDS}/{record['id']}").json
    for transfer in detail["transfers"]:
        refused = reverse(api, transfer["id"], f"by-hand-{transfer['id']}")
        assert refused.status_code == 409, transfer["kind"]
        assert refused.json["error"]["code"] == "billing_owned_transfer"
    agree(api)
    api.runtime.extras["dispatch_charges"] = dispatch_charges


def paid_invoice(api: ApiClient, clock: Clock) -> dict[str, Any]:
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    (record,) = api.as_role("admin").get(RECORDS).json["items"]
    assert record["status"] == "paid"
    return record


def credits(sim: SimulatorHandle) -> list[dict[str, Any]]:
    return [p for p in sim.state.payments(1001) if p["type"] == "credit"]


def refund_with_fault(
    api: ApiClient, clock: Clock, **fault: Any
) -> tuple[SimulatorHandle, dict[str, Any]]:
    """A paid invoice whose refund an admin asked for, with `fault` waiting at accountCredit."""
    sim: SimulatorHandle = api.runtime.extras["sim"]
    record = paid_invoice(api, clock)
    sim.state.inject_fault(method="accountCredit", **fault)
    refund = {"billingId": record["id"], "action": "refund"}
    assert api.as_role("admin").post(RECORDS, refund).status_code == 200
    return sim, record


def test_a_paid_invoice_is_refunded_in_sippy_once_and_undone_in_the_ledger(
    api: ApiClient, clock: Clock
) -> None:
    sim: SimulatorHandle = api.runtime.extras["sim"]
    record = paid_invoice(api, clock)
    admin = api.as_role("admin")
    refunded = admin.post(RECORDS, {"billingId": record["id"], "action": "refund"})
    assert refunded.status_code == 200, refunded.json
    detail = admin.get(f"{RECORDS}/{record['id']}").json
    assert detail["status"] == "refunded"
    (credit,) = credits(sim)
    assert credit["notes"].startswith(f"smsledger-refund:{record['id']}:")
    assert credit["amount"] == Decimal(detail["amount"])
    kinds = sorted(t["kind"] for t in detail["transfers"])
    assert kinds.count("reversal") == 3  # settlement, invoice and rounding undone
    again = admin.post(RECORDS, {"billingId": record["id"], "action": "refund"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "invalid_state")
    for transfer in detail["transfers"]:
        assert reverse(api, transfer["id"], f"x-{transfer['id']}").status_code == 409
    assert len(credits(sim)) == 1
    agree(api)
    # The debit did happen in Sippy: a refunded invoice still reconciles with it.
    run = api.as_role("accountant").post(
        "/api/reconciliation/runs",
        {"from": "2026-11-24T00:00:00Z", "to": "2026-11-25T00:00:00Z", "source": "sippy"},
    )
    assert run.status_code == 201, run.json
    assert run.json["status"] == "reconciled", run.json["items"]


def test_a_refund_sippy_applied_without_answering_is_found_and_never_given_twice(
    api: ApiClient, clock: Clock
) -> None:
    sim, record = refund_with_fault(api, clock, kind="timeout_after_apply", delay_s=6)
    admin = api.as_role("admin")
    assert admin.get(f"{RECORDS}/{record['id']}").json["status"] == "paid"  # no answer yet
    assert len(credits(sim)) == 1  # Sippy applied it
    clock.now += timedelta(minutes=3)  # past the in-flight grace: the sweep looks it up
    dispatch_charges()
    assert admin.get(f"{RECORDS}/{record['id']}").json["status"] == "refunded"
    dispatch_charges()
    assert len(credits(sim)) == 1
    agree(api)


def test_a_billed_message_voided_is_credited_on_the_next_invoice(
    api: ApiClient, clock: Clock
) -> None:
    """The invoice that billed it stands as issued (and paid); the next one is smaller."""
    record = paid_invoice(api, clock)
    service, admin = api.as_role("service"), api.as_role("admin")
    credited = service.post("/api/usage/first/void", {"reason": "never delivered"})
    assert credited.status_code == 201, credited.json
    assert credited.json["status"] == "credited" and credited.json["reversal"] is None
    assert credited.json["billed_on"] == record["id"]
    again = service.post("/api/usage/first/void", {})
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    agree(api)
    for n in range(3):
        sent = datetime(2026, 11, 24, 9, n, tzinfo=UTC)
        assert service.post("/api/usage", sms(f"next-{n}", sent)).status_code == 201
    clock.now = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    detail = admin.get(f"{RECORDS}?userId=42").json["items"][0]
    assert detail["id"] != record["id"] and detail["message_count"] == 3
    full = admin.get(f"{RECORDS}/{detail['id']}").json
    key = f"credit:{detail['id']}"
    credit = next(t for t in full["transfers"] if t["idempotency_key"] == key)
    assert credit["amount"] == "0.007" and credit["debit_account"] == "revenue:sms:USD"
    assert Decimal(detail["usage"]) - Decimal(credit["amount"]) == Decimal(
        detail["amount"]
    ) + Decimal(detail["rounding"])
    agree(api)
    refused = reverse(api, credit["id"], "undo-credit")
    assert refused.status_code == 409 and detail["id"] in refused.json["error"]["message"]


def test_late_usage_of_a_period_whose_invoice_was_cancelled_is_invoiced_again(
    api: ApiClient, clock: Clock
) -> None:
    """Found by the seeded simulation (seed 201): the new invoice took the cancelled one's
    period start, hit the unique key, and the whole cycle failed for every customer."""
    api.runtime.extras.pop("dispatch_charges")
    with unit_of_work(api.sessions) as session:
        update_customer(session, "42", clock(), sippy_account_id=None)
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    admin = api.as_role("admin")
    (cancelled,) = admin.get(RECORDS).json["items"]
    assert (
        admin.post(RECORDS, {"billingId": cancelled["id"], "action": "cancel"}).status_code == 200
    )
    late = sms("late", datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
    assert api.as_role("service").post("/api/usage", late).status_code == 201

    again = api.as_cron().post("/api/cron/process-sms-billing?type=daily").json
    assert (again["errors"], again["invoices_created"]) == (0, 1)
    records = {r["status"]: r for r in admin.get(RECORDS).json["items"]}
    assert records["pending"]["period_start"] == cancelled["period_start"]
    assert records["pending"]["message_count"] == 1  # only the late one: the rest is written off
    agree(api)
    api.runtime.extras["dispatch_charges"] = dispatch_charges


def test_a_refund_sippy_declines_leaves_the_invoice_paid_and_can_be_asked_again(
    api: ApiClient, clock: Clock
) -> None:
    sim, record = refund_with_fault(api, clock, kind="fault", fault_code=423)
    admin = api.as_role("admin")
    assert admin.get(f"{RECORDS}/{record['id']}").json["status"] == "paid"
    assert credits(sim) == []
    agree(api)
    assert admin.post(RECORDS, {"billingId": record["id"], "action": "refund"}).status_code == 200
    assert admin.get(f"{RECORDS}/{record['id']}").json["status"] == "refunded"
    assert len(credits(sim)) == 1  # the declined one was looked up again first: absent
    agree(api)


def test_a_refund_lost_in_transport_is_looked_up_then_asked_again_and_credited_once(
    api: ApiClient, clock: Clock
) -> None:
    sim, record = refund_with_fault(api, clock, kind="reset")
    admin = api.as_role("admin")
    assert refund_invoice(record["id"]) == "in_flight"  # unanswered, still within the grace
    clock.now += timedelta(minutes=3)
    assert refund_invoice(record["id"]) == "not_applied"  # looked up: Sippy never took it
    assert credits(sim) == []
    dispatch_charges()  # the new request is sent
    assert admin.get(f"{RECORDS}/{record['id']}").json["status"] == "refunded"
    assert len(credits(sim)) == 1
    assert refund_invoice(record["id"]) == "refunded"  # nothing left to do
    assert refund_invoice("00000000-0000-0000-0000-000000000000") == "unknown_invoice"
    agree(api)
