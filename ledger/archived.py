"""The archive cut, as the ledger's reads see it: before it, transfers are in an archive, not
in the database (docs/archives.md). A balance `as_of` an earlier instant, a statement starting
earlier, a posting dated earlier: `ArchivedPeriod` (HTTP 410 `archived`), naming the archive.
After it nothing changes: what the dropped months summed to per account is in
`archived_totals`, added wherever transfers are summed from the beginning."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.errors import ArchivedPeriod
from ledger.tables import archived_months, archived_totals


def month_end(month: date) -> datetime:
    """The instant a month ends (the next one's first instant, UTC)."""
    year, index = divmod(month.year * 12 + month.month, 12)
    return datetime(year, index + 1, 1, tzinfo=UTC)


def archive_cut(session: Session) -> tuple[datetime, str] | None:
    """The first instant still in the database and the latest archive's path; None when
    nothing was archived."""
    row = session.execute(
        sa.select(archived_months.c.month, archived_months.c.path)
        .order_by(archived_months.c.month.desc())
        .limit(1)
    ).first()
    return None if row is None else (month_end(row.month), row.path)


def refuse_before_cut(session: Session, instant: datetime | None, what: str) -> None:
    """Raises: ArchivedPeriod when `instant` is before the cut (None: from the beginning, which
    is before it whenever anything was archived)."""
    cut = archive_cut(session)
    if cut is None or (instant is not None and instant >= cut[0]):
        return
    raise ArchivedPeriod(
        f"{what} before {cut[0].isoformat()} is archived ({cut[1]}); ask from that instant on,"
        " or read the archive",
        archived_before=cut[0].isoformat(),
        archive=cut[1],
    )


def archived_sums(session: Session, account_id: Any) -> tuple[int, int]:
    """(debits, credits) of the account's archived transfers (0, 0 when none)."""
    row = session.execute(
        sa.select(archived_totals.c.debits, archived_totals.c.credits).where(
            archived_totals.c.account_id == account_id
        )
    ).first()
    return (0, 0) if row is None else (int(row.debits), int(row.credits))
