"""The monthly partitions of the tables that grow per SMS (migration 0011, decision 0026):
created ahead of time, and watched.

`ensure_partitions` asks `ledger_ensure_month_partitions` for every month from one before the
current through `MONTHS_AHEAD` after it; the scheduled job runs it daily, so a month's partition
exists for months before its first SMS. Should the job stop for months, nothing fails: rows of a
month without a partition land in the default partition, `/metrics` shows them
(`smsledger_partition_default_rows`) and how many months are ready
(`smsledger_partition_months_ahead`), and an alert fires on either.

SQLite has no partitions: every function here answers nothing there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.archived import archive_cut

PARTITIONED_TABLES = ("transfers", "invoice_usage")
"""Range-partitioned by month of `effective_at`, in the order they are maintained."""
MONTHS_AHEAD = 3
MONTHS_BACK = 1
"""Late usage of the month before is common (a message sent at 23:59 posted after midnight)."""
DEFAULT_ROWS_COUNTED_UP_TO = 100_000
"""`/metrics` counts a default partition's rows up to this (it should hold none)."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    table: str
    partition: str
    state: str  # created, exists, rows_in_default


def _month(moment: date, shift: int) -> date:
    index = moment.year * 12 + moment.month - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


def month_partition(table: str, month: date) -> str:
    """The name of `table`'s partition for the month of `month` (`transfers_p2026_12`)."""
    return f"{table}_p{month.year:04d}_{month.month:02d}"


def ensure_partitions(
    session: Session, now: datetime, ahead: int = MONTHS_AHEAD, back: int = MONTHS_BACK
) -> list[PartitionState]:
    """Create the missing month partitions from `back` months before `now`'s month through
    `ahead` after it, for every partitioned table; what each month's partition is now."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    this_month = now.astimezone(UTC).date().replace(day=1)
    first, last = _month(this_month, -back), _month(this_month, ahead)
    cut = archive_cut(session)
    if cut is not None:  # archived months have no partition, only the tombstone
        first = max(first, cut[0].date())
    states = []
    for table in PARTITIONED_TABLES:
        rows = session.execute(
            sa.text("SELECT * FROM ledger_ensure_month_partitions(:table, :first, :last)"),
            {"table": table, "first": first, "last": last},
        )
        states += [PartitionState(table, name, state) for name, state in rows]
    return states


def months_ahead(session: Session, now: datetime) -> dict[str, int]:
    """Per partitioned table, how many consecutive months after `now`'s have a partition."""
    if session.get_bind().dialect.name != "postgresql":
        return {}
    this_month = now.astimezone(UTC).date().replace(day=1)
    ready: dict[str, int] = {}
    for table in PARTITIONED_TABLES:
        count = 0
        while count < 24 and _exists(
            session, month_partition(table, _month(this_month, count + 1))
        ):
            count += 1
        ready[table] = count
    return ready


def default_rows(session: Session) -> dict[str, int]:
    """Per partitioned table, the rows its default partition holds (months without their own
    partition), counted up to `DEFAULT_ROWS_COUNTED_UP_TO`."""
    if session.get_bind().dialect.name != "postgresql":
        return {}
    return {
        table: int(
            session.execute(
                sa.text(
                    f"SELECT count(*) FROM (SELECT 1 FROM {table}_default"
                    f" LIMIT {DEFAULT_ROWS_COUNTED_UP_TO}) AS rows"
                )
            ).scalar_one()
        )
        for table in PARTITIONED_TABLES
    }


def _exists(session: Session, name: str) -> bool:
    found = session.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name})
    return bool(found.scalar_one())
