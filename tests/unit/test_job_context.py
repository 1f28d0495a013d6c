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
