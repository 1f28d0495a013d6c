"""The cron endpoint and `smsledger bill`: secret checked in constant time, the summary of
Appendix A, and the SPEC §12 log lines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from billing.usage.rate_sheets import add_rates, parse_sheet
from infra.config import Config
from ledger.db import unit_of_work
from tests.conftest import Clock, build_app

pytestmark = pytest.mark.postgres

SAMPLE_RATES = Path(__file__).resolve().parents[2] / "examples" / "rates.csv"


@pytest.fixture
def app(pg_url: str) -> Any:
    from datetime import UTC, datetime

    clock = Clock(datetime(2026, 11, 24, 0, 30, tzinfo=UTC))
    app, keys = build_app(pg_url, clock, Config(database_url=pg_url, cron_secret="s3cret"))
    app.clock = clock
    with unit_of_work(app.extensions["smsledger"].sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), clock())
    client = app.test_client()
    event = {
        "message_id": "m1",
        "user_id": "42",
        "destination": "+447400123456",
        "segments": 1,
        "sent_at": "2026-11-23T10:00:00Z",
    }
    assert (
        client.post(
            "/api/usage", json=event, headers={"Authorization": f"Bearer {keys['service']}"}
        ).status_code
        == 201
    )
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    yield app
    app.extensions["smsledger"].engine.dispose()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer s3cre", "Basic s3cret"])
def test_a_wrong_or_missing_secret_is_401(app: Any, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = app.test_client().post("/api/cron/process-sms-billing?type=daily", headers=headers)
    assert (response.status_code, response.json["error"]["code"]) == (401, "unauthorized")


def test_a_cycle_answers_its_summary_and_logs_it(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smsledger.billing")
    client = app.test_client()
    headers = {"Authorization": "Bearer s3cret"}
    response = client.post("/api/cron/process-sms-billing?type=daily", headers=headers)
    assert response.status_code == 200
    body = response.json
    assert {
        k: body[k]
        for k in (
            "type",
            "periods_closed",
            "invoices_created",
            "charges_enqueued",
            "skipped",
            "errors",
        )
    } == {
        "type": "daily",
        "periods_closed": 1,
        "invoices_created": 1,
        "charges_enqueued": 1,
        "skipped": 0,
        "errors": 0,
    }
    assert isinstance(body["duration_ms"], int)
    messages = [r.getMessage() for r in caplog.records]
    assert "Processing SMS billing" in messages and "SMS Billing Process Summary" in messages
    summary = next(r for r in caplog.records if r.getMessage() == "SMS Billing Process Summary")
    assert summary.invoices_created == 1  # type: ignore[attr-defined]
    again = client.post("/api/cron/process-sms-billing?type=daily", headers=headers).json
    assert again["invoices_created"] == 0
    bad = client.post("/api/cron/process-sms-billing?type=hourly", headers=headers)
    assert (bad.status_code, bad.json["error"]["code"]) == (422, "validation_failed")


def test_the_cli_runs_the_same_cycle(app: Any) -> None:
    result = app.test_cli_runner().invoke(args=["bill", "--type", "daily"])
    assert result.exit_code == 0, result.output
    assert "1 invoice(s)" in result.output
    again = app.test_cli_runner().invoke(args=["bill", "--type", "daily"])
    assert "0 invoice(s)" in again.output
