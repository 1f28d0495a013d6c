"""Every schedule smsledger registers, in one place (docs/decisions/0011): rq-scheduler today,
RQ's own `rq cron` tomorrow, by changing this module only.

Registering is idempotent: each schedule has a fixed job id, and registering cancels a job of
that id first, so a restarted scheduler never holds two copies of one schedule. The jobs are
safe to run late or twice (rq-scheduler re-enqueues a cron job for every period it missed
while no worker ran; the close then finds nothing left to do).
"""

from __future__ import annotations

from datetime import UTC, datetime

from rq_scheduler import Scheduler

from jobs.billing import billing_cycle

QUEUES = ("billing", "payments", "notifications", "reconciliation")

# (job id, cron string in UTC, frequency): SPEC §6's close times.
CRON_SCHEDULES = (
    ("schedule-billing-daily", "0 2 * * *", "daily"),
    ("schedule-billing-weekly", "0 3 * * 1", "weekly"),
    ("schedule-billing-monthly", "0 4 1 * *", "monthly"),
)
THRESHOLD_JOB_ID = "schedule-billing-threshold"
THRESHOLD_INTERVAL_SECONDS = 60
"""Threshold requests are recorded by ingestion and served at most this late."""


def register(scheduler: Scheduler, now: datetime | None = None) -> list[str]:
    """(Re)register every schedule; the ids registered."""
    scheduled = {job.id: job for job in scheduler.get_jobs()}
    ids = [job_id for job_id, _, _ in CRON_SCHEDULES] + [THRESHOLD_JOB_ID]
    for job_id in ids:
        if job_id in scheduled:
            scheduler.cancel(scheduled[job_id])
    for job_id, cron, frequency in CRON_SCHEDULES:
        scheduler.cron(
            cron,
            func=billing_cycle,
            args=[frequency],
            id=job_id,
            queue_name="billing",
            use_local_timezone=False,
            result_ttl=7 * 24 * 3600,
        )
    scheduler.schedule(
        scheduled_time=(now or datetime.now(UTC)).replace(tzinfo=None),
        func=billing_cycle,
        args=["threshold"],
        interval=THRESHOLD_INTERVAL_SECONDS,
        repeat=None,
        id=THRESHOLD_JOB_ID,
        queue_name="billing",
        result_ttl=3600,
    )
    return ids
