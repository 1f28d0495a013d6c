"""Every schedule smsledger registers, in one place (docs/decisions/0011): rq-scheduler today,
RQ's own `rq cron` tomorrow, by changing this module only.

Registering is idempotent: each schedule has a fixed job id, and registering cancels a job of
that id first, so a restarted scheduler never holds two copies of one schedule. The jobs are
safe to run late or twice (rq-scheduler re-enqueues a cron job for every period it missed
while no worker ran; the close then finds nothing left to do).

Schedules live only in Redis, so they can vanish (a Redis without persistence restarts empty,
someone deletes a key): `missing_schedules` names those gone, for the scheduler's loop, which
registers them again (`jobs.scheduler_loop`), and for `/readyz`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from redis import Redis
from rq.job import Job
from rq_scheduler import Scheduler

from jobs.archive import archive_closed_months
from jobs.billing import billing_cycle
from jobs.holds import purge_expired_holds
from jobs.notifications import deliver_notifications
from jobs.partitions import maintain_partitions
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
CRON_RESULT_TTL_SECONDS = 35 * 24 * 3600
"""Longer than the longest gap between two runs (a month). RQ lets a finished job's hash expire
after its result TTL, and rq-scheduler silently drops a schedule whose hash is gone when it
comes due: with the former week, the monthly close's hash expired a week after each run and
the weekly one's raced its next run."""
THRESHOLD_JOB_ID = "schedule-billing-threshold"
THRESHOLD_INTERVAL_SECONDS = 60
"""Threshold requests are recorded by ingestion and served at most this late."""
SWEEP_INTERVAL_SECONDS = 60
"""Due charges (retries, lost hand-offs, unanswered attempts) and due webhooks wait at most
this long."""
PARTITIONS_INTERVAL_SECONDS = 24 * 3600
"""The months ahead are made daily (and at once when the scheduler registers)."""

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
    ("schedule-holds-purge", "billing", purge_expired_holds, [], SWEEP_INTERVAL_SECONDS),
    ("schedule-partitions", "billing", maintain_partitions, [], PARTITIONS_INTERVAL_SECONDS),
    # does nothing unless SMS_BILLING_ARCHIVE_SCHEDULED=true (docs/archives.md)
    ("schedule-archive", "billing", archive_closed_months, [], PARTITIONS_INTERVAL_SECONDS),
)

SCHEDULE_IDS: tuple[str, ...] = (
    *(job_id for job_id, _, _ in CRON_SCHEDULES),
    RECONCILE_JOB[0],
    *(job_id for job_id, *_ in INTERVAL_SCHEDULES),
)
"""Every schedule `register` keeps, in the order it returns them."""


def register(
    scheduler: Scheduler, now: datetime | None = None, catch_up: bool = False
) -> list[str]:
    """(Re)register every schedule; the ids registered. The sweeps are due at once (`now`).

    With `catch_up`, the closes are due at once too, then at their cron times: a scheduler
    that was down, or a Redis that lost its schedules, may have missed a close time, and a
    close that finds nothing due does nothing (the embedded mode catches up the same way).
    The morning reconciliation is not caught up: every run stores another report.
    """
    instant = (now or datetime.now(UTC)).replace(tzinfo=None)  # rq-scheduler: naive UTC
    scheduled = {job.id: job for job in scheduler.get_jobs()}
    ids = list(SCHEDULE_IDS)
    for job_id in ids:
        if job_id in scheduled:
            scheduler.cancel(scheduled[job_id])
    for job_id, cron, frequency in CRON_SCHEDULES:
        close = scheduler.cron(
            cron,
            func=billing_cycle,
            args=[frequency],
            id=job_id,
            queue_name="billing",
            use_local_timezone=False,
            result_ttl=CRON_RESULT_TTL_SECONDS,
        )
        if catch_up:
            scheduler.change_execution_time(close, instant)
    scheduler.cron(
        RECONCILE_JOB[1],
        func=reconcile_yesterday,
        id=RECONCILE_JOB[0],
        queue_name="reconciliation",
        use_local_timezone=False,
        result_ttl=CRON_RESULT_TTL_SECONDS,
    )
    for job_id, queue, func, args, interval in INTERVAL_SCHEDULES:
        scheduler.schedule(
            scheduled_time=instant,
            func=func,
            args=args,
            interval=interval,
            repeat=None,
            id=job_id,
            queue_name=queue,
            result_ttl=3600,
        )
    return ids


def missing_schedules(connection: Redis) -> list[str]:
    """The schedules rq-scheduler no longer holds, in `SCHEDULE_IDS` order: an id missing from
    its sorted set of due times, or whose job hash is gone (rq-scheduler would drop it when it
    came due).

    Raises: redis-py's errors when Redis does not answer.
    """
    with connection.pipeline(transaction=False) as pipe:
        for job_id in SCHEDULE_IDS:
            pipe.zscore(Scheduler.scheduled_jobs_key, job_id)
            pipe.exists(Job.key_for(job_id))
        answers = pipe.execute()
    return [
        job_id
        for job_id, due_at, hashes in zip(SCHEDULE_IDS, answers[::2], answers[1::2], strict=True)
        if due_at is None or not hashes
    ]
