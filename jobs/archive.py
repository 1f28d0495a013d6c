"""The scheduled archive (off by default; docs/archives.md): daily, the months older than
`SMS_BILLING_RETENTION_MONTHS` that are ready are archived and dropped, as `smsledger archive
--before` would. Months held back stay, and say why in the log; the next day tries again."""

from __future__ import annotations

import logging

from infra.archive_runner import MonthOutcome, archive_months
from infra.metrics import timed_job
from jobs.context import current

log = logging.getLogger(__name__)


def archive_closed_months() -> list[MonthOutcome]:
    """Every month's outcome before the retention cut (none when the archive is off)."""
    context = current()
    policy = context.archive
    if policy is None:
        return []
    with timed_job("archive_closed_months"):
        outcomes = archive_months(
            context.sessions, policy.root, policy.cut(context.clock()), context.clock
        )
    for outcome in outcomes:
        month = outcome.plan.month.strftime("%Y-%m")
        if outcome.archived:
            log.info("Month archived", extra={"month": month, "transfers": outcome.transfers})
        elif outcome.error:
            log.error("Month not archived", extra={"month": month, "reason": outcome.error})
        elif outcome.plan.reasons:
            log.info(
                "Month held back", extra={"month": month, "reason": "; ".join(outcome.plan.reasons)}
            )
    return outcomes
