"""The scheduler's supervising loop: rq-scheduler's enqueueing, driven so that no Redis outage
ends the process and vanished schedules come back by themselves (DESIGN "Jobs and time",
docs/decisions/0011).

Why this loop drives `Scheduler.enqueue_jobs()` instead of calling `Scheduler.run()`: `run()`
lets the first exception of any iteration leave its loop (its `finally` then fails again on the
dead connection and the process exits), so surviving would mean re-entering it. Re-entering is
fragile: the lock of the failed iteration stays taken until it expires, so the next iterations
skip with a warning each; `register_birth()` refuses a name whose key is still alive; and one
iteration sleeps a whole interval (60 s), which would also delay noticing missing schedules.
Here one pass is one small unit under rq-scheduler's own lock (`rq:scheduler_lock`, so
rq-scheduler's tools see the usual keys): keep this scheduler's key alive, put back missing
schedules, enqueue what is due, release the lock. A failed pass is retried after a capped,
jittered exponential backoff; only SIGTERM or SIGINT stops the process. The connection needs
no settings of its own: redis-py 8 gives up on a connect or a read after 5 s, so a silent
network fails a pass instead of hanging it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq_scheduler import Scheduler

from jobs.schedule import missing_schedules, register

log = logging.getLogger(__name__)

TICK_SECONDS = 5
"""Between two passes: how late a due job is enqueued, and how long a vanished schedule stays
missing once Redis answers. rq-scheduler's lock and key expire 10 s after a missed pass."""

OUTAGE_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
"""Redis does not answer: refused, reset, timed out, or still loading its data
(`BusyLoadingError` is a `ConnectionError`). rq-scheduler raises redis-py's errors unwrapped."""

_OUTAGE = "redis_unavailable"


