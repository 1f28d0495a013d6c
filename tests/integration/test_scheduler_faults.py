"""A Redis outage longer than the old scheduler survived (it died about 40 s in), ended by a
restart without persistence: `smsledger scheduler` is still running, puts the vanished
schedules back within seconds, and an invoice that came due meanwhile is charged in Sippy by
`smsledger worker` without anyone acting. Real processes throughout, stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis import Redis
from rq import Queue, Worker
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import update_customer
from billing.invoicing.cycle_runner import run_cycle
from billing.settings import BillingDefaults
from billing.tables import invoices
from jobs.schedule import QUEUES, missing_schedules
from ledger.db import make_engine, make_session_factory, unit_of_work
from sippy_simulator.server import SimulatorHandle
from tests.redisserver import RedisServer, restartable_redis
from tests.scenarios import load_rates, post, sms

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

OUTAGE_SECONDS = 45
"""Longer than rq-scheduler's own loop lived through an outage."""


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:  # redis-py's ConnectionError is one
            pass
        time.sleep(0.1)
    return False


@pytest.fixture
def redis_process() -> Iterator[RedisServer]:
    with restartable_redis() as server:
        yield server


@pytest.fixture
def sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """`launch(name, *args, **env)`: `smsledger *args` with `env` over the test's environment,
    its output in `tmp_path/name.log`; each one is stopped by its PID after the test."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    command = str(Path(sys.executable).parent / "smsledger")

    def launch(name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [command, *args],
                cwd=tmp_path,
                env={**os.environ, "LOG_FORMAT": "text", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append((process, log))
        return process

    yield launch
    for process, log in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        print(f"--- {log.name} (exit {process.returncode})\n{log.read_text()[-4000:]}")


def worker_idle(redis: Redis) -> bool:
    """No job queued and the one worker waiting for one: Redis may go (an outage in the middle
    of a job ends `smsledger worker`, see the decision 0011 amendment)."""
    queued = sum(Queue(name, connection=redis).count for name in QUEUES)
    return queued == 0 and [w.get_state() for w in Worker.all(connection=redis)] == ["idle"]


def invoice_statuses(sessions: sessionmaker[Session]) -> list[str]:
    with unit_of_work(sessions) as session:
        return list(session.execute(sa.select(invoices.c.status)).scalars())


def test_the_scheduler_outlives_a_redis_outage_and_restart_and_due_charges_get_paid(
    pg_url: str,
    sessions: sessionmaker[Session],
    redis_process: RedisServer,
    start_sim: Callable[..., SimulatorHandle],
    launch: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    sim = start_sim()
    env = {
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_process.url,
        "SIPPY_URL": sim.xmlapi_url,
        "SIPPY_USERNAME": "smsledger",
        "SIPPY_PASSWORD": "secret",
    }
    now = datetime.now(UTC)
    load_rates(sessions, now - timedelta(days=3))
    redis = Redis.from_url(redis_process.url)
    scheduler = launch("scheduler", "scheduler", **env)
    worker = launch("worker", "worker", **env)
    assert wait_until(lambda: missing_schedules(redis) == [], 30), "schedules never registered"
    assert wait_until(lambda: worker_idle(redis), 30), "the worker never went idle"

    redis_process.stop()
    outage_started = time.monotonic()
    yesterday = (now - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
    post(sessions, now, sms("m1", yesterday, user="u1"), sms("m2", yesterday, user="u1"))
    with unit_of_work(sessions) as session:
        update_customer(session, "u1", now, sippy_account_id="1001")
    summary, _ = run_cycle(sessions, "daily", now, BillingDefaults())
    assert summary.charges_enqueued == 1 and invoice_statuses(sessions) != ["paid"]
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    redis_process.start()  # empty: no persistence

    assert scheduler.poll() is None, "the scheduler died during the outage"
    assert wait_until(lambda: missing_schedules(redis) == [], 10), "schedules not put back"
    assert wait_until(lambda: invoice_statuses(sessions) == ["paid"], 60), "never charged"
    assert len(sim.state.payments()) == 1
    assert scheduler.poll() is None and worker.poll() is None
    redis.close()
    log = (tmp_path / "scheduler.log").read_text()
    assert log.count("Redis does not answer") == 1 and log.count("Redis answers again") == 1
