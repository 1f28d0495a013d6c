"""Notification jobs: deliver due webhooks, one batch per run."""

from __future__ import annotations

from billing.notifications.webhooks import deliver_due
from infra.metrics import DELIVERIES, timed_job
from jobs.context import current


def deliver_notifications() -> dict[str, int]:
    """Deliver a batch of due notifications; counts by outcome."""
    context = current()
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
