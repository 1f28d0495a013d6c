"""Jobs in process, for the embedded default (no `REDIS_URL`): a daemon thread that runs the
same job functions the scheduler would enqueue, at the same times (SPEC §6 close times, the
threshold check every minute). A restart runs each close once at start; the jobs are
idempotent, so that only catches up what was missed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from billing.periods import SCHEDULED, last_close_time
from jobs.billing import billing_cycle
from jobs.schedule import THRESHOLD_INTERVAL_SECONDS

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    def __init__(
        self,
        clock: Callable[[], datetime],
        run: Callable[[str], object] = billing_cycle,
        poll_seconds: float = 15.0,
    ) -> None:
        self.clock, self.run, self.poll_seconds = clock, run, poll_seconds
        self.last_close: dict[str, datetime] = {}
        self.last_threshold: datetime | None = None
        self._stop = threading.Event()

    def tick(self) -> list[str]:
        """Run what is due now; the frequencies run."""
        now, ran = self.clock(), []
        for frequency in SCHEDULED:
            due = last_close_time(frequency, now)
            if self.last_close.get(frequency) != due:
                self._run(frequency)
                self.last_close[frequency] = due
                ran.append(frequency)
        interval = timedelta(seconds=THRESHOLD_INTERVAL_SECONDS)
        if self.last_threshold is None or now - self.last_threshold >= interval:
            self._run("threshold")
            self.last_threshold = now
            ran.append("threshold")
        return ran

    def _run(self, frequency: str) -> None:
        try:
            self.run(frequency)
        except Exception:  # a failed cycle is logged by run_cycle; the next tick tries again
            log.exception("embedded billing cycle failed", extra={"type": frequency})

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="embedded-scheduler", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.poll_seconds)
