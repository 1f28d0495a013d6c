"""Billing settings endpoints: global defaults from the environment, per-user overrides,
effective = global with overrides on top, validation, and the auth rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from billing.settings import BillingDefaults
from billing.tables import billing_settings
from infra.config import Config
from ledger.db import unit_of_work
from tests.client import ApiClient

pytestmark = pytest.mark.postgres

SETTINGS = "/api/admin/sms/billing-settings"


@pytest.fixture
def api(make_api: Callable[..., ApiClient], pg_url: str) -> ApiClient:
    """An app whose global defaults from the environment are weekly, in EUR."""
    config = Config(
        database_url=pg_url, billing=BillingDefaults(frequency="weekly", currency="EUR")
    )
    return make_api(config)


def test_global_defaults_are_seeded_from_the_environment(api: ApiClient) -> None:
    body = api.as_role("admin").get(SETTINGS, query_string={"includeGlobal": "true"}).json
    assert body["users"] == []
    assert body["global"]["frequency"] == "weekly" and body["global"]["currency"] == "EUR"
    assert body["global"]["notify_at_percent"] == 80 and body["global"]["threshold_amount"] is None


def test_user_overrides_sit_on_top_of_the_global_settings(api: ApiClient) -> None:
    admin = api.as_role("admin")
    put = admin.put(
        SETTINGS, {"userId": "42", "frequency": "threshold", "threshold_amount": "25.00"}
    )
    assert put.status_code == 200
    (user,) = put.json["users"]
    assert user["overrides"] == {"frequency": "threshold", "threshold_amount": "25.00"}
    assert user["effective"]["frequency"] == "threshold"
    assert user["effective"]["currency"] == "EUR"  # inherited
    admin.put(SETTINGS, {"credit_limit": "100", "currency": "USD"})  # global change shows through
    listed = admin.get(SETTINGS, query_string={"includeGlobal": "true"}).json
    assert listed["global"]["credit_limit"] == "100.00"
    (user,) = listed["users"]
    assert user["effective"]["credit_limit"] == "100.00" and user["effective"]["currency"] == "USD"
    one = admin.get(SETTINGS, query_string={"userId": "42"}).json
    assert "global" not in one and one["users"][0]["user_id"] == "42"
    dropped = admin.delete(SETTINGS, query_string={"userId": "42"})
    assert dropped.status_code == 200
    assert dropped.json["users"][0]["effective"]["frequency"] == "weekly"
    assert admin.get(SETTINGS).json["users"] == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"userId": "42", "frequency": "threshold"}, "invalid_settings"),
        ({"notify_at_percent": 0}, "validation_failed"),
        ({"notify_at_percent": 101}, "validation_failed"),
        ({"currency": "XYZ"}, "invalid_currency"),
        ({"frequency": "hourly"}, "validation_failed"),
        ({"threshold_amount": "1.0000001"}, "validation_failed"),
        ({"credit_limit": "-1"}, "invalid_settings"),
        ({"webhook_url": "ftp://x"}, "validation_failed"),
        ({"userId": "a:b", "frequency": "daily"}, "validation_failed"),
        ({"surprise": True}, "validation_failed"),
    ],
)
def test_invalid_settings_are_refused_and_nothing_is_stored(
    api: ApiClient, body: dict[str, Any], code: str
) -> None:
    admin = api.as_role("admin")
    admin.get(SETTINGS)  # seeds the global row
    response = admin.put(SETTINGS, body)
    assert (response.status_code, response.json["error"]["code"]) == (422, code)
    with unit_of_work(api.sessions) as session:
        scopes = session.execute(sa.select(billing_settings.c.scope)).scalars().all()
    assert scopes == ["*"]


def test_a_threshold_user_is_valid_when_the_threshold_comes_from_the_global_settings(
    api: ApiClient,
) -> None:
    admin = api.as_role("admin")
    admin.put(SETTINGS, {"threshold_messages": 1000})
    assert admin.put(SETTINGS, {"userId": "42", "frequency": "threshold"}).status_code == 200


def test_only_admins_manage_settings(api: ApiClient) -> None:
    for role in ("service", "accountant"):
        caller = api.as_role(role)
        assert caller.get(SETTINGS).status_code == 403
        assert caller.put(SETTINGS, {}).status_code == 403
    assert api.anonymous().delete(f"{SETTINGS}?userId=1").status_code == 401
