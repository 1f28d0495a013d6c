"""The cron endpoint and `smsledger bill`: secret checked in constant time, the summary of
Appendix A, and the SPEC §12 log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from infra.config import Config
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import load_rates, sms

pytestmark = pytest.mark.postgres

CRON = "/api/cron/process-sms-billing"


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 24, 0, 30, tzinfo=UTC))


@pytest.fixture
def api(make_api: Callable[..., ApiClient], pg_url: str, clock: Clock) -> ApiClient:
    """One SMS of user 42 on 23 Nov; the clock at 02:00 on the 24th, when the daily close is due."""
    api = make_api(Config(database_url=pg_url, cron_secret="s3cret"))
    load_rates(api.sessions, clock())
    event = sms("m1", "2026-11-23T10:00:00Z")
    assert api.as_role("service").post("/api/usage", event).status_code == 201
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    return api


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer s3cre", "Basic s3cret"])
def test_a_wrong_or_missing_secret_is_401(api: ApiClient, header: str | None) -> None:
    response = api.with_authorization(header).post(f"{CRON}?type=daily")
    assert (response.status_code, response.json["error"]["code"]) == (401, "unauthorized")


def test_a_cycle_answers_its_summary_and_logs_it(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smsledger.billing")
    cron = api.as_cron()
    response = cron.post(f"{CRON}?type=daily")
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
    again = cron.post(f"{CRON}?type=daily").json
    assert again["invoices_created"] == 0
    bad = cron.post(f"{CRON}?type=hourly")
    assert (bad.status_code, bad.json["error"]["code"]) == (422, "validation_failed")


def test_the_cli_runs_the_same_cycle(api: ApiClient) -> None:
    result = api.app.test_cli_runner().invoke(args=["bill", "--type", "daily"])
    assert result.exit_code == 0, result.output
    assert "1 invoice(s)" in result.output
    again = api.app.test_cli_runner().invoke(args=["bill", "--type", "daily"])
    assert "0 invoice(s)" in again.output


def test_a_cycle_whose_job_queue_is_down_still_answers_what_it_committed(
    make_api: Callable[..., ApiClient], pg_url: str, clock: Clock
) -> None:
    """Redis unreachable: the invoices and their outbox rows are committed, the after-commit
    kick fails, and the caller still learns what was made (the sweep charges it later)."""
    nothing_listens = "redis://127.0.0.1:1/0"
    api = make_api(Config(database_url=pg_url, cron_secret="s3cret", redis_url=nothing_listens))
    load_rates(api.sessions, clock())
    assert (
        api.as_role("service").post("/api/usage", sms("m1", "2026-11-23T10:00:00Z")).status_code
        == 201
    )
    clock.now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)

    response = api.as_cron().post(f"{CRON}?type=daily")

    assert response.status_code == 200
    assert response.json["invoices_created"] == 1 and response.json["charges_enqueued"] == 1
    assert response.json["dispatch"] == "deferred"
    again = api.as_cron().post(f"{CRON}?type=daily")
    assert again.status_code == 200 and again.json["invoices_created"] == 0
    (record,) = api.as_role("admin").get("/api/admin/sms/billing").json["items"]
    processed = api.as_role("admin").post(
        "/api/admin/sms/billing", {"billingId": record["id"], "action": "process"}
    )
    assert processed.status_code == 200 and processed.json["dispatch"] == "deferred"
