"""End users' summary and history (Appendix A) with their token: the figures equal the ledger's
balances and the invoices for a generated scenario, and a token only ever shows its user."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

import pytest

from infra.config import Config
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import at, load_rates

pytestmark = pytest.mark.postgres

SECRET = "user-token-secret-of-at-least-32-bytes"
DESTINATIONS = ("+447400123456", "+12025550123", "+4915112345678", "+33612345678")


@pytest.fixture
def clock() -> Clock:
    return Clock(at(2026, 11, 23, 8))


@pytest.fixture
def api(make_api: Callable[..., ApiClient], pg_url: str) -> ApiClient:
    """An app with user tokens and the cron enabled, and the sample rates."""
    api = make_api(Config(database_url=pg_url, user_token_secret=SECRET, cron_secret="c"))
    load_rates(api.sessions)
    return api


def send(api: ApiClient, user: str, count: int, seed: int) -> None:
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
    assert api.as_role("service").post("/api/usage", {"events": events}).status_code == 201


def test_the_summary_equals_the_ledger_and_the_invoices(api: ApiClient, clock: Clock) -> None:
    send(api, "42", 37, seed=1)
    send(api, "43", 5, seed=2)
    clock.now = at(2026, 11, 24, 2)
    closed = api.as_cron().post("/api/cron/process-sms-billing?type=daily")
    assert closed.json["invoices_created"] == 2
    clock.now = at(2026, 11, 24, 9)
    send(api, "42", 11, seed=3)

    summary = api.as_user("42").get("/api/user/billing-summary")
    assert summary.status_code == 200
    body = summary.json
    admin = api.as_role("admin")
    unbilled = admin.get("/api/ledger/accounts/customer:42:unbilled").json["balance"]
    assert Decimal(body["usage"]["amount"]) == Decimal(unbilled)
    assert len(body["usage"]["amount"].split(".")[1]) >= 4
    assert body["usage"]["messages"] == 11
    (invoice,) = admin.get("/api/admin/sms/billing?userId=42").json["items"]
    assert body["pending_billings"] == {"count": 1, "amount": invoice["amount"]}
    receivable = admin.get("/api/ledger/accounts/customer:42:receivable").json["balance"]
    assert Decimal(receivable) == Decimal(invoice["amount"])
    assert body["last_invoice"]["id"] == invoice["id"]
    assert body["frequency"] == "daily" and body["next_billing_at"] == "2026-11-25T02:00:00Z"
    assert body["period_start"] == "2026-11-24T00:00:00Z"
    assert body["limits"] == {"amount": None, "messages": None, "percent_used": None}

    history = api.as_user("42").get("/api/user/billing-history").json
    (item,) = history["items"]
    assert item["id"] == invoice["id"] and item["message_count"] == 37
    assert sum(line["messages"] for line in item["breakdown"]) == 37
    assert sum(Decimal(line["amount"]) for line in item["breakdown"]) == Decimal(invoice["usage"])
    assert {line["country"] for line in item["breakdown"]} <= {"GB", "US", "DE", "FR"}
    assert api.as_user("42").get("/api/user/billing-history?status=paid").json["total"] == 0


def test_thresholds_show_percent_used(api: ApiClient) -> None:
    put = api.as_role("admin").put(
        "/api/admin/sms/billing-settings",
        {"userId": "7", "frequency": "threshold", "threshold_messages": 40},
    )
    assert put.status_code == 200
    send(api, "7", 10, seed=4)
    body = api.as_user("7").get("/api/user/billing-summary").json
    assert body["limits"] == {"amount": None, "messages": 40, "percent_used": 25.0}
    assert body["next_billing_at"] is None


def test_a_token_shows_only_its_own_user(api: ApiClient) -> None:
    send(api, "42", 3, seed=5)
    send(api, "43", 4, seed=6)
    assert api.as_user("43").get("/api/user/billing-summary").json["usage"]["messages"] == 4
    assert api.as_user("42").get("/api/user/billing-summary?user_id=43").json["user_id"] == "42"
    unknown = api.as_user("nobody").get("/api/user/billing-summary")
    assert (unknown.status_code, unknown.json["error"]["code"]) == (404, "customer_not_found")
    assert api.anonymous().get("/api/user/billing-history").status_code == 401
    assert api.as_role("admin").get("/api/user/billing-summary").status_code == 401
