"""Schedules that vanish from Redis come back by themselves: which ones are missing, a
scheduler pass registering them again with the sweeps due at once, the loop outliving a Redis
restart with one log line each way, and `/readyz` naming what is missing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from redis import Redis
from rq import Queue
from rq_scheduler import Scheduler

from infra.config import Config
from jobs.schedule import CRON_SCHEDULES, SCHEDULE_IDS, missing_schedules, register
from jobs.scheduler_loop import Backoff, SchedulerLoop
from tests.client import ApiClient
from tests.processes import wait_until
from tests.redisserver import RedisServer

DISPATCH = "schedule-payments-dispatch"
DELIVER = "schedule-notifications-deliver"
THRESHOLD = "schedule-billing-threshold"
PURGE_HOLDS = "schedule-holds-purge"
PARTITIONS = "schedule-partitions"
ARCHIVE = "schedule-archive"
CLOSES = [job_id for job_id, _, _ in CRON_SCHEDULES]


def queued(redis: Redis) -> dict[str, list[str]]:
    names = ("billing", "payments", "notifications", "reconciliation")
    return {name: sorted(Queue(name, connection=redis).job_ids) for name in names}


def test_missing_schedules_names_those_without_a_due_time_or_a_job(redis: Redis) -> None:
    assert missing_schedules(redis) == list(SCHEDULE_IDS)
    scheduler = Scheduler(queue_name="billing", connection=redis)
    register(scheduler)
    assert missing_schedules(redis) == []
    scheduler.cancel("schedule-billing-weekly")
    redis.delete(f"rq:job:{DISPATCH}")
    assert missing_schedules(redis) == ["schedule-billing-weekly", DISPATCH]


def test_a_pass_registers_vanished_schedules_again_with_the_sweeps_due_at_once(
    redis: Redis,
) -> None:
    """The first pass registers everything and catches up the closes; after Redis lost
    everything (a restart without persistence), the next pass puts it all back and the
    sweeps run at once, not a minute later; a pass with nothing missing registers nothing."""
    loop = SchedulerLoop.on(redis)
    assert loop.tick() == list(SCHEDULE_IDS)
    caught_up = {
        "billing": sorted([*CLOSES, THRESHOLD, PURGE_HOLDS, PARTITIONS, ARCHIVE]),
        "payments": [DISPATCH],
        "notifications": [DELIVER],
        "reconciliation": [],
    }
    assert queued(redis) == caught_up
    redis.flushall()
    assert loop.tick() == list(SCHEDULE_IDS)
    assert missing_schedules(redis) == []
    assert queued(redis) == caught_up
    assert loop.tick() == []
    assert queued(redis) == caught_up  # nothing came due again within the minute
    assert not redis.exists(Scheduler.scheduler_lock_key)
    assert redis.exists(loop.scheduler.key)


def test_the_loop_outlives_a_redis_restart_and_logs_the_outage_once(
    restartable_redis: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    loop = SchedulerLoop(
        Scheduler(queue_name="billing", connection=redis, interval=1),
        tick_seconds=0.2,
        backoff=Backoff(first=0.05, cap=0.4),
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    caplog.set_level(logging.INFO, logger="jobs.scheduler_loop")
    thread.start()
    try:
        assert wait_until(lambda: missing_schedules(redis) == [], 5)
        restartable_redis.stop()
        time.sleep(2)  # many failed passes, with the backoff at its cap
        restartable_redis.start()
        assert wait_until(lambda: missing_schedules(redis) == [], 5)
        assert thread.is_alive()
    finally:
        loop.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    lines = [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "jobs.scheduler_loop"
    ]
    assert lines[0] == ("INFO", "Schedules registered")
    assert [line for line in lines if line[0] != "INFO" or "Redis" in line[1]] == [
        ("WARNING", "Redis does not answer: the scheduler retries until it does"),
        ("WARNING", "Missing schedules registered again"),
        ("INFO", "Redis answers again: scheduling resumes"),
    ]


def test_the_backoff_doubles_up_to_its_cap_with_jitter_below_each_step() -> None:
    steady = Backoff(first=0.5, cap=15.0, rng=lambda: 0.0)
    assert [steady.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 15, 15, 15]
    steady.reset()
    assert steady.next_delay() == 0.5
    jittered = Backoff(first=0.5, cap=15.0, rng=lambda: 1.0)
    assert [jittered.next_delay() for _ in range(3)] == [0.375, 0.75, 1.5]


@pytest.mark.postgres
def test_readiness_names_missing_schedules(
    make_api: Callable[..., ApiClient], pg_url: str, restartable_redis: RedisServer, redis: Redis
) -> None:
    nobody = make_api(Config(database_url=pg_url, redis_url=restartable_redis.url)).anonymous()

    def checks() -> tuple[int, str, dict[str, str]]:
        answer = nobody.get("/readyz")
        return answer.status_code, answer.json["status"], answer.json["checks"]

    empty = {"database": "ok", "redis": "ok", "schedules": f"missing: {', '.join(SCHEDULE_IDS)}"}
    assert checks() == (503, "unavailable", empty)
    scheduler = Scheduler(queue_name="billing", connection=redis)
    register(scheduler)
    assert checks() == (200, "ready", {"database": "ok", "redis": "ok", "schedules": "ok"})
    scheduler.cancel(DISPATCH)
    missing = {"database": "ok", "redis": "ok", "schedules": f"missing: {DISPATCH}"}
    assert checks() == (503, "unavailable", missing)
    restartable_redis.stop()
    down = {"database": "ok", "redis": "unavailable", "schedules": "unknown"}
    assert checks() == (503, "unavailable", down)


@pytest.mark.postgres
def test_the_burst_scheduler_registers_enqueues_what_is_due_and_exits(
    make_api: Callable[..., ApiClient], pg_url: str, restartable_redis: RedisServer, redis: Redis
) -> None:
    app = make_api(Config(database_url=pg_url, redis_url=restartable_redis.url)).app
    result = app.test_cli_runner().invoke(args=["scheduler", "--burst"])
    assert result.exit_code == 0, result.output
    assert f"schedules registered: {', '.join(SCHEDULE_IDS)}" in result.output
    assert missing_schedules(redis) == []
    assert queued(redis)["payments"] == [DISPATCH]
    assert not redis.exists(Scheduler.scheduler_lock_key)
