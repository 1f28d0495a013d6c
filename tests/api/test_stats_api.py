"""Billing statistics for admins, against a scenario whose figures are known."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.customers import update_customer
from billing.payments.charge_runner import charge_invoice
from billing.payments.charging import ChargePolicy
from billing.tables import invoices
from infra.config import Config
from ledger.db import unit_of_work
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import DEFAULTS, at, close, load_rates, post, rows, sms

pytestmark = pytest.mark.postgres


class Accepts:
    def debit(self, *args: Any) -> Any:
        from billing.payments.sippy_client import ChargeOutcome

        return ChargeOutcome("accepted")

    def find_debit(self, *args: Any) -> None:
        return None


def test_stats_count_invoices_payments_users_and_countries(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    clock = Clock(at(2026, 11, 24, 3))
    api = make_api(Config(database_url=pg_url), clock)
    sessions = api.sessions
    load_rates(sessions)
    sent = at(2026, 11, 23, 12)
    post(
        sessions,
        at(2026, 11, 23, 13),
        *(sms(f"a{n}", sent, user="big") for n in range(5)),
        *(sms(f"b{n}", sent, user="small", destination="+12025550123") for n in range(2)),
    )
    close(sessions, "daily", at(2026, 11, 24, 2))
    with unit_of_work(sessions) as session:
        update_customer(session, "big", clock(), sippy_account_id="1001")
    by_user = {row.customer_id: row.id for row in rows(sessions, invoices)}
    charge_invoice(sessions, Accepts(), by_user["big"], clock, DEFAULTS, ChargePolicy())
    charge_invoice(sessions, Accepts(), by_user["small"], clock, DEFAULTS, ChargePolicy())

    admin = api.as_role("admin")
    answer = admin.get(
        "/api/admin/sms/billing-stats?from=2026-11-23T00:00:00Z&to=2026-11-25T00:00:00Z"
    )
    assert answer.status_code == 200
    stats = answer.json
    assert stats["invoices"]["total"] == 2
    assert stats["invoices"]["by_status"]["paid"] == {"count": 1, "amounts": {"USD": "0.04"}}
    assert stats["invoices"]["by_status"]["failed"]["count"] == 1  # no Sippy account
    assert stats["success_rate"] == 50.0
    assert stats["frequencies"] == {"daily": 2}
    assert stats["failed_payments"]["count"] == 1
    (failure,) = stats["failed_payments"]["latest"]
    assert failure["user_id"] == "small" and failure["code"] == "no_sippy_account"
    assert [(u["user_id"], u["messages"]) for u in stats["high_volume_users"]] == [
        ("big", 5),
        ("small", 2),
    ]
    countries = {c["country"]: (c["messages"], c["amount"]) for c in stats["usage_by_country"]}
    assert countries == {"GB": (5, "0.035"), "US": (2, "0.012")}
    top_one = admin.get("/api/admin/sms/billing-stats?top=1&to=2026-11-25T00:00:00Z")
    assert [u["user_id"] for u in top_one.json["high_volume_users"]] == ["big"]
    empty = admin.get(
        "/api/admin/sms/billing-stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z"
    ).json
    assert empty["invoices"]["total"] == 0 and empty["success_rate"] is None
    backwards = admin.get(
        "/api/admin/sms/billing-stats?from=2026-11-25T00:00:00Z&to=2026-11-23T00:00:00Z"
    )
    assert backwards.status_code == 422
    assert api.as_role("service").get("/api/admin/sms/billing-stats").status_code == 403
