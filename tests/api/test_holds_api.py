"""Holds (two-phase usage): a reserving pre-send check sets the message's cost aside until its
post captures it, a release or a void frees it, or it expires; concurrent reserving checks can
never together overrun a credit limit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from billing.invoicing.summaries import billing_summary
from billing.settings import BillingDefaults, put_settings
from billing.tables import usage_holds
from infra.config import Config
from ledger.db import unit_of_work
from tests.client import ApiClient
from tests.conftest import NOW, Clock
from tests.scenarios import load_rates, sms

pytestmark = pytest.mark.postgres

GB = "+447400123456"  # 4474: 0.007 USD a segment


@pytest.fixture
def api(api: ApiClient) -> ApiClient:
    load_rates(api.sessions, NOW)
    return api


def limit(api: ApiClient, credit_limit: int, user: str = "42") -> None:
    with unit_of_work(api.sessions) as session:
        put_settings(session, user, {"credit_limit": credit_limit}, BillingDefaults(), NOW)


def reserve(api: ApiClient, message_id: str, user: str = "42", **extra: Any) -> Any:
    response = api.as_role("service").post(
        "/api/usage/check",
        {"user_id": user, "destination": GB, "reserve": True, "message_id": message_id, **extra},
    )
    assert response.status_code == 200, response.json
    return response.json


def plain_check(api: ApiClient, **extra: Any) -> Any:
    response = api.as_role("service").post("/api/usage/check", {"user_id": "42", **extra})
    assert response.status_code == 200, response.json
    return response.json


def held_rows(api: ApiClient) -> list[str]:
    with unit_of_work(api.sessions) as session:
        return list(session.execute(sa.select(usage_holds.c.message_id)).scalars())


def test_a_reserving_check_holds_the_price_the_post_will_take_until_the_post_captures_it(
    api: ApiClient,
) -> None:
    limit(api, 20_000)  # 0.02: room for two messages of 0.007, not three
    first = reserve(api, "m-1", segments=1)
    assert first["allowed"] is True and first["estimated_cost"] == "0.007"
    assert first["hold"] == {
        "status": "held",
        "message_id": "m-1",
        "amount": "0.007",
        "expires_at": (NOW + timedelta(seconds=300)).isoformat().replace("+00:00", "Z"),
    }
    assert first["held"] == "0.007" and first["unbilled"] == "0.00"
    assert reserve(api, "m-1")["held"] == "0.007"  # a replay holds nothing more
    assert reserve(api, "m-2")["held"] == "0.014"
    third = reserve(api, "m-3")
    assert (third["allowed"], third["reason"], third["hold"]) == (
        False,
        "credit_limit_exceeded",
        None,
    )
    assert plain_check(api)["held"] == "0.014"  # a plain check sees the holds, places none

    posted = api.as_role("service").post("/api/usage", sms("m-1", NOW))
    assert posted.status_code == 201
    after = plain_check(api)
    assert (after["unbilled"], after["held"]) == ("0.007", "0.007")  # captured: counted once
    assert sorted(held_rows(api)) == ["m-2"]
    assert reserve(api, "m-1")["hold"] == {
        "status": "posted",
        "message_id": None,
        "amount": None,
        "expires_at": None,
    }
    assert sorted(held_rows(api)) == ["m-2"]  # no hold for a message posted already
    with unit_of_work(api.sessions) as session:  # what the summary and the widget show
        assert billing_summary(session, "42", BillingDefaults(), NOW).held_micros == 7_000


def test_a_failed_send_releases_its_hold_by_delete_or_by_void(api: ApiClient) -> None:
    limit(api, 10_000)
    reserve(api, "m-1")
    assert reserve(api, "m-2")["allowed"] is False
    service = api.as_role("service")
    released = service.delete("/api/usage/holds/m-1")
    assert released.status_code == 200
    assert released.json == {
        "message_id": "m-1",
        "user_id": "42",
        "status": "released",
        "amount": "0.007",
        "currency": "USD",
    }
    again = service.delete("/api/usage/holds/m-1")
    assert again.status_code == 404 and again.json["error"]["code"] == "hold_not_found"
    assert reserve(api, "m-2")["allowed"] is True
    voided = service.post("/api/usage/m-2/void", {})
    assert voided.status_code == 201
    assert (voided.json["status"], voided.json["usage"], voided.json["reversal"]) == (
        "released",
        None,
        None,
    )
    assert held_rows(api) == [] and plain_check(api)["held"] == "0.00"
    gone = service.post("/api/usage/m-2/void", {})
    assert gone.status_code == 404 and gone.json["error"]["code"] == "usage_not_found"


def test_an_uncaptured_hold_expires_after_the_ttl(make_api: Any, pg_url: str, clock: Clock) -> None:
    from dataclasses import replace

    config = Config(database_url=pg_url)
    api = make_api(replace(config, billing=replace(config.billing, hold_ttl_seconds=60)))
    load_rates(api.sessions, NOW)
    limit(api, 10_000)
    assert reserve(api, "m-1")["allowed"] is True
    assert reserve(api, "m-2")["allowed"] is False
    clock.now = NOW + timedelta(seconds=59)
    assert reserve(api, "m-2")["allowed"] is False
    clock.now = NOW + timedelta(seconds=60)
    assert plain_check(api)["held"] == "0.00"
    assert reserve(api, "m-2")["allowed"] is True
    again = reserve(api, "m-1")  # its hold expired: decided again, and the room is m-2's
    assert again["allowed"] is False and again["hold"] is None


def test_a_hold_refused_on_a_replay_is_released(api: ApiClient) -> None:
    limit(api, 10_000)
    assert reserve(api, "m-1")["allowed"] is True
    limit(api, 5_000)  # lowered below the hold
    assert reserve(api, "m-1")["allowed"] is False
    assert held_rows(api) == []


def test_another_users_message_id_is_a_conflict(api: ApiClient) -> None:
    reserve(api, "m-1", user="42")
    taken = api.as_role("service").post(
        "/api/usage/check",
        {"user_id": "43", "destination": GB, "reserve": True, "message_id": "m-1"},
    )
    assert taken.status_code == 409 and taken.json["error"]["code"] == "hold_conflict"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"reserve": True, "destination": GB}, "message_id", "required"),
        (
            {"reserve": True, "message_id": "m", "message_count": 2, "destination": GB},
            "message_count",
            "invalid_message_count",
        ),
        ({"reserve": True, "message_id": "m"}, "destination", "required"),
        ({"reserve": "yes", "message_id": "m", "destination": GB}, "reserve", "invalid_type"),
        (
            {"reserve": True, "message_id": "", "destination": GB},
            "message_id",
            "invalid_message_id",
        ),
        ({"segments": 0}, "segments", "invalid_segments"),
        (
            {"reserve": True, "message_id": "m", "destination": "+80012345678"},
            "destination",
            "unpriceable_destination",
        ),
    ],
)
def test_a_reserving_check_that_cannot_name_or_price_its_message_is_refused(
    api: ApiClient, body: dict[str, Any], field: str, code: str
) -> None:
    response = api.as_role("service").post("/api/usage/check", {"user_id": "42", **body})
    assert response.status_code == 422, response.json
    errors = response.json["error"]["details"]["errors"]
    assert {(e["field"], e["code"]) for e in errors} == {(field, code)}
    assert held_rows(api) == []


@pytest.mark.parametrize(
    ("clients", "headroom", "cost"), [(40, 130_000, 7_000), (24, 21_000, 7_000)]
)
def test_concurrent_reserving_checks_allow_exactly_what_the_headroom_holds(
    api: ApiClient, clients: int, headroom: int, cost: int
) -> None:
    """N parallel reserving checks of cost c with headroom H: exactly floor(H / c) allowed."""
    api.as_role("service").post("/api/usage", sms("earlier", NOW))  # 0.007 unbilled already
    limit(api, 7_000 + headroom)
    start = threading.Barrier(clients)
    callers = [api.as_role("service") for _ in range(clients)]

    def one(index: int) -> bool:
        start.wait()
        response = callers[index].post(
            "/api/usage/check",
            {"user_id": "42", "destination": GB, "reserve": True, "message_id": f"c-{index}"},
        )
        assert response.status_code == 200, response.json
        return bool(response.json["allowed"])

    with ThreadPoolExecutor(clients) as pool:
        allowed = sum(pool.map(one, range(clients)))
    assert allowed == headroom // cost
    assert len(held_rows(api)) == headroom // cost
    assert plain_check(api)["held"] == f"{(headroom // cost) * cost / 1e6:.3f}"
