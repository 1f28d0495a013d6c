"""Jobs in process, for the embedded default (no `REDIS_URL`): a daemon thread that runs the
same job functions the scheduler would enqueue, at the same times (SPEC §6 close times, the
threshold check every minute, yesterday's reconciliation from 05:00) plus the charge and webhook
sweeps on every tick. A restart runs
each close once at start; the jobs are idempotent, so that only catches up what was missed.
`wake()` runs a tick at once (an admin asked for a charge now)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from billing.invoicing.periods import SCHEDULED, last_close_time
from jobs.billing import billing_cycle
from jobs.holds import purge_expired_holds
from jobs.notifications import deliver_notifications
from jobs.partitions import maintain_partitions
from jobs.payments import dispatch_charges
from jobs.reconciliation import reconcile_yesterday
from jobs.schedule import THRESHOLD_INTERVAL_SECONDS

log = logging.getLogger(__name__)


class EmbeddedScheduler:
    def __init__(
        self,
        clock: Callable[[], datetime],
        run: Callable[[str], object] = billing_cycle,
        poll_seconds: float = 5.0,
        sweeps: tuple[Callable[[], object], ...] = (
            dispatch_charges,
            deliver_notifications,
            purge_expired_holds,
            maintain_partitions,
        ),
        daily: Callable[[], object] | None = reconcile_yesterday,
    ) -> None:
        self.clock, self.run, self.poll_seconds, self.sweeps = clock, run, poll_seconds, sweeps
        self.daily = daily
        self.last_daily: datetime | None = None
        self.last_close: dict[str, datetime] = {}
        self.last_threshold: datetime | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    def tick(self) -> list[str]:
        """Run what is due now; the frequencies run."""
        now, ran = self.clock(), []
        for frequency in SCHEDULED:
            due = last_close_time(frequency, now)
            if self.last_close.get(frequency) != due:
                self._guarded(self.run, frequency)
                self.last_close[frequency] = due
                ran.append(frequency)
        interval = timedelta(seconds=THRESHOLD_INTERVAL_SECONDS)
        if self.last_threshold is None or now - self.last_threshold >= interval:
            self._guarded(self.run, "threshold")
            self.last_threshold = now
            ran.append("threshold")
        for sweep in self.sweeps:
            self._guarded(sweep)
        morning = now.replace(hour=5, minute=0, second=0, microsecond=0)
        if self.daily is not None and now >= morning and self.last_daily != morning:
            self._guarded(self.daily)
            self.last_daily = morning
            ran.append("reconcile")
        return ran

    def _guarded(self, job: Callable[..., object], *args: str) -> None:
        try:
            job(*args)
        except Exception:  # a failed job is logged; the next tick tries again
            log.exception("embedded job failed", extra={"job": getattr(job, "__name__", "?")})

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="embedded-scheduler", daemon=True)
        thread.start()
        return thread

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
