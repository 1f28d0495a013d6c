"""The worker's supervising loop: RQ workers started one after another, so that no Redis
outage ends `smsledger worker` (DESIGN "Jobs and time", docs/decisions/0011).

Why a loop around `Worker.work()`: RQ 2.12 retries a lost Redis only while it waits for a job
(with its own backoff of up to 60 s and an error line per retry). Anywhere else (the heartbeats
it sends while a job runs, the bookkeeping after it, the suspension check, the maintenance of
the registries) `work()` logs "found an unhandled exception, quitting" or "Redis connection
timeout, quitting", leaves its loop, and its teardown (`register_death`) raises again on the
dead connection, so the error leaves `work()` and ends the process; and a `Worker` cannot even
be built while Redis is down (`__init__` names its connection, `_set_ip_address`). A worker
that has left `work()` is not entered again (its name would stay registered as alive, its
pubsub thread runs on): each run is a fresh `SupervisedWorker`. Between two runs the loop backs
off like the scheduler's (`Backoff`: 0.5 s doubling up to 5 s, with jitter) and logs an outage
once when it starts and once when Redis answers again (`FailureLog`), never per retry.

What `SupervisedWorker` changes in RQ's forking `Worker` (each job runs in a work horse, a
child process in its own process group, which a SIGKILL of the worker alone leaves running):
- A redis `ConnectionError` (`BusyLoadingError` included) or `TimeoutError` anywhere in its
  loop, the wait for a job included, ends `work()` the way a stop request does (`RedisLost`
  is a `StopRequested`): quietly, through RQ's teardown; the loop knows why and starts a fresh
  worker once Redis answers (within the backoff's 5 s plus redis-py's own retries of one
  command, about 4 s).
- Any other error RQ's loop swallows is remembered as well, so a `--burst` run that failed is
  not taken for one that finished; it is logged (RQ's line with the traceback, and the loop's)
  and retried the same way.
- SIGTERM and SIGINT keep RQ's meaning: the first is a warm shutdown (a running job finishes,
  then the process exits), a second one a cold shutdown (the work horse is killed at once).
  Between two workers the loop's own handlers mean the same, and only a signal, or a finished
  `--burst`, ends the loop.
- Its pubsub thread (what `rq` commands such as `rq suspend` reach) retries a lost Redis without
  logging: the loop reports the outage.

A job that was running when Redis went away is not lost, and two mechanisms share the work:
- Its work horse needs no Redis for the job itself (PostgreSQL and Sippy): the loop waits for
  the horse to end (the job's timeout bounds it) before it starts a fresh worker, so the job is
  neither cut off nor run twice at once by this process. Only its RQ bookkeeping (result,
  registries) fails when Redis is still away at the end.
- RQ's abandoned-job handling guarantees the bookkeeping, not the work: a job left in the
  `StartedJobRegistry` by a worker that died or lost Redis is no longer heart-beaten, and
  `StartedJobRegistry.cleanup` (run by every worker's maintenance, at its start and every 10
  minutes) moves it to the `FailedJobRegistry` once its heartbeat TTL (the monitoring interval
  plus 60 s) is past. It would re-queue it only if it had been enqueued with a `Retry`, which
  smsledger's jobs are not; so RQ never shows a job started forever, and never runs it again.
  A Redis restarted empty has lost that job with everything else: nothing to clean. Nor does
  RQ keep a job it had taken off its queue just before Redis went away, before its start was
  recorded.
- smsledger guarantees the work: every job is idempotent (a natural key decides whether it was
  done), and the sweeps find again what a lost job left undone. The payment sweep
  (`jobs.payments.dispatch_charges`, every minute) hands out every due charge and every open
  attempt older than the in-flight grace; an open attempt is looked up in Sippy by its
  reference and settled, never sent again (decision 0013), so a worker killed inside the
  Sippy call still charges the invoice exactly once (tests/integration/test_worker_faults.py).
  The notification sweep finds due webhooks the same way, and a close decides from the
  database what is still due.

Run it in the main thread: RQ's signal handlers and its work-horse monitor (SIGALRM) need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from redis import Redis
from redis.client import PubSub, PubSubWorkerThread
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.worker import WorkerStatus

from jobs.schedule import QUEUES
from jobs.scheduler_loop import OUTAGE_ERRORS, Backoff, FailureLog

log = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class RedisLost(StopRequested):
    """Ends a `SupervisedWorker`'s `work()` as a stop request would: Redis does not answer."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.error = error


