"""Which months an archive may take (issue 18 §2), and what holds the others back.

A month can be archived only when nothing about it can change any more:
- every invoice whose period overlaps it is final: paid, cancelled or refunded (a pending,
  processing or failed invoice will still be charged, retried or cancelled);
- every usage transfer in it is invoiced or reversed (unbilled usage would be billed later,
  and the close must read it);
- it has its own partition, and none of its rows sit in the default partition (the archive
  drops a month by dropping its partition).

Months go in order, oldest first: the first month held back holds back every later one, so
what is archived is always everything before one instant (`as_of` before it answers
`410 archived`), never a month with holes around it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoice import InvoiceStatus
from billing.tables import invoice_usage, invoices
from ledger.archived import month_end
from ledger.tables import transfer_keys, transfers

FINAL = (InvoiceStatus.PAID.value, InvoiceStatus.CANCELLED.value, InvoiceStatus.REFUNDED.value)


@dataclass(frozen=True, slots=True)
class MonthPlan:
    month: date  # its first day
    ready: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return datetime(self.month.year, self.month.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return month_end(self.month)


def parse_month(text: str) -> date:
    """`YYYY-MM` as the month's first day.

    Raises: ValueError naming the expected form."""
    found = re.fullmatch(r"(\d{4})-(\d{2})", text)
    if found is None or not 1 <= int(found[2]) <= 12:
        raise ValueError(f"{text!r} is not a month: expected YYYY-MM")
    return date(int(found[1]), int(found[2]), 1)


def partitioned_months(session: Session) -> list[date]:
    """The months `transfers` has a partition for, oldest first."""
    names = session.execute(
        sa.text(
            "SELECT child.relname FROM pg_inherits JOIN pg_class child ON child.oid = inhrelid"
            " WHERE inhparent = 'transfers'::regclass AND child.relname ~ '^transfers_p[0-9]'"
        )
    ).scalars()
    return sorted(date(int(n[11:15]), int(n[16:18]), 1) for n in names)


def plan(session: Session, before: date) -> list[MonthPlan]:
    """Every partitioned month before `before`, oldest first, each ready or with its reasons;
    after the first one held back, the rest wait for it."""
    if session.get_bind().dialect.name != "postgresql":
        return []
    plans: list[MonthPlan] = []
    for month in (m for m in partitioned_months(session) if m < before):
        if plans and not plans[-1].ready:
            waiting = plans[-1].month.strftime("%Y-%m")
            plans.append(MonthPlan(month, False, [f"waits for {waiting}"]))
            continue
        reasons = _reasons(session, month)
        plans.append(MonthPlan(month, not reasons, reasons))
    return plans


def _reasons(session: Session, month: date) -> list[str]:
    start, end = datetime(month.year, month.month, 1, tzinfo=UTC), month_end(month)
    reasons = [
        f"invoice {invoice_id} is {status}"
        for invoice_id, status in session.execute(
            sa.select(invoices.c.id, invoices.c.status)
            .where(
                invoices.c.period_start < end,
                invoices.c.period_end > start,
                invoices.c.status.not_in(FINAL),
            )
            .order_by(invoices.c.period_start, invoices.c.id)
        )
    ]
    in_month = sa.and_(transfers.c.effective_at >= start, transfers.c.effective_at < end)
    unbilled = session.execute(
        sa.select(sa.func.count()).where(
            in_month,
            transfers.c.kind == "usage",
            ~sa.exists().where(
                invoice_usage.c.transfer_id == transfers.c.id,
                invoice_usage.c.effective_at == transfers.c.effective_at,
            ),
            ~sa.exists().where(transfer_keys.c.reverses_id == transfers.c.id),
        )
    ).scalar_one()
    if unbilled:
        reasons.append(f"{unbilled} usage transfer(s) not invoiced yet")
    stray = session.execute(
        sa.text(
            "SELECT count(*) FROM transfers_default WHERE effective_at >= :start"
            " AND effective_at < :end"
        ),
        {"start": start, "end": end},
    ).scalar_one()
    if stray:
        reasons.append(f"{stray} transfer(s) in the default partition")
    return reasons
