"""The SMS service's endpoints: shapes of Appendix A, error codes, nothing written on refusal,
roles, the pre-send decision's reasons, and failing open."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from api import create_app
from billing.customers import update_customer
from billing.settings import BillingDefaults, put_settings
from billing.tables import customers, invoices
from infra.config import Config
from ledger.db import unit_of_work
from ledger.tables import transfers
from tests.client import ApiClient
from tests.conftest import NOW, Clock
from tests.scenarios import load_rates, sms

pytestmark = pytest.mark.postgres

# User 42, one segment to +447400123456 (GB, prefix 4474: 0.007 USD).
EVENT = sms("msg-0001", "2026-11-24T10:00:00Z")


@pytest.fixture
def api(api: ApiClient) -> ApiClient:
    """The shared client, with the sample rates loaded."""
    load_rates(api.sessions, NOW)
    return api


def rows(api: ApiClient) -> tuple[int, int]:
    """How many transfers and customers there are."""
    with unit_of_work(api.sessions) as session:
        return (
            session.execute(sa.select(sa.func.count()).select_from(transfers)).scalar_one(),
            session.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one(),
        )


def test_posting_one_sms_answers_the_documented_shape(api: ApiClient) -> None:
    service = api.as_role("service")
    response = service.post("/api/usage", EVENT)
    assert response.status_code == 201
    body = response.json
    assert (body["posted"], body["duplicates"]) == (1, 0)
    (result,) = body["results"]
    assert result == {
        "message_id": "msg-0001",
        "status": "posted",
        "transfer_id": result["transfer_id"],
        "amount": "0.007",
        "currency": "USD",
        "country": "GB",
        "prefix": "4474",
        "segments": 1,
    }
    uuid.UUID(result["transfer_id"])
    replay = service.post("/api/usage", EVENT)
    assert replay.status_code == 200
    assert replay.json["results"][0] == {**result, "status": "duplicate"}
    assert (replay.json["posted"], replay.json["duplicates"]) == (0, 1)


def test_a_batch_mixes_new_and_replayed_events(api: ApiClient) -> None:
    service = api.as_role("service")
    service.post("/api/usage", EVENT)
    batch = {"events": [EVENT, {**EVENT, "message_id": "msg-0002", "destination": "+12025550123"}]}
    response = service.post("/api/usage", batch)
    assert response.status_code == 201
    assert [r["status"] for r in response.json["results"]] == ["duplicate", "posted"]
    assert response.json["results"][1]["amount"] == "0.006"


def test_a_conflicting_replay_is_409_and_writes_nothing(api: ApiClient) -> None:
    service = api.as_role("service")
    service.post("/api/usage", EVENT)
    before = rows(api)
    batch = {"events": [{**EVENT, "message_id": "new", "user_id": "99"}, {**EVENT, "segments": 2}]}
    response = service.post("/api/usage", batch)
    assert (response.status_code, response.json["error"]["code"]) == (409, "idempotency_conflict")
    assert response.json["error"]["details"]["index"] == 1
    assert rows(api) == before


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"destination": "+44123"}, "destination", "invalid_destination"),
        ({"segments": 0}, "segments", "invalid_segments"),
        ({"cost": "0.0000001"}, "cost", "too_many_decimals"),
        ({"currency": "EUR"}, "currency", "currency_mismatch"),
        ({"destination": "+61412345678"}, "destination", "unpriceable_destination"),
    ],
)
def test_any_invalid_event_refuses_the_batch_with_its_index(
    api: ApiClient, change: dict[str, Any], field: str, code: str
) -> None:
    service = api.as_role("service")
    service.post("/api/usage", {**EVENT, "message_id": "seed"})  # user 42 exists, in USD
    before = rows(api)
    batch = {"events": [{**EVENT, "message_id": "ok", "user_id": "fresh"}, {**EVENT, **change}]}
    response = service.post("/api/usage", batch)
    assert (response.status_code, response.json["error"]["code"]) == (422, "validation_failed")
    (error,) = response.json["error"]["details"]["errors"]
    assert (error["index"], error["field"], error["code"]) == (1, field, code)
    assert rows(api) == before


def test_an_oversized_batch_is_refused(api: ApiClient) -> None:
    events = [{**EVENT, "message_id": f"m{n}"} for n in range(10_001)]
    response = api.as_role("service").post("/api/usage", {"events": events})
    assert response.status_code == 422
    assert response.json["error"]["details"]["errors"][0]["code"] == "batch_too_large"
    assert rows(api) == (0, 0)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "{oops", "content_type": "application/json"}, 400, "malformed_json"),
        ({"json": "just a string"}, 422, "validation_failed"),
        ({"json": {"events": "no"}}, 422, "validation_failed"),
        ({"json": {"events": [], "extra": 1}}, 422, "validation_failed"),
        ({"json": {"events": []}}, 422, "validation_failed"),
        ({"data": "x=1", "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_are_refused(
    api: ApiClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = api.as_role("service").post("/api/usage", **kwargs)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert rows(api) == (0, 0)


@pytest.mark.parametrize("path", ["/api/usage", "/api/usage/check"])
def test_only_the_service_role_may_post_usage_or_ask(api: ApiClient, path: str) -> None:
    body = EVENT if path == "/api/usage" else {"user_id": "42", "message_count": 1}
    assert api.anonymous().post(path, body).status_code == 401
    for role in ("admin", "accountant"):
        response = api.as_role(role).post(path, body)
        assert (response.status_code, response.json["error"]["code"]) == (403, "forbidden")
    assert rows(api) == (0, 0)


def test_unknown_users_are_refused_when_provisioning_is_off(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    api = make_api(
        Config(database_url=pg_url, billing=BillingDefaults(auto_create_customers=False))
    )
    response = api.as_role("service").post("/api/usage", EVENT)
    assert (response.status_code, response.json["error"]["code"]) == (422, "unknown_customer")


def check(api: ApiClient, **body: Any) -> Any:
    response = api.as_role("service").post(
        "/api/usage/check", {"user_id": "42", "message_count": 1, **body}
    )
    assert response.status_code == 200, response.json
    return response.json


def settings(api: ApiClient, **values: Any) -> None:
    with unit_of_work(api.sessions) as session:
        put_settings(session, "42", values, BillingDefaults(), NOW)


def add_invoice(api: ApiClient, status: str, days: int) -> None:
    with unit_of_work(api.sessions) as session:
        session.execute(
            sa.insert(invoices).values(
                id=uuid.uuid4(),
                customer_id="42",
                status=status,
                frequency="daily",
                period_start=NOW.replace(day=1 + days),
                period_end=NOW.replace(day=2 + days),
                currency="USD",
                amount_micros=1_000_000,
                created_at=NOW,
            )
        )


def test_the_check_answers_the_documented_shape(api: ApiClient) -> None:
    api.as_role("service").post("/api/usage", {**EVENT, "segments": 2})
    settings(api, credit_limit=50_000_000)
    body = check(api, total_cost="0.0075", country="GB", prefix="4477")
    assert body == {
        "allowed": True,
        "should_block": False,
        "reason": None,
        "message": body["message"],
        "currency": "USD",
        "unbilled": "0.014",
        "limit": "50.00",
        "percent_used": Decimal("0.03"),
        "pending_billings": 0,
        "pending_amount": "0.00",
        "estimated_cost": "0.0075",
        "held": "0.00",
        "hold": None,
    }


def test_an_unknown_user_may_send_under_the_global_defaults(api: ApiClient) -> None:
    body = check(api)
    assert body["allowed"] is True and body["unbilled"] == "0.00"
    assert rows(api) == (0, 0)


def test_the_credit_limit_counts_this_sends_cost(api: ApiClient) -> None:
    api.as_role("service").post("/api/usage", EVENT)  # 0.007 unbilled
    settings(api, credit_limit=10_000)  # 0.01
    assert check(api, total_cost="0.003")["allowed"] is True
    blocked = check(api, total_cost="0.0031")
    assert (blocked["allowed"], blocked["should_block"], blocked["reason"]) == (
        False,
        True,
        "credit_limit_exceeded",
    )
    priced = check(api, destination="+447400123456", message_count=1)  # rated: 0.007
    assert priced["reason"] == "credit_limit_exceeded" and priced["estimated_cost"] == "0.007"


def test_a_suspended_customer_is_blocked(api: ApiClient) -> None:
    api.as_role("service").post("/api/usage", EVENT)
    with unit_of_work(api.sessions) as session:
        update_customer(session, "42", NOW, status="suspended")
    assert check(api)["reason"] == "customer_suspended"


def test_pending_billings_block_under_manual_approval(api: ApiClient) -> None:
    api.as_role("service").post("/api/usage", EVENT)
    settings(api, require_manual_approval=True)
    assert check(api)["allowed"] is True
    add_invoice(api, "pending", 0)
    body = check(api)
    assert (body["reason"], body["pending_billings"]) == ("pending_billings_require_approval", 1)


def test_too_many_unpaid_invoices_block(api: ApiClient) -> None:
    api.as_role("service").post("/api/usage", EVENT)
    settings(api, max_pending_invoices=2)
    add_invoice(api, "failed", 0)
    assert check(api)["allowed"] is True
    add_invoice(api, "processing", 1)
    assert check(api)["reason"] == "max_pending_invoices"
    add_invoice(api, "paid", 2)
    assert check(api)["pending_billings"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "42", "message_count": 0}, "message_count"),
        ({"user_id": "", "message_count": 1}, "user_id"),
        ({"user_id": "42", "total_cost": "0.0000001"}, "total_cost"),
        ({"user_id": "42", "destination": "+1"}, "destination"),
        ({"user_id": "42", "surprise": True}, "surprise"),
    ],
)
def test_a_bad_check_is_422_with_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    response = api.as_role("service").post("/api/usage/check", body)
    assert (response.status_code, response.json["error"]["code"]) == (422, "validation_failed")
    assert response.json["error"]["details"]["errors"][0]["field"] == field


def test_the_check_fails_open_when_the_engine_is_down() -> None:
    dead = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
    broken = ApiClient(create_app(Config(database_url=dead), clock=Clock()), keys={})
    response = broken.bearer("sk_anything").post(
        "/api/usage/check", {"user_id": "42", "message_count": 1}
    )
    assert response.status_code == 503
    assert response.json["allowed"] is True
    assert response.json["error"]["code"] == "billing_unavailable"
