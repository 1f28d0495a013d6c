"""RQ jobs on a real Redis and PostgreSQL: schedules registered once however often the
scheduler restarts, a billing cycle run by a worker, run twice without duplicates, and a cron
schedule that comes due enqueues the close."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from redis import Redis
from rq import Queue, SimpleWorker
from rq_scheduler import Scheduler
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import update_customer
from billing.payments.sippy_client import SippyClient
from billing.settings import BillingDefaults
from billing.tables import invoices
from billing.usage.ingestion import ingest_usage, validate_events
from billing.usage.rate_sheets import add_rates, parse_sheet
from jobs import context
from jobs.billing import billing_cycle
from jobs.payments import dispatch_charges
from jobs.reconciliation import reconcile_yesterday
from jobs.schedule import CRON_SCHEDULES, THRESHOLD_JOB_ID, register
from ledger.db import unit_of_work
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.redisserver import redis_server
from tests.scenarios import SAMPLE_RATES, sms

pytestmark = pytest.mark.postgres

CLOSE_TIME = datetime(2026, 11, 24, 2, 0, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    connection.flushall()
    yield connection
    connection.close()


@pytest.fixture
def usage(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    posted_at = datetime(2026, 11, 24, 1, tzinfo=UTC)
    events = validate_events(
        [sms(f"m{n}", "2026-11-23T12:00:00Z", user=f"u{n % 3}") for n in range(9)]
    )
    with unit_of_work(sessions) as session:
        add_rates(session, parse_sheet(SAMPLE_RATES.read_text()), posted_at)
        ingest_usage(session, events, posted_at, BillingDefaults())
    context.configure(context.JobContext(sessions, lambda: CLOSE_TIME, BillingDefaults()))
    return sessions


def invoice_count(sessions: sessionmaker[Session]) -> int:
    with unit_of_work(sessions) as session:
        return int(session.execute(sa.select(sa.func.count()).select_from(invoices)).scalar_one())


def test_registering_twice_keeps_one_job_per_schedule(redis: Redis) -> None:
    scheduler = Scheduler(queue_name="billing", connection=redis)
    first = register(scheduler)
    second = register(scheduler)
    jobs = list(scheduler.get_jobs())
    assert first == second
    assert sorted(job.id for job in jobs) == sorted(first)
    crons = {job.id: job.meta.get("cron_string") for job in jobs}
    for job_id, cron, _ in CRON_SCHEDULES:
        assert crons[job_id] == cron
    assert THRESHOLD_JOB_ID in crons


def test_a_worker_runs_a_cycle_and_a_second_run_changes_nothing(
    redis: Redis, usage: sessionmaker[Session]
) -> None:
    queue = Queue("billing", connection=redis)
    first = queue.enqueue(billing_cycle, "daily")
    second = queue.enqueue(billing_cycle, "daily")
    SimpleWorker([queue], connection=redis).work(burst=True)
    assert first.get_status(refresh=True) == "finished"
    assert first.return_value()["invoices_created"] == 3
    assert second.return_value()["invoices_created"] == 0
    assert invoice_count(usage) == 3


def test_a_due_cron_schedule_enqueues_the_close(redis: Redis, usage: sessionmaker[Session]) -> None:
    with time_machine.travel(datetime(2026, 11, 24, 1, 0, tzinfo=UTC), tick=False) as traveller:
        scheduler = Scheduler(queue_name="billing", connection=redis)
        register(scheduler)
        scheduler.enqueue_jobs()  # of the closes, only the threshold check is due at 01:00
        queue = Queue("billing", connection=redis)
        assert [job.args for job in queue.jobs if job.func_name.endswith("billing_cycle")] == [
            ["threshold"]
        ]
        traveller.move_to(datetime(2026, 11, 24, 2, 0, 30, tzinfo=UTC))
        scheduler.enqueue_jobs()
        assert ["daily"] in [job.args for job in queue.jobs]
        SimpleWorker([queue], connection=redis).work(burst=True)
    assert invoice_count(usage) == 3


def test_the_cli_worker_needs_redis(app_and_keys: tuple[Any, dict[str, str]]) -> None:
    app, _ = app_and_keys
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 2 and "REDIS_URL" in result.output


def test_readiness_checks_redis_when_jobs_use_it(
    make_api: Callable[..., ApiClient], pg_url: str, redis_url: str, redis: Redis
) -> None:
    from infra.config import Config

    register(Scheduler(queue_name="billing", connection=redis))
    up = make_api(Config(database_url=pg_url, redis_url=redis_url))
    ready = up.anonymous().get("/readyz")
    checks = {"database": "ok", "redis": "ok", "schedules": "ok"}
    assert ready.status_code == 200 and ready.json["checks"] == checks
    down = make_api(Config(database_url=pg_url, redis_url="redis://127.0.0.1:1/0"))
    unready = down.anonymous().get("/readyz")
    assert unready.status_code == 503 and unready.json["checks"]["redis"] == "unavailable"


def test_a_worker_closes_then_charges_each_invoice_through_sippy_once(
    redis: Redis,
    redis_url: str,
    usage: sessionmaker[Session],
    start_sim: Callable[..., SimulatorHandle],
) -> None:
    """The cycle hands the charges to the payments queue; the charge jobs run there, and a
    second dispatch (the minute sweep) finds nothing left to charge."""
    with unit_of_work(usage) as session:
        for n in range(3):
            update_customer(session, f"u{n}", CLOSE_TIME, sippy_account_id=str(1001 + n))
    sim = start_sim(clock=lambda: CLOSE_TIME)
    context.configure(
        context.JobContext(
            usage,
            lambda: CLOSE_TIME,
            BillingDefaults(),
            gateway=SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5),
            enqueue=context.rq_enqueue(redis_url),
        )
    )
    queues = [Queue(name, connection=redis) for name in ("billing", "payments")]
    cycle = queues[0].enqueue(billing_cycle, "daily")
    SimpleWorker(queues, connection=redis).work(burst=True)
    assert cycle.return_value()["charges_enqueued"] == 3
    with unit_of_work(usage) as session:
        statuses = session.execute(sa.select(invoices.c.status)).scalars().all()
    assert statuses == ["paid"] * 3
    assert len(sim.state.payments()) == 3
    assert dispatch_charges() == {"dispatched": 0}


def test_the_morning_job_reconciles_yesterday_through_sippy(
    usage: sessionmaker[Session], start_sim: Callable[..., SimulatorHandle]
) -> None:
    sim = start_sim(clock=lambda: CLOSE_TIME)
    client = SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=5)
    context.configure(
        context.JobContext(
            usage, lambda: CLOSE_TIME, BillingDefaults(), gateway=client, sippy=client
        )
    )
    result = reconcile_yesterday()
    assert result["status"] == "reconciled" and result["matched"] == 0
    context.configure(context.JobContext(usage, lambda: CLOSE_TIME, BillingDefaults()))
    assert reconcile_yesterday() == {"status": "skipped"}


def test_the_partitions_job_makes_the_months_ahead_of_its_clock_and_logs_them(
    sessions: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    from jobs.partitions import maintain_partitions

    context.configure(
        context.JobContext(sessions, lambda: datetime(2030, 1, 15, tzinfo=UTC), BillingDefaults())
    )
    caplog.set_level("INFO", logger="jobs.partitions")
    states = maintain_partitions()
    assert {(s.partition, s.state) for s in states if s.table == "transfers"} == {
        (f"transfers_p{month}", "created")
        for month in ("2029_12", "2030_01", "2030_02", "2030_03", "2030_04")
    }
    assert sum("Partition created" in r.message for r in caplog.records) == 10
    assert {s.state for s in maintain_partitions()} == {"exists"}  # a second run changes nothing
