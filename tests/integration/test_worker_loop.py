"""The worker's supervising loop (`jobs.worker_loop`) against a real redis-server, in this
process: an idle worker and a busy one outlive a Redis restart with one log line each way
(the busy one's job finishing without Redis), a refusing Redis is logged once, SIGTERM keeps
RQ's warm and cold shutdowns, and `smsledger worker --burst` drains the queues and exits.

The loop runs in the main thread, as in `smsledger worker` (RQ's signal handlers and its
work-horse monitor need it); a helper thread acts out the faults, then stops it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import OutOfMemoryError
from rq import Queue, Worker
from rq.job import Job

from infra.config import Config
from jobs.scheduler_loop import Backoff
from jobs.worker_loop import WorkerLoop
from tests.client import ApiClient
from tests.processes import wait_until
from tests.redisserver import RedisServer

QUEUE = "payments"
OUTAGE = ("WARNING", "Redis does not answer: the worker retries until it does")
BACK = ("INFO", "Redis answers again: the worker resumes")
WAITING = ("INFO", "Waiting for the running job to end")
STOPPED = ("INFO", "Worker stopped")


def note(path: str, seconds: float = 0.0) -> str:
    """The job: create `path`.started, wait `seconds`, then append a line to `path`.

    The marker tells a test the job itself runs: a worker is "busy" already while its work
    horse still writes the job's start to Redis, which an outage at that moment would fail."""
    Path(f"{path}.started").touch()
    time.sleep(seconds)
    with open(path, "a", encoding="utf-8") as out:
        out.write("done\n")
    return "done"


def states(redis: Redis) -> list[str]:
    return [worker.get_state() for worker in Worker.all(connection=redis)]


def fast_loop(redis: Redis, burst: bool = False) -> WorkerLoop:
    """Waits for a job at most 1 s at a time (`worker_ttl` 16) and heart-beats a running job
    every second, so outages and stops are seen within a second."""
    return WorkerLoop(
        redis,
        [QUEUE],
        backoff=Backoff(first=0.05, cap=0.4),
        worker_ttl=16,
        burst=burst,
        job_monitoring_interval=1,
    )


