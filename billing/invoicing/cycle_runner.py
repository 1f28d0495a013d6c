"""A billing cycle as the cron endpoint, the CLI and the jobs run it: close the due periods of
one frequency in one unit of work, then log what happened with the messages existing log
searches look for (SPEC §12)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from billing.invoicing.closing import CloseSummary, close_periods
from billing.settings import FREQUENCIES, BillingDefaults
from ledger.db import run_in_transaction

log = logging.getLogger("smsledger.billing")


def run_cycle(
    sessions: Callable[[], Session],
    frequency: str,
    now: datetime,
    defaults: BillingDefaults,
) -> tuple[CloseSummary, int]:
    """Close the due periods of `frequency`; the summary and its duration in milliseconds.

    Raises: ValueError for an unknown frequency. A failure of the close itself is logged and
    counted in the summary (`errors`), never raised: the scheduler retries the cycle later.
    """
    if frequency not in FREQUENCIES:
        raise ValueError(f"type must be one of {', '.join(FREQUENCIES)}")
    started = time.perf_counter()
    try:
        summary = run_in_transaction(
            sessions, lambda session: close_periods(session, frequency, now, defaults)
        )
    except Exception as error:  # logged with its reason; the next cycle tries again
        log.exception(
            "Failed to process SMS billing",
            extra={"type": frequency, "reason": f"{type(error).__name__}: {error}"},
        )
        summary = CloseSummary(frequency, errors=1)
    for invoice_id in summary.invoice_ids:
        log.info("Processing SMS billing", extra={"type": frequency, "invoice_id": str(invoice_id)})
    duration_ms = int((time.perf_counter() - started) * 1000)
    # One summary per cycle (SPEC §12); a cycle that found nothing due (the threshold sweep
    # every minute, the catch-up at each start) says so at DEBUG, so the log shows work done.
    busy = summary.periods_closed or summary.invoices_created or summary.errors
    log.log(
        logging.INFO if busy else logging.DEBUG,
        "SMS Billing Process Summary",
        extra=summary.report(duration_ms),
    )
    return summary, duration_ms