class _Queue(Queue):
    """RQ's queue, whose wait for a job reports a lost Redis instead of retrying it: RQ's own
    retry would log an error per attempt and wait up to 60 s once Redis is back."""

    @classmethod
    def dequeue_any(cls, *args: Any, **kwargs: Any) -> tuple[Job, Queue] | None:
        try:
            return super().dequeue_any(*args, **kwargs)
        except OUTAGE_ERRORS as error:
            raise RedisLost(error) from error


class SupervisedWorker(Worker):
    """One run of `WorkerLoop`: RQ's forking `Worker`, changed where its loop meets a lost
    Redis, a failure or a stop request (see the module)."""

    queue_class = _Queue

    def __init__(self, *args: Any, loop: WorkerLoop, **kwargs: Any) -> None:
        self.loop = loop
        self.lost: Exception | None = None  # the Redis error that ended `work()`
        self.failure: Exception | None = None  # any other error RQ's loop swallowed
        self.cold = False  # RQ's cold shutdown ran (the horse is killed)
        self.torn_down = False
        # Raises: redis-py's errors while Redis does not answer (`_set_ip_address`).
        super().__init__(*args, **kwargs)

    @contextlib.contextmanager
    def _watch(self) -> Iterator[None]:
        """Remember why RQ's loop is about to end; a lost Redis ends it as a stop would."""
        try:
            yield
        except RedisLost as lost:
            self.lost = self.lost or lost.error
            raise
        except StopRequested:
            raise
        except OUTAGE_ERRORS as error:
            self.lost = self.lost or error
            raise RedisLost(error) from error
        except Exception as error:
            self.failure = self.failure or error
            raise

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self.loop.started()

    def check_for_suspension(self, burst: bool) -> None:
        # First in every turn of RQ's loop, never during a job: where a stop requested before
        # RQ's signal handlers were in place (or by `WorkerLoop.stop`) is seen.
        if self.loop.stopping.is_set():
            raise StopRequested()
        with self._watch():
            super().check_for_suspension(burst)

    def run_maintenance_tasks(self) -> None:
        with self._watch():
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call]

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        with self._watch():
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # Also sent between two waits for a job (each at most `dequeue_timeout`): a stop asked
        # by `WorkerLoop.stop` from another thread ends an idle worker there.
        if (
            self.loop.stopping.is_set()
            and pipeline is None
            and self.get_state() != WorkerStatus.BUSY
        ):
            raise StopRequested()
        with self._watch():
            super().heartbeat(timeout, pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        with self._watch():
            super().execute_job(job, queue)

    def teardown(self) -> None:
        super().teardown()  # type: ignore[no-untyped-call]
        self.torn_down = True

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.loop.stopping.set()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        try:
            super().request_force_stop(signum, frame)
        except SystemExit:
            self.cold = True
            raise

    def _pubsub_exception_handler(
        self, exc: Exception, pubsub: PubSub, pubsub_thread: PubSubWorkerThread
    ) -> None:
        if isinstance(exc, RedisConnectionError):
            time.sleep(2.0)  # as RQ does, without its error line: the loop logs the outage
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)


