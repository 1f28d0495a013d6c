"""The embedded default's in-process scheduler as a real thread: it runs what is due at start,
runs the sweeps again when woken (an admin asked for a charge now), and stops when told."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from jobs.embedded import EmbeddedScheduler


def wait_until(condition: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.01)
    return False


def test_the_thread_ticks_at_start_runs_again_when_woken_and_stops() -> None:
    now = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    ran: list[str] = []
    swept: list[int] = []
    lock = threading.Lock()

    def sweep() -> None:
        with lock:
            swept.append(1)

    scheduler = EmbeddedScheduler(
        lambda: now, run=ran.append, poll_seconds=60, sweeps=(sweep,), daily=None
    )
    thread = scheduler.start()
    assert wait_until(lambda: len(swept) == 1)
    assert {"daily", "weekly", "monthly", "threshold"} <= set(ran)
    scheduler.wake()  # no 60 s wait: the sweep runs again at once
    assert wait_until(lambda: len(swept) == 2)
    scheduler.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_failing_job_is_logged_and_the_next_one_still_runs() -> None:
    now = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    swept: list[str] = []

    def broken() -> None:
        raise RuntimeError("Sippy is down")

    scheduler = EmbeddedScheduler(
        lambda: now, run=lambda _: None, sweeps=(broken, lambda: swept.append("ok")), daily=None
    )
    scheduler.tick()
    assert swept == ["ok"]
