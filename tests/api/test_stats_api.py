"""Billing statistics for admins, against a scenario whose figures are known."""

from __future__ import annotations

from typing import Any

import pytest

from billing.customers import update_customer
from billing.payments.charging import ChargePolicy, charge_invoice
from billing.tables import invoices
from infra.config import Config
from ledger.db import unit_of_work
from tests.conftest import Clock, build_app
from tests.scenarios import DEFAULTS, at, close, load_rates, post, rows, sms

pytestmark = pytest.mark.postgres


class Accepts:
    def debit(self, *args: Any) -> Any:
        from billing.payments.sippy_client import ChargeOutcome

        return ChargeOutcome("accepted")

    def find_debit(self, *args: Any) -> None:
        return None


def test_stats_count_invoices_payments_users_and_countries(pg_url: str) -> None:
    clock = Clock(at(2026, 11, 24, 3))
    app, keys = build_app(pg_url, clock, Config(database_url=pg_url))
    sessions = app.extensions["smsledger"].sessions
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

    client = app.test_client()
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    answer = client.get(
        "/api/admin/sms/billing-stats?from=2026-11-23T00:00:00Z&to=2026-11-25T00:00:00Z",
        headers=admin,
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
    top_one = client.get(
        "/api/admin/sms/billing-stats?top=1&to=2026-11-25T00:00:00Z", headers=admin
    )
    assert [u["user_id"] for u in top_one.json["high_volume_users"]] == ["big"]
    empty = client.get(
        "/api/admin/sms/billing-stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z",
        headers=admin,
    ).json
    assert empty["invoices"]["total"] == 0 and empty["success_rate"] is None
    backwards = client.get(
        "/api/admin/sms/billing-stats?from=2026-11-25T00:00:00Z&to=2026-11-23T00:00:00Z",
        headers=admin,
    )
    assert backwards.status_code == 422
    service = {"Authorization": f"Bearer {keys['service']}"}
    assert client.get("/api/admin/sms/billing-stats", headers=service).status_code == 403
    app.extensions["smsledger"].engine.dispose()
