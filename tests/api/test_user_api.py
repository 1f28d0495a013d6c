"""End users' summary and history (Appendix A) with their token: the figures equal the ledger's
balances and the invoices for a generated scenario, and a token only ever shows its user."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.access.user_tokens import mint_user_token
from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.config import Config
from ledger.db import unit_of_work
from tests.conftest import Clock, build_app
from tests.scenarios import SAMPLE_RATES, at

pytestmark = pytest.mark.postgres

SECRET = "user-token-secret-of-at-least-32-bytes"
DESTINATIONS = ("+447400123456", "+12025550123", "+4915112345678", "+33612345678")


@pytest.fixture
def world(pg_url: str) -> Any:
    clock = Clock(at(2026, 11, 23, 8))
    app, keys = build_app(
        pg_url, clock, Config(database_url=pg_url, user_token_secret=SECRET, cron_secret="c")
    )
    with unit_of_work(app.extensions["smsledger"].sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), at(2026, 1, 1))
    client = app.test_client()
    client.clock, client.keys = clock, keys  # type: ignore[attr-defined]
    yield client
    app.extensions["smsledger"].engine.dispose()


def send(client: Any, user: str, count: int, seed: int) -> None:
    chooser = random.Random(seed)
    events = [
        {
            "message_id": f"{user}-{seed}-{n}",
            "user_id": user,
            "destination": chooser.choice(DESTINATIONS),
            "segments": chooser.randint(1, 3),
        }
        for n in range(count)
    ]
    service = {"Authorization": f"Bearer {client.keys['service']}"}
    assert client.post("/api/usage", json={"events": events}, headers=service).status_code == 201


def as_user(client: Any, user: str, path: str) -> Any:
    token = mint_user_token(SECRET, user, datetime.now(UTC), timedelta(hours=1))
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def admin(client: Any, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {client.keys['admin']}"}).json


def test_the_summary_equals_the_ledger_and_the_invoices(world: Any) -> None:
    send(world, "42", 37, seed=1)
    send(world, "43", 5, seed=2)
    world.clock.now = at(2026, 11, 24, 2)
    closed = world.post(
        "/api/cron/process-sms-billing?type=daily", headers={"Authorization": "Bearer c"}
    )
    assert closed.json["invoices_created"] == 2
    world.clock.now = at(2026, 11, 24, 9)
    send(world, "42", 11, seed=3)

    summary = as_user(world, "42", "/api/user/billing-summary")
    assert summary.status_code == 200
    body = summary.json
    unbilled = admin(world, "/api/ledger/accounts/customer:42:unbilled")["balance"]
    assert Decimal(body["usage"]["amount"]) == Decimal(unbilled)
    assert len(body["usage"]["amount"].split(".")[1]) >= 4
    assert body["usage"]["messages"] == 11
    (invoice,) = admin(world, "/api/admin/sms/billing?userId=42")["items"]
    assert body["pending_billings"] == {"count": 1, "amount": invoice["amount"]}
    receivable = admin(world, "/api/ledger/accounts/customer:42:receivable")["balance"]
    assert Decimal(receivable) == Decimal(invoice["amount"])
    assert body["last_invoice"]["id"] == invoice["id"]
    assert body["frequency"] == "daily" and body["next_billing_at"] == "2026-11-25T02:00:00Z"
    assert body["period_start"] == "2026-11-24T00:00:00Z"
    assert body["limits"] == {"amount": None, "messages": None, "percent_used": None}

    history = as_user(world, "42", "/api/user/billing-history").json
    (item,) = history["items"]
    assert item["id"] == invoice["id"] and item["message_count"] == 37
    assert sum(line["messages"] for line in item["breakdown"]) == 37
    assert sum(Decimal(line["amount"]) for line in item["breakdown"]) == Decimal(invoice["usage"])
    assert {line["country"] for line in item["breakdown"]} <= {"GB", "US", "DE", "FR"}
    assert as_user(world, "42", "/api/user/billing-history?status=paid").json["total"] == 0


def test_thresholds_show_percent_used(world: Any) -> None:
    put = world.put(
        "/api/admin/sms/billing-settings",
        json={"userId": "7", "frequency": "threshold", "threshold_messages": 40},
        headers={"Authorization": f"Bearer {world.keys['admin']}"},
    )
    assert put.status_code == 200
    send(world, "7", 10, seed=4)
    body = as_user(world, "7", "/api/user/billing-summary").json
    assert body["limits"] == {"amount": None, "messages": 40, "percent_used": 25.0}
    assert body["next_billing_at"] is None


def test_a_token_shows_only_its_own_user(world: Any) -> None:
    send(world, "42", 3, seed=5)
    send(world, "43", 4, seed=6)
    assert as_user(world, "43", "/api/user/billing-summary").json["usage"]["messages"] == 4
    assert as_user(world, "42", "/api/user/billing-summary?user_id=43").json["user_id"] == "42"
    unknown = as_user(world, "nobody", "/api/user/billing-summary")
    assert (unknown.status_code, unknown.json["error"]["code"]) == (404, "customer_not_found")
    assert world.get("/api/user/billing-history").status_code == 401
    admin_key = {"Authorization": f"Bearer {world.keys['admin']}"}
    assert world.get("/api/user/billing-summary", headers=admin_key).status_code == 401
