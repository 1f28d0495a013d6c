"""The SMS service's endpoints: shapes of Appendix A, error codes, nothing written on refusal,
roles, the pre-send decision's reasons, and failing open."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api import create_app
from billing.customers import update_customer
from billing.settings import BillingDefaults, put_settings
from billing.tables import customers, invoices
from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.config import Config
from ledger.db import unit_of_work
from ledger.tables import transfers
from tests.conftest import NOW, Clock, build_app

pytestmark = pytest.mark.postgres

SAMPLE_RATES = Path(__file__).resolve().parents[2] / "examples" / "rates.csv"
EVENT = {
    "message_id": "msg-0001",
    "user_id": "42",
    "destination": "+447400123456",
    "segments": 1,
    "sent_at": "2026-11-24T10:00:00Z",
}


class Client:
    def __init__(self, app: Any, keys: dict[str, str]) -> None:
        self.app, self.keys, self.http = app, keys, app.test_client()
        self.sessions = app.extensions["smsledger"].sessions

    def post(self, path: str, body: Any = None, role: str | None = "service", **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        if body is not None:
            kwargs["json"] = body
        return self.http.post(path, headers=headers, **kwargs)

    def rows(self) -> tuple[int, int]:
        with unit_of_work(self.sessions) as session:
            return (
                session.execute(sa.select(sa.func.count()).select_from(transfers)).scalar_one(),
                session.execute(sa.select(sa.func.count()).select_from(customers)).scalar_one(),
            )


@pytest.fixture
def client(app_and_keys: tuple[Any, dict[str, str]]) -> Client:
    app, keys = app_and_keys
    c = Client(app, keys)
    with unit_of_work(c.sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), NOW)
    return c


def test_posting_one_sms_answers_the_documented_shape(client: Client) -> None:
    response = client.post("/api/usage", EVENT)
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
    replay = client.post("/api/usage", EVENT)
    assert replay.status_code == 200
    assert replay.json["results"][0] == {**result, "status": "duplicate"}
    assert (replay.json["posted"], replay.json["duplicates"]) == (0, 1)


def test_a_batch_mixes_new_and_replayed_events(client: Client) -> None:
    client.post("/api/usage", EVENT)
    batch = {"events": [EVENT, {**EVENT, "message_id": "msg-0002", "destination": "+12025550123"}]}
    response = client.post("/api/usage", batch)
    assert response.status_code == 201
    assert [r["status"] for r in response.json["results"]] == ["duplicate", "posted"]
    assert response.json["results"][1]["amount"] == "0.006"


def test_a_conflicting_replay_is_409_and_writes_nothing(client: Client) -> None:
    client.post("/api/usage", EVENT)
    before = client.rows()
    batch = {"events": [{**EVENT, "message_id": "new", "user_id": "99"}, {**EVENT, "segments": 2}]}
    response = client.post("/api/usage", batch)
    assert (response.status_code, response.json["error"]["code"]) == (409, "idempotency_conflict")
    assert response.json["error"]["details"]["index"] == 1
    assert client.rows() == before


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
    client: Client, change: dict[str, Any], field: str, code: str
) -> None:
    client.post("/api/usage", {**EVENT, "message_id": "seed"})  # user 42 exists, in USD
    before = client.rows()
    batch = {"events": [{**EVENT, "message_id": "ok", "user_id": "fresh"}, {**EVENT, **change}]}
    response = client.post("/api/usage", batch)
    assert (response.status_code, response.json["error"]["code"]) == (422, "validation_failed")
    (error,) = response.json["error"]["details"]["errors"]
    assert (error["index"], error["field"], error["code"]) == (1, field, code)
    assert client.rows() == before


def test_an_oversized_batch_is_refused(client: Client) -> None:
    events = [{**EVENT, "message_id": f"m{n}"} for n in range(10_001)]
    response = client.post("/api/usage", {"events": events})
    assert response.status_code == 422
    assert response.json["error"]["details"]["errors"][0]["code"] == "batch_too_large"
    assert client.rows() == (0, 0)


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
    client: Client, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/api/usage", **kwargs)
    assert (response.status_code, response.json["error"]["code"]) == (status, code)
    assert client.rows() == (0, 0)


@pytest.mark.parametrize("path", ["/api/usage", "/api/usage/check"])
def test_only_the_service_role_may_post_usage_or_ask(client: Client, path: str) -> None:
    body = EVENT if path == "/api/usage" else {"user_id": "42", "message_count": 1}
    assert client.post(path, body, role=None).status_code == 401
    for role in ("admin", "accountant"):
        response = client.post(path, body, role=role)
        assert (response.status_code, response.json["error"]["code"]) == (403, "forbidden")
    assert client.rows() == (0, 0)


def test_unknown_users_are_refused_when_provisioning_is_off(pg_url: str) -> None:
    app, keys = build_app(
        pg_url,
        Clock(),
        Config(database_url=pg_url, billing=BillingDefaults(auto_create_customers=False)),
    )
    c = Client(app, keys)
    response = c.post("/api/usage", EVENT)
    assert (response.status_code, response.json["error"]["code"]) == (422, "unknown_customer")
    app.extensions["smsledger"].engine.dispose()


def check(client: Client, **body: Any) -> Any:
    response = client.post("/api/usage/check", {"user_id": "42", "message_count": 1, **body})
    assert response.status_code == 200, response.json
    return response.json


def settings(client: Client, **values: Any) -> None:
    with unit_of_work(client.sessions) as session:
        put_settings(session, "42", values, BillingDefaults(), NOW)


def add_invoice(client: Client, status: str, days: int) -> None:
    with unit_of_work(client.sessions) as session:
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


def test_the_check_answers_the_documented_shape(client: Client) -> None:
    client.post("/api/usage", {**EVENT, "segments": 2})
    settings(client, credit_limit=50_000_000)
    body = check(client, total_cost="0.0075", country="GB", prefix="4477")
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
    }


def test_an_unknown_user_may_send_under_the_global_defaults(client: Client) -> None:
    body = check(client)
    assert body["allowed"] is True and body["unbilled"] == "0.00"
    assert client.rows() == (0, 0)


def test_the_credit_limit_counts_this_sends_cost(client: Client) -> None:
    client.post("/api/usage", EVENT)  # 0.007 unbilled
    settings(client, credit_limit=10_000)  # 0.01
    assert check(client, total_cost="0.003")["allowed"] is True
    blocked = check(client, total_cost="0.0031")
    assert (blocked["allowed"], blocked["should_block"], blocked["reason"]) == (
        False,
        True,
        "credit_limit_exceeded",
    )
    priced = check(client, destination="+447400123456", message_count=1)  # rated: 0.007
    assert priced["reason"] == "credit_limit_exceeded" and priced["estimated_cost"] == "0.007"


def test_a_suspended_customer_is_blocked(client: Client) -> None:
    client.post("/api/usage", EVENT)
    with unit_of_work(client.sessions) as session:
        update_customer(session, "42", NOW, status="suspended")
    assert check(client)["reason"] == "customer_suspended"


def test_pending_billings_block_under_manual_approval(client: Client) -> None:
    client.post("/api/usage", EVENT)
    settings(client, require_manual_approval=True)
    assert check(client)["allowed"] is True
    add_invoice(client, "pending", 0)
    body = check(client)
    assert (body["reason"], body["pending_billings"]) == ("pending_billings_require_approval", 1)


def test_too_many_unpaid_invoices_block(client: Client) -> None:
    client.post("/api/usage", EVENT)
    settings(client, max_pending_invoices=2)
    add_invoice(client, "failed", 0)
    assert check(client)["allowed"] is True
    add_invoice(client, "processing", 1)
    assert check(client)["reason"] == "max_pending_invoices"
    add_invoice(client, "paid", 2)
    assert check(client)["pending_billings"] == 2


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
    client: Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/usage/check", body)
    assert (response.status_code, response.json["error"]["code"]) == (422, "validation_failed")
    assert response.json["error"]["details"]["errors"][0]["field"] == field


def test_the_check_fails_open_when_the_engine_is_down() -> None:
    dead = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
    broken = create_app(Config(database_url=dead), clock=Clock())
    response = broken.test_client().post(
        "/api/usage/check",
        json={"user_id": "42", "message_count": 1},
        headers={"Authorization": "Bearer sk_anything"},
    )
    assert response.status_code == 503
    assert response.json["allowed"] is True
    assert response.json["error"]["code"] == "billing_unavailable"
