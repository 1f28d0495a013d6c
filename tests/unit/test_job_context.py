"""The worker's composition root: what `SIPPY_*`, the backoff and the grace become."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from billing.payments.sippy_client import SippyClient
from infra.config import Config
from jobs.context import from_config, sippy_client


def test_a_worker_context_is_built_from_the_configuration(tmp_path: Path) -> None:
    config = Config(
        database_url=f"sqlite:///{tmp_path}/x.db",
        sippy_url="http://127.0.0.1:9/xmlapi/xmlapi",
        sippy_username="smsledger",
        sippy_password="secret",
        sippy_in_flight_grace_s=90,
        retry_backoff_minutes=(5, 30),
        webhook_signing_secret="whsec",
    )
    context = from_config(config)
    assert isinstance(context.gateway, SippyClient) and context.sippy is context.gateway
    assert context.charge_policy.retry_backoff == (timedelta(minutes=5), timedelta(minutes=30))
    assert context.charge_policy.in_flight_grace == timedelta(seconds=90)
    assert context.webhook_secret == "whsec" and context.enqueue is None
    assert context.clock().tzinfo is not None


def test_without_a_sippy_url_there_is_no_gateway_and_charges_wait() -> None:
    assert sippy_client(Config()) is None


def test_without_sippy_the_payment_jobs_wait_and_claim_nothing(tmp_path: Path) -> None:
    """No gateway: nothing is claimed from the outbox, so the charges and refunds stay queued
    for when SIPPY_URL is set."""
    from jobs import context
    from jobs.payments import charge_invoice, dispatch_charges, refund_invoice

    before = list(context._current)
    context.configure(from_config(Config(database_url=f"sqlite:///{tmp_path}/x.db")))
    try:
        invoice = "00000000-0000-0000-0000-000000000001"
        assert charge_invoice(invoice) == "no_gateway"
        assert refund_invoice(invoice) == "no_gateway"
        assert dispatch_charges() == {"dispatched": 0}
    finally:
        context._current[:] = before


def test_a_job_that_raises_is_counted_as_failed_and_timed() -> None:
    import pytest
    from prometheus_client import REGISTRY

    from infra.metrics import timed_job

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"job": "unit-test-job"}) or 0.0

    before = sample("smsledger_job_failures_total")
    with pytest.raises(RuntimeError), timed_job("unit-test-job"):
        raise RuntimeError("boom")
    assert sample("smsledger_job_failures_total") == before + 1
    assert sample("smsledger_job_duration_seconds_count") == 1
