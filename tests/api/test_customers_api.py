"""Customers for admins (`/api/admin/customers`), and end users' notifications read with a user
token: the mapping of statuses, codes and bodies, and that a token only ever shows its own
user's data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest

from billing.notifications.store import store_notifications
from infra.config import Config
from ledger.db import unit_of_work
from tests.client import ApiClient
from tests.conftest import Clock

pytestmark = pytest.mark.postgres

USER_SECRET = "user-secret-of-at-least-32-bytes-long"


@pytest.fixture
def api(make_api: Callable[..., ApiClient], pg_url: str) -> ApiClient:
    return make_api(Config(database_url=pg_url, user_token_secret=USER_SECRET))


def create(api: ApiClient, **body: Any) -> Any:
    return api.as_role("admin").post("/api/admin/customers", body)


def test_an_admin_creates_a_customer_with_its_sippy_account(api: ApiClient) -> None:
    answer = create(api, user_id="42", name="Acme", sippy_account_id="1001", currency="USD")
    assert answer.status_code == 201
    assert answer.json == {
        "user_id": "42",
        "name": "Acme",
        "sippy_account_id": "1001",
        "currency": "USD",
        "status": "active",
        "webhook_url": None,
        "rate_plan": None,
        "created_at": "2026-11-24T12:00:00Z",
    }
    admin = api.as_role("admin")
    accounts = admin.get("/api/ledger/accounts/customer:42:receivable")
    assert accounts.status_code == 200 and accounts.json["currency"] == "USD"
    assert admin.get("/api/admin/customers/42").json["name"] == "Acme"


def test_the_currency_defaults_to_the_global_setting(api: ApiClient) -> None:
    assert create(api, user_id="7").json["currency"] == "USD"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"user_id": "42", "currency": "XYZ"}, 422, "invalid_currency"),
        ({"user_id": "42", "sippy_account_id": "acct-1"}, 422, "validation_failed"),
        ({"user_id": "42", "webhook_url": "ftp://example.org/x"}, 422, "validation_failed"),
        ({"user_id": "no spaces"}, 422, "validation_failed"),
        ({"name": "no id"}, 422, "validation_failed"),
        ({"user_id": "42", "status": "deleted"}, 422, "validation_failed"),
        ({"user_id": "42", "balance": "1.00"}, 422, "validation_failed"),
    ],
)
def test_bad_customers_are_refused_and_nothing_is_written(
    api: ApiClient, body: dict[str, Any], status: int, code: str
) -> None:
    answer = create(api, **body)
    assert (answer.status_code, answer.json["error"]["code"]) == (status, code)
    assert api.as_role("admin").get("/api/admin/customers").json["total"] == 0


def test_creating_a_taken_user_id_is_a_conflict(api: ApiClient) -> None:
    assert create(api, user_id="42").status_code == 201
    answer = create(api, user_id="42", name="again")
    assert (answer.status_code, answer.json["error"]["code"]) == (409, "customer_exists")


def test_patch_changes_the_sippy_account_status_name_and_webhook(api: ApiClient) -> None:
    create(api, user_id="42")
    admin = api.as_role("admin")
    answer = admin.patch(
        "/api/admin/customers/42",
        {
            "sippy_account_id": "1002",
            "status": "suspended",
            "name": "Acme Ltd",
            "webhook_url": "https://hooks.example.org/sms",
        },
    )
    assert answer.status_code == 200
    assert {k: answer.json[k] for k in ("sippy_account_id", "status", "name", "webhook_url")} == {
        "sippy_account_id": "1002",
        "status": "suspended",
        "name": "Acme Ltd",
        "webhook_url": "https://hooks.example.org/sms",
    }
    check = api.as_role("service").post("/api/usage/check", {"user_id": "42", "message_count": 1})
    assert check.json["allowed"] is False and check.json["reason"] == "customer_suspended"
    unchanged = admin.patch("/api/admin/customers/42", {})
    assert unchanged.status_code == 200 and unchanged.json["status"] == "suspended"


def test_patch_refuses_the_currency_and_unknown_customers(api: ApiClient) -> None:
    create(api, user_id="42")
    admin = api.as_role("admin")
    currency = admin.patch("/api/admin/customers/42", {"currency": "EUR"})
    assert currency.status_code == 422
    missing = admin.patch("/api/admin/customers/9", {"name": "x"})
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "customer_not_found")
    assert admin.get("/api/admin/customers/9").status_code == 404


def test_the_listing_filters_and_pages(api: ApiClient) -> None:
    for n in range(5):
        create(api, user_id=f"u{n}", name=f"Shop {n}", sippy_account_id=str(1000 + n))
    create(api, user_id="other_1", name="100% Other")
    admin = api.as_role("admin")
    admin.patch("/api/admin/customers/u1", {"status": "suspended"})
    listing = admin.get("/api/admin/customers?per_page=2&page=2").json
    assert (listing["total"], [c["user_id"] for c in listing["items"]]) == (6, ["u1", "u2"])
    suspended = admin.get("/api/admin/customers?status=suspended").json
    assert [c["user_id"] for c in suspended["items"]] == ["u1"]
    without = admin.get("/api/admin/customers?has_sippy_account=false").json
    assert [c["user_id"] for c in without["items"]] == ["other_1"]
    found = admin.get("/api/admin/customers?q=100%25").json
    assert [c["user_id"] for c in found["items"]] == ["other_1"]
    literal = admin.get("/api/admin/customers?q=r_1").json
    assert [c["user_id"] for c in literal["items"]] == ["other_1"]


def test_customers_are_for_admins_only(api: ApiClient) -> None:
    assert api.anonymous().get("/api/admin/customers").status_code == 401
    assert api.as_role("service").get("/api/admin/customers").status_code == 403


def notify(api: ApiClient, user: str, key: str, kind: str = "invoice_paid") -> None:
    with unit_of_work(api.sessions) as session:
        store_notifications(
            session,
            [
                {
                    "customer_id": user,
                    "kind": kind,
                    "dedupe_key": key,
                    "payload": {"invoice_id": key, "amount_micros": 20_000, "currency": "USD"},
                    "created_at": Clock().now,
                }
            ],
        )


def test_a_user_reads_only_their_own_notifications(api: ApiClient) -> None:
    create(api, user_id="42")
    create(api, user_id="43")
    notify(api, "42", "mine")
    notify(api, "42", "mine-failed", kind="payment_failed")
    notify(api, "43", "theirs")
    user = api.as_user("42")
    answer = user.get("/api/user/notifications")
    assert answer.status_code == 200 and answer.json["total"] == 2
    assert {n["data"]["invoice_id"] for n in answer.json["items"]} == {"mine", "mine-failed"}
    first = answer.json["items"][0]
    assert first["user_id"] == "42" and first["data"]["amount"] == "0.02"
    assert first["delivery_status"] == "pending"
    only = user.get("/api/user/notifications?type=payment_failed")
    assert [n["data"]["invoice_id"] for n in only.json["items"]] == ["mine-failed"]
    sneaky = user.get("/api/user/notifications?user_id=43")
    assert {n["user_id"] for n in sneaky.json["items"]} == {"42"}  # the token decides


def test_user_tokens_must_be_valid_signed_and_unexpired(api: ApiClient) -> None:
    create(api, user_id="42")
    expired = api.as_user("42", ttl=timedelta(seconds=-1))
    no_exp = jwt.encode({"sub": "42"}, USER_SECRET, algorithm="HS256")
    other_secret = "not-the-secret-but-also-32-bytes-long"
    wrong_key = jwt.encode({"sub": "42", "exp": 4102444800}, other_secret, algorithm="HS256")
    none_alg = jwt.encode({"sub": "42", "exp": 4102444800}, None, algorithm="none")
    bad_sub = jwt.encode({"sub": "a b", "exp": 4102444800}, USER_SECRET, algorithm="HS256")
    for caller in (
        api.anonymous(),
        expired,
        api.bearer(no_exp),
        api.bearer(wrong_key),
        api.bearer(none_alg),
        api.bearer(bad_sub),
        api.bearer("not.a.jwt"),
        api.as_role("admin"),
    ):
        answer = caller.get("/api/user/notifications")
        assert answer.status_code == 401, caller
        assert answer.json["error"]["code"] in ("unauthorized", "invalid_token")
