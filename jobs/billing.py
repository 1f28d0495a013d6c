"""Billing jobs: one billing cycle per frequency. Safe to run any number of times, at once or
late: the close decides what is due from the database (one invoice per user and period).
The charges a cycle queued are dispatched right after it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from billing.invoicing.closing import CloseSummary
from billing.invoicing.cycle_runner import run_cycle
from billing.settings import BillingDefaults
from infra.metrics import record_billing_cycle, timed_job
from jobs.context import current, hand_off
from jobs.payments import dispatch_charges


def run_billing_cycle(
    sessions: Callable[[], Session], frequency: str, now: datetime, defaults: BillingDefaults
) -> tuple[CloseSummary, int]:
    """One billing cycle, counted in /metrics: every runner of a cycle (this job, the cron
    endpoint, `smsledger bill`, the billing tab) goes through here, so the "cycle missed" alert
    sees cycles however they are triggered. A failed close is logged and counted in the summary,
    not raised: counted here, or no failure counter would ever see it."""
    summary, duration_ms = run_cycle(sessions, frequency, now, defaults)
    record_billing_cycle(frequency, summary.errors, now.timestamp())
    return summary, duration_ms


def billing_cycle(frequency: str) -> dict[str, int | str]:
    """Close the due periods of `frequency`; the cycle's summary (RQ keeps it as the result)."""
    context = current()
    with timed_job(f"billing_cycle_{frequency}"):
        summary, duration_ms = run_billing_cycle(
            context.sessions, frequency, context.clock(), context.defaults
        )
    if summary.charges_enqueued:
        hand_off("payments", dispatch_charges, ())
    return summary.report(duration_ms)