class WorkerLoop:
    """RQ workers on `queue_names`, a fresh one after each that Redis (or anything) ended,
    until SIGTERM, SIGINT or `stop()`, or until a `burst` run finished (`run`).

    `worker_options` go to each `Worker` (tests shorten `worker_ttl`, which bounds one wait
    for a job, and `job_monitoring_interval`, the heartbeat while a job runs)."""

    def __init__(
        self,
        connection: Redis,
        queue_names: Sequence[str] = QUEUES,
        *,
        burst: bool = False,
        backoff: Backoff | None = None,
        **worker_options: Any,
    ) -> None:
        self.connection, self.queue_names, self.burst = connection, queue_names, burst
        self.backoff = backoff or Backoff()
        self.worker_options = worker_options
        self.failures = FailureLog(
            log,
            outage="Redis does not answer: the worker retries until it does",
            failure="The worker failed: a fresh one starts",
            outage_over="Redis answers again: the worker resumes",
            failure_over="The worker runs again",
        )
        self.stopping = threading.Event()  # a warm shutdown was requested
        self.horse_pid = 0  # the work horse of a worker that ended during its job
        self.unregistered: SupervisedWorker | None = None  # its death is not in Redis yet
        self._previous: dict[int, _Handler] = {}

    def run(self) -> None:
        """Run workers until stopped (see the class); SIGTERM or SIGINT stop it as they stop
        an RQ worker (a second one at once, killing the running job's work horse)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
        self._install_signal_handlers()
        try:
            while not self._run_worker():
                self._sleep(self.backoff.next_delay())
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)
        log.info("Worker stopped")

    def stop(self) -> None:
        """A warm shutdown, from any thread: an idle worker stops within one wait for a job
        (`dequeue_timeout`), a busy one after its job."""
        self.stopping.set()

    def started(self) -> None:
        """A worker registered itself (`SupervisedWorker.bootstrap`): Redis answers."""
        if self.failures.recovered():
            self.backoff.reset()
        if self.unregistered is not None:
            with contextlib.suppress(RedisError):
                self.unregistered.register_death()  # type: ignore[no-untyped-call]
            self.unregistered = None

    def _run_worker(self) -> bool:
        """One worker from its start to its end; whether the loop is done."""
        worker: SupervisedWorker | None = None
        error: Exception | None = None
        try:
            worker = SupervisedWorker(
                list(self.queue_names), connection=self.connection, loop=self, **self.worker_options
            )
            worker.work(burst=self.burst)
        except Exception as raised:  # a fresh worker starts after the backoff, never fatal
            error = raised
        finally:
            self._install_signal_handlers()  # work() left RQ's, bound to that worker
        if worker is not None:
            if worker.cold:  # RQ's cold shutdown, whose teardown then failed on Redis
                raise SystemExit()
            error = worker.lost or worker.failure or error
            self._retire(worker)
        if error is None:
            if self.stopping.is_set() or self.burst:
                return True
            error = RuntimeError("RQ's work loop ended by itself")
        self.failures.failed(error)
        self._wait_for_horse()
        return self.stopping.is_set()

    def _retire(self, worker: SupervisedWorker) -> None:
        """What RQ's teardown did not do when it failed: stop the pubsub thread now, register
        the death once Redis answers (`started`), wait for a work horse still running."""
        self.horse_pid = worker.horse_pid
        if worker.torn_down:
            return
        if worker.pubsub_thread is not None:
            worker.pubsub_thread.stop()  # it ends after its current wait (2 s when Redis is away)
        self.unregistered = worker

    def _wait_for_horse(self) -> None:
        """Let the job of a worker that ended during it finish: it needs PostgreSQL and Sippy,
        not Redis. A second stop signal kills it instead (`_on_signal`)."""
        if not self._horse_alive():
            self.horse_pid = 0
            return
        log.info("Waiting for the running job to end", extra={"horse_pid": self.horse_pid})
        while self._horse_alive():
            time.sleep(0.2)
        self.horse_pid = 0

    def _horse_alive(self) -> bool:
        """Whether the work horse is still running; reaps it once it ended."""
        if not self.horse_pid:
            return False
        try:
            pid, _ = os.waitpid(self.horse_pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (RQ's monitor got that far)
            return False
        return pid == 0

    def _kill_horse(self) -> None:
        if self._horse_alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(self.horse_pid), signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.horse_pid, 0)
        self.horse_pid = 0

    def _sleep(self, seconds: float) -> None:
        """In short steps, so a stop request waits at most one step."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Between two workers: the first signal stops the loop once a running job ended, a
        second one at once."""
        if not self.stopping.is_set():
            log.info("Warm shut down requested", extra={"signal": signal.Signals(signum).name})
            self.stopping.set()
            return
        log.warning("Cold shut down", extra={"signal": signal.Signals(signum).name})
        self._kill_horse()
        raise SystemExit()  # as RQ's cold shutdown does

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
