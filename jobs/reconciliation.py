"""Reconciliation jobs: yesterday (UTC) against Sippy's statement, every morning, so an
accountant starts the day with a stored run. Re-running it stores another run (an audit trail,
not a duplicate write: runs change nothing in the ledger)."""

from __future__ import annotations

import logging
from datetime import timedelta

from infra.metrics import timed_job
from jobs.context import current
from ledger.db import run_in_transaction
from reconciliation.runs import reconcile
from reconciliation.statements import fetch_statement

log = logging.getLogger("smsledger.jobs")


def reconcile_yesterday() -> dict[str, object]:
    """Reconcile the previous UTC day through Sippy's API; the run's id, status and totals."""
    context = current()
    if context.sippy is None:
        log.warning("SIPPY_URL is not set: no scheduled reconciliation")
        return {"status": "skipped"}
    end = context.clock().replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=1)
    with timed_job("reconcile_yesterday"):
        statement = fetch_statement(context.sippy, start, end)
        run = run_in_transaction(
            context.sessions,
            lambda s: reconcile(
                s, statement, "sippy", start, end, "job:scheduler", context.clock()
            ),
        )
    log.info(
        "Reconciliation run",
        extra={"run_id": str(run.id), "status": run.status, "totals": run.totals},
    )
    return {"id": str(run.id), "status": run.status, **run.totals}
