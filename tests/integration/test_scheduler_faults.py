"""A Redis outage longer than the old scheduler survived (it died about 40 s in), ended by a
restart without persistence: `smsledger scheduler` is still running, puts the vanished
schedules back within seconds, and an invoice that came due meanwhile is charged in Sippy by
`smsledger worker` without anyone acting. Real processes throughout, stopped by PID."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from redis import Redis
from rq import Queue, Worker
from sqlalchemy.orm import Session, sessionmaker

from billing.tables import invoices
from jobs.schedule import QUEUES, missing_schedules
from ledger.db import unit_of_work
from tests.processes import Rig, wait_until
from tests.scenarios import bill_yesterday, load_rates

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

OUTAGE_SECONDS = 45
"""Longer than rq-scheduler's own loop lived through an outage."""


def worker_idle(redis: Redis) -> bool:
    """No job queued and the one worker waiting for one: the jobs of the scheduler's first
    pass have run, and Redis may go. (An outage in the middle of a job would not end
    `smsledger worker` either: `jobs.worker_loop` lets the job finish and starts a fresh worker
    once Redis answers; only the job's RQ bookkeeping fails, see that module's docstring.)"""
    queued = sum(Queue(name, connection=redis).count for name in QUEUES)
    return queued == 0 and [w.get_state() for w in Worker.all(connection=redis)] == ["idle"]


def invoice_statuses(sessions: sessionmaker[Session]) -> list[str]:
    with unit_of_work(sessions) as session:
        return list(session.execute(sa.select(invoices.c.status)).scalars())


def test_the_scheduler_outlives_a_redis_outage_and_restart_and_due_charges_get_paid(
    rig: Rig,
) -> None:
    sessions, redis, sim = rig.sessions, rig.redis, rig.sim
    now = datetime.now(UTC)
    load_rates(sessions, now - timedelta(days=3))
    scheduler = rig.start("scheduler", "scheduler")
    worker = rig.start("worker", "worker")
    assert wait_until(lambda: missing_schedules(redis) == [], 30, 0.1), "schedules never registered"
    assert wait_until(lambda: worker_idle(redis), 30, 0.1), "the worker never went idle"

    rig.server.stop()
    outage_started = time.monotonic()
    summary = bill_yesterday(sessions, now)
    assert summary.charges_enqueued == 1 and invoice_statuses(sessions) != ["paid"]
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    rig.server.start()  # empty: no persistence

    assert scheduler.poll() is None, "the scheduler died during the outage"
    assert wait_until(lambda: missing_schedules(redis) == [], 10, 0.1), "schedules not put back"
    assert wait_until(lambda: invoice_statuses(sessions) == ["paid"], 60, 0.1), "never charged"
    assert len(sim.state.payments()) == 1
    assert scheduler.poll() is None and worker.poll() is None
    log = rig.launch.log("scheduler")
    assert log.count("Redis does not answer") == 1 and log.count("Redis answers again") == 1
