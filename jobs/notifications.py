"""Notification jobs: deliver due webhooks, one batch per run."""

from __future__ import annotations

import logging

from billing.notifications.delivery_runner import deliver_due
from infra.logs import warn_once
from infra.metrics import DELIVERIES, timed_job
from jobs.context import current

log = logging.getLogger("smsledger.webhooks")


def deliver_notifications() -> dict[str, int]:
    """Deliver a batch of due notifications; counts by outcome."""
    context = current()
    if not context.webhook_secret:
        warn_once(log, "WEBHOOK_SIGNING_SECRET is not set: webhooks wait until it is")
    with timed_job("deliver_notifications"):
        summary = deliver_due(
            context.sessions,
            context.send_webhook,
            context.webhook_secret,
            context.clock,
            context.defaults,
        )
    report = summary.report()
    for outcome, count in report.items():
        DELIVERIES.labels(outcome).inc(count)
    return report
