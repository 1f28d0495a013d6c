"""Billing jobs: one billing cycle per frequency. Safe to run any number of times, at once or
late: the close decides what is due from the database (one invoice per user and period)."""

from __future__ import annotations

from billing.cycle import run_cycle
from jobs.context import current


def billing_cycle(frequency: str) -> dict[str, int | str]:
    """Close the due periods of `frequency`; the cycle's summary (RQ keeps it as the result)."""
    context = current()
    summary, duration_ms = run_cycle(context.sessions, frequency, context.clock(), context.defaults)
    return summary.report(duration_ms)
