"""Billing jobs: one billing cycle per frequency. Safe to run any number of times, at once or
late: the close decides what is due from the database (one invoice per user and period).
The charges a cycle queued are dispatched right after it."""

from __future__ import annotations

from billing.invoicing.cycle_runner import run_cycle
from infra.metrics import record_billing_cycle, timed_job
from jobs.context import current, hand_off
from jobs.payments import dispatch_charges


def billing_cycle(frequency: str) -> dict[str, int | str]:
    """Close the due periods of `frequency`; the cycle's summary (RQ keeps it as the result)."""
    context = current()
    with timed_job(f"billing_cycle_{frequency}"):
        summary, duration_ms = run_cycle(
            context.sessions, frequency, context.clock(), context.defaults
        )
    # A failed close is logged and counted in the summary, not raised: count it here, or the
    # job's own failure counter would never see it.
    record_billing_cycle(frequency, summary.errors, context.clock().timestamp())
    if summary.charges_enqueued:
        hand_off("payments", dispatch_charges, ())
    return summary.report(duration_ms)
