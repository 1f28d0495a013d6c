"""One archive run (`smsledger archive`, and the scheduled archive job): every ready month
before the cut written, read back and dropped, oldest first, stopping at the first that fails
(the later months wait for it). See infra/archive_plan.py, archive_files.py, archive_drop.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from infra.archive_drop import drop_month
from infra.archive_files import ArchiveError, write_month
from infra.archive_plan import MonthPlan, plan
from ledger.db import unit_of_work

PAUSE_AT = "SMSLEDGER_FAULT_PAUSE_ARCHIVE_AT"
"""`written` or `dropped`: stop after a month's files are written, or after its partitions are
dropped but before that commits (print `paused at …` and sleep): the fault tests kill the
process there, by PID, and run it again."""


@dataclass(frozen=True, slots=True)
class ArchivePolicy:
    """The scheduled archive's settings: where, and how many months stay in the database."""

    root: Path
    retention_months: int

    def cut(self, now: datetime) -> date:
        """The first month kept: `retention_months` before `now`'s month."""
        index = now.year * 12 + now.month - 1 - self.retention_months
        return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True, slots=True)
class MonthOutcome:
    plan: MonthPlan
    archived: bool
    transfers: int = 0
    error: str | None = None


def archive_months(
    sessions: Callable[[], Session],
    root: Path,
    before: date,
    clock: Callable[[], datetime],
    say: Callable[[str], None] = lambda _line: None,
) -> list[MonthOutcome]:
    """Archive every ready month before `before`; each month's outcome (held back ones too)."""
    with unit_of_work(sessions, commit=False) as session:
        months = plan(session, before)
    outcomes: list[MonthOutcome] = []
    for month in months:
        if not month.ready or any(o.error for o in outcomes):
            outcomes.append(MonthOutcome(month, False))
            continue
        try:
            with unit_of_work(sessions, commit=False) as session:
                written = write_month(session, root, month.month, clock())
            _pause_if_asked("written", say)
            with unit_of_work(sessions) as session:
                drop_month(session, written, clock())
                _pause_if_asked("dropped", say)
        except ArchiveError as error:
            outcomes.append(MonthOutcome(month, False, error=str(error)))
            continue
        outcomes.append(MonthOutcome(month, True, written.manifest["files"]["transfers"]["rows"]))
    return outcomes


def _pause_if_asked(point: str, say: Callable[[str], None]) -> None:
    if os.environ.get(PAUSE_AT) == point:
        say(f"paused at {point}")
        sys.stdout.flush()
        time.sleep(3600)