class FailureLog:
    """The start and the end of a run of failed attempts, logged once each instead of at every
    retry: a warning when Redis stops answering (`OUTAGE_ERRORS`), an error with its traceback
    for any other failure (again when the kind of failure changes), one info line when an
    attempt succeeds again. Shared by the scheduler's and the worker's supervising loops, each
    with its own logger and messages."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        outage: str,
        failure: str,
        outage_over: str,
        failure_over: str,
    ) -> None:
        self.logger = logger
        self.outage, self.failure = outage, failure
        self.outage_over, self.failure_over = outage_over, failure_over
        self.kind: str | None = None  # what is failing: `_OUTAGE` or an exception's name
        self.since = 0.0

    def failed(self, error: BaseException) -> None:
        kind = _OUTAGE if isinstance(error, OUTAGE_ERRORS) else type(error).__name__
        if self.kind == kind:
            return
        if self.kind is None:
            self.since = time.monotonic()
        self.kind = kind
        if kind == _OUTAGE:
            self.logger.warning(self.outage, extra={"error": f"{type(error).__name__}: {error}"})
        else:
            self.logger.error(self.failure, exc_info=error)

    def recovered(self) -> bool:
        """Log the end of a run of failures, if one was going on; whether one was."""
        if self.kind is None:
            return False
        self.logger.info(
            self.outage_over if self.kind == _OUTAGE else self.failure_over,
            extra={"after_seconds": round(time.monotonic() - self.since, 1)},
        )
        self.kind = None
        return True


class Backoff:
    """Waits between failed attempts (a scheduler pass, a worker's run: `jobs.worker_loop`):
    0.5 s doubling up to `cap`, each shortened at random by up to a quarter so that restarted
    processes do not retry in step.

    The scheduler's cap is one pass interval (5 s): a single process sending one cheap command
    every 5 s costs a Redis nothing, while a longer cap (15 s was measured) left the schedules
    missing, and due work waiting, up to that long after Redis was back.
    """

    def __init__(
        self,
        first: float = 0.5,
        cap: float = TICK_SECONDS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.first, self.cap, self.rng = first, cap, rng
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay * (1.0 - 0.25 * self.rng())

    def reset(self) -> None:
        self.failures = 0


class SchedulerLoop:
    """One rq-scheduler instance, run pass by pass (`tick`) until stopped (`run`)."""

    def __init__(
        self,
        scheduler: Scheduler,
        tick_seconds: float = TICK_SECONDS,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.scheduler, self.tick_seconds, self.clock = scheduler, tick_seconds, clock
        self.backoff = backoff or Backoff()
        # A start registers every schedule once (their definitions may have changed since).
        self.registered = False
        # True while this process may still hold the lock: a failed pass could not release it.
        self.holding_lock = False
        self.lock_warned = False
        self.failures = FailureLog(
            log,
            outage="Redis does not answer: the scheduler retries until it does",
            failure="A scheduler pass failed: retrying",
            outage_over="Redis answers again: scheduling resumes",
            failure_over="Scheduler passes succeed again",
        )
        self._stopping = False

    @classmethod
    def on(cls, connection: Redis) -> SchedulerLoop:
        """A loop over a new rq-scheduler instance whose lock and key outlive one pass."""
        return cls(Scheduler(queue_name="billing", connection=connection, interval=TICK_SECONDS))

    def tick(self) -> list[str]:
        """One pass; the schedule ids (re)registered in it, all of them on the first.

        Raises: redis-py's errors when Redis does not answer; `run` retries them.
        """
        scheduler = self.scheduler
        if self.holding_lock:
            scheduler.remove_lock()
            self.holding_lock = False
        self._keep_alive()
        if not scheduler.acquire_lock():
            if not self.lock_warned:
                log.warning("Another scheduler holds the lock: this one waits (run only one)")
                self.lock_warned = True
            return []
        self.holding_lock, self.lock_warned = True, False
        try:
            registered = self._restore()
            scheduler.enqueue_jobs()
        finally:
            scheduler.remove_lock()
            self.holding_lock = False
        return registered

    def run(self) -> None:
        """Pass every `tick_seconds` until `stop()`, SIGTERM or SIGINT (a second signal exits
        at once); a failed pass never ends the loop, it is retried after the backoff."""
        self._install_signal_handlers()
        try:
            while not self._stopping:
                self._sleep(self._attempt())
        finally:
            self.retire()
        log.info("Scheduler stopped")

    def run_once(self) -> list[str]:
        """One pass, then retire (`smsledger scheduler --burst`); what `tick` registered.

        Raises: redis-py's errors when Redis does not answer.
        """
        try:
            return self.tick()
        finally:
            self.retire()

    def stop(self) -> None:
        self._stopping = True

    def retire(self) -> None:
        """Release the lock and record this scheduler's death, if Redis answers: it may be
        the reason the process stops."""
        with contextlib.suppress(RedisError):
            self.scheduler.remove_lock()
            self.scheduler.register_death()

    def _keep_alive(self) -> None:
        """This scheduler's key (birth, refreshed by heartbeats) is how rq-scheduler's tools see
        a live scheduler; a Redis that restarted empty has lost it."""
        if self.scheduler.connection.exists(self.scheduler.key):
            self.scheduler.heartbeat()
        else:
            self.scheduler.register_birth()

    def _restore(self) -> list[str]:
        if not self.registered:
            ids = register(self.scheduler, self.clock(), catch_up=True)
            self.registered = True
            log.info("Schedules registered", extra={"schedule_ids": ids})
            return ids
        missing = missing_schedules(self.scheduler.connection)
        if missing:
            register(self.scheduler, self.clock(), catch_up=True)
            log.warning("Missing schedules registered again", extra={"schedule_ids": missing})
        return missing

    def _attempt(self) -> float:
        """One guarded pass; how long to wait before the next."""
        try:
            self.tick()
        except Exception as error:  # any failure of one pass is retried, never fatal
            self.failures.failed(error)
            return self.backoff.next_delay()
        if self.failures.recovered():
            self.backoff.reset()
        return self.tick_seconds

    def _sleep(self, seconds: float) -> None:
        """In short steps, so a stop request waits at most one step (a signal handler only
        sets a flag: `time.sleep` resumes after it)."""
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            if self._stopping:
                raise SystemExit(128 + signum)
            self.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
