"""Every schedule smsledger registers, in one place (docs/decisions/0011): rq-scheduler today,
RQ's own `rq cron` tomorrow, by changing this module only.

Registering is idempotent: each schedule has a fixed job id, and registering cancels a job of
that id first, so a restarted scheduler never holds two copies of one schedule. The jobs are
safe to run late or twice (rq-scheduler re-enqueues a cron job for every period it missed
while no worker ran; the close then finds nothing left to do).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rq_scheduler import Scheduler

from jobs.billing import billing_cycle
from jobs.notifications import deliver_notifications
from jobs.payments import dispatch_charges
from jobs.reconciliation import reconcile_yesterday

QUEUES = ("billing", "payments", "notifications", "reconciliation")

# (job id, cron string in UTC, frequency): SPEC §6's close times.
CRON_SCHEDULES = (
    ("schedule-billing-daily", "0 2 * * *", "daily"),
    ("schedule-billing-weekly", "0 3 * * 1", "weekly"),
    ("schedule-billing-monthly", "0 4 1 * *", "monthly"),
)
RECONCILE_JOB = ("schedule-reconcile-daily", "0 5 * * *")
"""Yesterday against Sippy's statement, after the 02:00 close and its charges."""
THRESHOLD_JOB_ID = "schedule-billing-threshold"
THRESHOLD_INTERVAL_SECONDS = 60
"""Threshold requests are recorded by ingestion and served at most this late."""
SWEEP_INTERVAL_SECONDS = 60
"""Due charges (retries, lost hand-offs, unanswered attempts) and due webhooks wait at most
this long."""

# (job id, queue, function, arguments, interval in seconds): the sweeps.
INTERVAL_SCHEDULES: tuple[tuple[str, str, Callable[..., object], list[str], int], ...] = (
    (THRESHOLD_JOB_ID, "billing", billing_cycle, ["threshold"], THRESHOLD_INTERVAL_SECONDS),
    ("schedule-payments-dispatch", "payments", dispatch_charges, [], SWEEP_INTERVAL_SECONDS),
    (
        "schedule-notifications-deliver",
        "notifications",
        deliver_notifications,
        [],
        SWEEP_INTERVAL_SECONDS,
    ),
)


def register(scheduler: Scheduler, now: datetime | None = None) -> list[str]:
    """(Re)register every schedule; the ids registered."""
    scheduled = {job.id: job for job in scheduler.get_jobs()}
    ids = [job_id for job_id, _, _ in CRON_SCHEDULES] + [RECONCILE_JOB[0]]
    ids += [s[0] for s in INTERVAL_SCHEDULES]
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
    scheduler.cron(
        RECONCILE_JOB[1],
        func=reconcile_yesterday,
        id=RECONCILE_JOB[0],
        queue_name="reconciliation",
        use_local_timezone=False,
        result_ttl=7 * 24 * 3600,
    )
    for job_id, queue, func, args, interval in INTERVAL_SCHEDULES:
        scheduler.schedule(
            scheduled_time=(now or datetime.now(UTC)).replace(tzinfo=None),
            func=func,
            args=args,
            interval=interval,
            repeat=None,
            id=job_id,
            queue_name=queue,
            result_ttl=3600,
        )
    return ids
