"""Dropping an archived month (docs/archives.md): in the caller's one transaction, after the
month's archive was written and read back equal (infra/archive_files.py):

1. the month is checked again under the archive's lock: still the oldest month in the
   database, still ready (infra/archive_plan.py), its rows and totals still the manifest's;
2. its per-account debits and credits are added to `archived_totals`;
3. its partitions of `transfers` and `invoice_usage` are dropped;
4. the tombstone partition `transfers_archived` is made again to cover everything before the
   new cut, with `CHECK (false)` named `transfers_archived`: a posting dated in an archived
   month is refused by the database (HTTP 410 `archived`) instead of landing in the default
   partition;
5. the month is recorded in `archived_months`.

Either all of it commits or none of it does: an archive killed at any point leaves the month
either in the database (and its files, which the next run verifies and uses) or archived.
The keys of the month's transfers stay in `transfer_keys`: a replay of an archived message is
recognised (and refused as archived), never posted again.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from infra.archive_files import MANIFEST, ArchiveError, WrittenMonth, verify_month
from infra.archive_plan import partitioned_months, plan
from infra.partitions import month_partition
from ledger.archived import month_end
from ledger.tables import archived_months

_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtextextended('smsledger-archive', 0))")

_ADD_TOTALS = sa.text(
    "INSERT INTO archived_totals (account_id, debits, credits)"
    " SELECT account_id, sum(debits), sum(credits) FROM ("
    "   SELECT debit_account_id AS account_id, amount AS debits, 0 AS credits FROM transfers"
    "   WHERE effective_at >= :start AND effective_at < :end"
    "   UNION ALL"
    "   SELECT credit_account_id, 0, amount FROM transfers"
    "   WHERE effective_at >= :start AND effective_at < :end"
    " ) AS sides GROUP BY account_id"
    " ON CONFLICT (account_id) DO UPDATE SET debits = archived_totals.debits + excluded.debits,"
    " credits = archived_totals.credits + excluded.credits"
)


def lock_archive(session: Session) -> None:
    """One archive at a time, until the transaction ends."""
    session.execute(_LOCK)


def drop_month(session: Session, written: WrittenMonth, now: datetime) -> None:
    """Steps 1 to 5 of the module docstring, in the caller's transaction.

    Raises: ArchiveError when the month is no longer ready or no longer what was archived."""
    lock_archive(session)
    month = written.month
    label = month.strftime("%Y-%m")
    months = partitioned_months(session)
    if not months or months[0] != month:
        raise ArchiveError(f"{label} is not the oldest month in the database any more")
    (state,) = plan(session, month_end(month).date())[:1]
    if not state.ready:
        raise ArchiveError(f"{label} is no longer ready: {'; '.join(state.reasons)}")
    verify_month(session, written.path)  # the database's rows and totals still the files'
    start, end = state.start, state.end
    session.execute(_ADD_TOTALS, {"start": start, "end": end})
    for table in ("transfers", "invoice_usage"):
        session.execute(sa.text(f"DROP TABLE {month_partition(table, month)}"))
    session.execute(sa.text("DROP TABLE IF EXISTS transfers_archived"))
    session.execute(
        sa.text(
            "CREATE TABLE transfers_archived PARTITION OF transfers"
            f" FOR VALUES FROM (MINVALUE) TO ('{end.isoformat()}')"
        )
    )
    session.execute(
        sa.text("ALTER TABLE transfers_archived ADD CONSTRAINT transfers_archived CHECK (false)")
    )
    manifest = (written.path / MANIFEST).read_bytes()
    session.execute(
        sa.insert(archived_months).values(
            month=month,
            path=str(written.path),
            manifest_sha256=hashlib.sha256(manifest).hexdigest(),
            transfers=written.manifest["files"]["transfers"]["rows"],
            archived_at=now,
        )
    )
