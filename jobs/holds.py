"""The holds sweep: delete the holds of reserving checks that no longer count (expired, or
captured by a post that raced their placing). They stop counting at once either way; the sweep
keeps the table the size of what is in flight."""

from __future__ import annotations

from billing.usage.holds import purge_holds
from infra.metrics import timed_job
from jobs.context import current
from ledger.db import run_in_transaction


def purge_expired_holds() -> int:
    """How many holds went."""
    context = current()
    with timed_job("purge_expired_holds"):
        return run_in_transaction(context.sessions, lambda s: purge_holds(s, context.clock()))
