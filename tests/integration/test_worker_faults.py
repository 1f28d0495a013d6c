"""`smsledger worker` under real faults: killed with SIGKILL while its job waits inside Sippy's
`accountDebit` (the switch applies the debit anyway), and outliving a Redis restart. Real
processes throughout (redis-server, PostgreSQL, the Sippy simulator over HTTP, `smsledger
worker` subprocesses), each stopped by its PID.

A killed charge is paid exactly once: the attempt recorded before the call stays open, a fresh
worker leaves it alone within the in-flight grace, and past the grace (the clock moved in this
process, the subprocesses run on real time) it is looked up by its reference and settled."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy.orm import Session, sessionmaker

from billing.payments.charge_runner import charge_invoice as charge_step
from billing.payments.charging import ChargePolicy, due_charges
from billing.payments.sippy_client import SippyClient
from billing.settings import BillingDefaults
from billing.tables import invoices, payment_attempts
from jobs.payments import charge_invoice
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from tests import processes
from tests.processes import Rig
from tests.scenarios import bill_yesterday, debits_for, load_rates, rows, settlements

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

GRACE_S = 60
"""The shortest in-flight grace the configuration accepts (max(60, 4 x SIPPY_TIMEOUT_S))."""
SIPPY_DELAY_S = 3.0
"""How long the simulator holds `accountDebit` before applying it: the worker is inside."""
OUTAGE_SECONDS = 10
POLICY = ChargePolicy(in_flight_grace=timedelta(seconds=GRACE_S))
OUTAGE_LINE = "Redis does not answer: the worker retries until it does"
BACK_LINE = "Redis answers again: the worker resumes"


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """`tests.processes.wait_until`, asking every 20 ms."""
    return processes.wait_until(condition, seconds, interval=0.02)


@pytest.fixture
def invoice_id(rig: Rig) -> uuid.UUID:
    """User u1 (Sippy account 1001) with two SMS yesterday, closed now: its invoice, due."""
    now = datetime.now(UTC)
    load_rates(rig.sessions, now - timedelta(days=3))
    summary = bill_yesterday(rig.sessions, now)
    assert summary.invoices_created == 1
    (invoice,) = rows(rig.sessions, invoices)
    return uuid.UUID(str(invoice.id))


def start_worker(rig: Rig, name: str) -> subprocess.Popen[bytes]:
    """A `smsledger worker` on the rig, its output in `name.log`."""
    return rig.start(
        name,
        "worker",
        SIPPY_TIMEOUT_S="10",  # longer than the simulator's hold: the call is not given up
        SIPPY_IN_FLIGHT_GRACE_S=str(GRACE_S),
    )


def attempts(sessions: sessionmaker[Session], invoice_id: uuid.UUID) -> list[Any]:
    return rows(sessions, payment_attempts, payment_attempts.c.invoice_id == invoice_id)


def status_of(sessions: sessionmaker[Session], invoice_id: uuid.UUID) -> str:
    (invoice,) = rows(sessions, invoices, invoices.c.id == invoice_id)
    return str(invoice.status)


def idle(redis: Redis, pid: int) -> bool:
    """The worker process `pid` has a worker registered in Redis, waiting for a job."""
    return [w.get_state() for w in Worker.all(connection=redis) if w.pid == pid] == ["idle"]


def children_of(pid: int) -> list[int]:
    """The PIDs whose parent is `pid` (a worker's work horse), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def run_job(redis: Redis, job_id: str, invoice_id: uuid.UUID, seconds: float = 20) -> Any:
    """Enqueue `charge_invoice` as the payment sweep would, wait for a worker to finish it;
    its result."""
    job = Queue("payments", connection=redis).enqueue(
        charge_invoice, str(invoice_id), job_id=job_id
    )
    assert wait_until(lambda: job.get_status(refresh=True) == "finished", seconds), job_id
    return job.return_value()


@pytest.mark.parametrize("victims", ["worker and work horse", "worker only"])
def test_a_worker_killed_inside_the_sippy_call_charges_the_invoice_exactly_once(
    victims: str, rig: Rig, invoice_id: uuid.UUID
) -> None:
    """RQ's forking worker runs the job in a work horse, in its own process group: SIGKILL to
    the worker's PID alone leaves the horse to finish the charge ("worker only"); a lost
    machine or container takes both ("worker and work horse"), and the open attempt is
    settled by a lookup once the grace is past."""
    sessions, redis, sim = rig.sessions, rig.redis, rig.sim
    first = start_worker(rig, "first")
    assert wait_until(lambda: idle(redis, first.pid), 30), "the first worker never went idle"
    sim.state.inject_fault(kind="slow", method="accountDebit", delay_s=SIPPY_DELAY_S)
    Queue("payments", connection=redis).enqueue(
        charge_invoice, str(invoice_id), job_id="charge-killed"
    )

    def inside_sippy() -> bool:
        """The attempt recorded and the call at the switch (it took the fault: after digest
        auth's first 401, not before)."""
        started = [a.status for a in attempts(sessions, invoice_id)] == ["started"]
        return started and sim.state.faults() == []

    assert wait_until(inside_sippy, 20), "the charge never reached Sippy"
    (horse,) = children_of(first.pid)
    os.kill(first.pid, signal.SIGKILL)
    if victims == "worker and work horse":
        os.kill(horse, signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    assert debits_for(sim, invoice_id) == []  # the simulator still holds the call
    assert wait_until(lambda: len(debits_for(sim, invoice_id)) == 1, 10), "Sippy never debited"

    second = start_worker(rig, "second")
    assert wait_until(lambda: idle(redis, second.pid), 30), "the fresh worker never went idle"
    if victims == "worker and work horse":
        (attempt,) = attempts(sessions, invoice_id)
        assert attempt.status == "started" and settlements(sessions, invoice_id) == []
        # The sweep's next run, within the grace: the fresh worker leaves the attempt open.
        assert run_job(redis, "charge-within-grace", invoice_id) == "in_flight"
        past_grace = attempt.started_at + timedelta(seconds=GRACE_S + 1)
        with unit_of_work(sessions) as session:
            assert due_charges(session, datetime.now(UTC), POLICY) == []
            assert due_charges(session, past_grace, POLICY) == [invoice_id]
        # The sweep's run past the grace, on this process's clock: a lookup, not a new debit.
        client = SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5)
        outcome = charge_step(
            sessions, client, invoice_id, lambda: past_grace, BillingDefaults(), POLICY
        )
        assert outcome == "paid"
    else:
        assert wait_until(lambda: status_of(sessions, invoice_id) == "paid", 10)
    assert run_job(redis, "charge-after", invoice_id) == "paid"  # nothing left to charge

    assert len(debits_for(sim, invoice_id)) == 1
    assert len(settlements(sessions, invoice_id)) == 1
    assert status_of(sessions, invoice_id) == "paid"
    assert [a.status for a in attempts(sessions, invoice_id)] == ["accepted"]
    with unit_of_work(sessions) as session:
        assert check_ledger(session) == []
    # RQ's abandoned-job handling, its heartbeat TTL (90 s) moved past: the killed job is
    # failed, not run again; the orphaned work horse finished its own.
    StartedJobRegistry("payments", connection=redis).cleanup(time.time() + 3600)
    killed = Job.fetch("charge-killed", connection=redis)
    if victims == "worker and work horse":
        assert killed.get_status() == "failed"
        assert "charge-killed" in FailedJobRegistry("payments", connection=redis)
    else:
        assert killed.get_status() == "finished" and killed.return_value() == "paid"
    assert second.poll() is None


def test_the_worker_outlives_a_redis_restart_and_charges_with_the_same_pid(
    rig: Rig, invoice_id: uuid.UUID
) -> None:
    sessions, redis, sim = rig.sessions, rig.redis, rig.sim
    worker = start_worker(rig, "worker")
    assert wait_until(lambda: idle(redis, worker.pid), 30), "the worker never went idle"

    rig.server.stop()
    time.sleep(OUTAGE_SECONDS)
    assert worker.poll() is None, "the worker died during the outage"
    rig.server.start()  # empty: no persistence
    assert wait_until(lambda: idle(redis, worker.pid), 20), "the worker did not come back"

    job = Queue("payments", connection=redis).enqueue(charge_invoice, str(invoice_id))
    assert wait_until(lambda: job.get_status(refresh=True) == "finished", 20), "never charged"
    assert job.return_value() == "paid" and status_of(sessions, invoice_id) == "paid"
    worker_name = Job.fetch(job.id, connection=redis).worker_name
    key = Worker.redis_worker_namespace_prefix + str(worker_name)
    charged_by = Worker.find_by_key(key, connection=redis)
    assert charged_by is not None and charged_by.pid == worker.pid
    assert len(debits_for(sim, invoice_id)) == 1
    assert worker.poll() is None
    log = rig.launch.log("worker")
    assert log.count(OUTAGE_LINE) == 1 and log.count(BACK_LINE) == 1