def run_with(loop: WorkerLoop, script: Callable[[], None], seconds: float = 30) -> None:
    """Run `loop` here and `script` in a thread that stops the loop when it ends; raise what
    the script raised."""
    failures: list[BaseException] = []

    def act() -> None:
        try:
            script()
        except BaseException as error:
            failures.append(error)
        finally:
            loop.stop()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    loop.run()
    thread.join(seconds)
    assert not thread.is_alive(), "the script did not end"
    if failures:
        raise failures[0]


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.name == "jobs.worker_loop"
    ]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_idle_worker_outlives_a_redis_restart_and_logs_the_outage_once(
    restartable_redis: RedisServer, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    done = tmp_path / "done"
    jobs: list[Job] = []

    def script() -> None:
        assert wait_until(lambda: states(redis) == ["idle"], 10), "the worker never went idle"
        restartable_redis.stop()
        time.sleep(2)  # many attempts, with the backoff at its cap
        restartable_redis.start()  # empty: no persistence
        assert wait_until(lambda: states(redis) == ["idle"], 10), "no worker after the restart"
        jobs.append(Queue(QUEUE, connection=redis).enqueue(note, str(done)))
        assert wait_until(done.exists, 10), "the job enqueued after the restart never ran"

    run_with(fast_loop(redis), script)
    assert jobs[0].get_status(refresh=True) == "finished"
    assert lines(caplog) == [OUTAGE, BACK, STOPPED]
    assert errors(caplog) == []  # neither RQ's retries nor its pubsub thread logged
    assert states(redis) == []  # the last worker registered its death


def test_a_redis_outage_during_a_job_lets_it_finish_and_a_fresh_worker_takes_the_next(
    restartable_redis: RedisServer, redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The work horse needs no Redis for the job itself: the loop waits for it to end, then
    starts a fresh worker once Redis answers."""
    caplog.set_level(logging.INFO)
    first, second = tmp_path / "first", tmp_path / "second"

    def script() -> None:
        Queue(QUEUE, connection=redis).enqueue(note, str(first), 2.0)
        started = Path(f"{first}.started")
        assert wait_until(started.exists, 10), "the job never started"
        restartable_redis.stop()
        assert wait_until(first.exists, 10), "the job did not finish without Redis"
        time.sleep(1)
        restartable_redis.start()
        assert wait_until(lambda: states(redis) == ["idle"], 10), "no worker after the restart"
        Queue(QUEUE, connection=redis).enqueue(note, str(second))
        assert wait_until(second.exists, 10), "the next job never ran"

    run_with(fast_loop(redis), script)
    assert first.read_text() == second.read_text() == "done\n"
    assert lines(caplog) == [OUTAGE, WAITING, BACK, STOPPED]


def test_a_redis_refusing_writes_is_logged_once_and_retried(
    redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (Redis answers, with an error): logged with its traceback once, not at
    every retry, then one line when a worker starts again."""
    caplog.set_level(logging.INFO)
    done = tmp_path / "done"
    redis.config_set("maxmemory", 1)  # every write answers "OOM command not allowed"

    def script() -> None:
        time.sleep(1.5)  # many attempts
        redis.config_set("maxmemory", 0)
        assert wait_until(lambda: states(redis) == ["idle"], 10), "no worker after the fix"
        Queue(QUEUE, connection=redis).enqueue(note, str(done))
        assert wait_until(done.exists, 10), "the job never ran"

    run_with(fast_loop(redis), script)
    logged = lines(caplog)
    assert logged == [
        ("ERROR", "The worker failed: a fresh one starts"),
        ("INFO", "The worker runs again"),
        STOPPED,
    ]
    (failed,) = [r for r in caplog.records if r.getMessage().startswith("The worker failed")]
    assert failed.exc_info is not None and isinstance(failed.exc_info[1], OutOfMemoryError)


def test_sigterm_lets_the_running_job_finish_then_the_loop_stops(
    redis: Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    done = tmp_path / "done"
    loop = fast_loop(redis)
    before = signal.getsignal(signal.SIGTERM)
    job = Queue(QUEUE, connection=redis).enqueue(note, str(done), 1.5)

    def script() -> None:
        assert wait_until(lambda: states(redis) == ["busy"], 10), "the job never started"
        os.kill(os.getpid(), signal.SIGTERM)  # RQ's handler: the loop is inside work()
        assert wait_until(lambda: loop.stopping.is_set(), 5)

    started = time.monotonic()
    run_with(loop, script)
    assert done.read_text() == "done\n" and job.get_status(refresh=True) == "finished"
    assert time.monotonic() - started < 10
    assert signal.getsignal(signal.SIGTERM) == before  # the loop put the handlers back
    assert lines(caplog)[-1] == STOPPED and errors(caplog) == []


def test_a_second_sigterm_kills_the_running_job_and_exits(redis: Redis, tmp_path: Path) -> None:
    done = tmp_path / "done"
    loop = fast_loop(redis)
    before = signal.getsignal(signal.SIGTERM)
    Queue(QUEUE, connection=redis).enqueue(note, str(done), 5.0)

    def script() -> None:
        assert wait_until(lambda: states(redis) == ["busy"], 10), "the job never started"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a second signal within a second (worker pools send two)
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(SystemExit):
        run_with(loop, script)
    time.sleep(0.5)
    assert not done.exists()  # the work horse was killed with the worker
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_burst_worker_started_while_redis_is_down_waits_for_it(
    restartable_redis: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    restartable_redis.stop()
    timer = threading.Timer(1.5, restartable_redis.start)
    timer.start()
    started = time.monotonic()
    try:
        fast_loop(redis, burst=True).run()
    finally:
        timer.join()
    assert time.monotonic() - started >= 1.5
    assert lines(caplog) == [OUTAGE, BACK, STOPPED]


@pytest.mark.postgres
def test_the_cli_burst_worker_runs_what_is_queued_and_exits(
    make_api: Callable[..., ApiClient],
    pg_url: str,
    restartable_redis: RedisServer,
    redis: Redis,
    tmp_path: Path,
) -> None:
    done = tmp_path / "done"
    job = Queue(QUEUE, connection=redis).enqueue(note, str(done))
    app = make_api(Config(database_url=pg_url, redis_url=restartable_redis.url)).app
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert done.read_text() == "done\n" and job.get_status(refresh=True) == "finished"
    assert states(redis) == []
