"""Closing billing periods into invoices (SPEC §6), set-based over all due customers at once.

One close, in the caller's transaction:
1. find the due customers (their effective frequency, unbilled usage before the period's end,
   no invoice for that period yet; for threshold billing, an open close request);
2. lock their `unbilled` balance rows in account order: every usage post for those customers
   updates that row, so usage committed before the lock is seen and usage still in flight waits
   and lands in the next invoice (DESIGN "Concurrency", decision 0003);
3. with a few statements over all of them: total the unbilled, unreversed usage per customer,
   create the invoices, record which usage each one billed (`invoice_usage`, whose primary key
   makes double billing impossible), write the lines per country and prefix, post the invoice
   and rounding transfers, move the usage counters, queue charges and notifications.
All or nothing: a crash or a re-run leaves exactly one invoice per customer and period.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.orm import Session

from billing.chart import receivable_code, system_code, unbilled_code
from billing.currency import minor_units
from billing.invoicing.invoices import last_invoiced_end
from billing.invoicing.periods import SCHEDULED, last_ended_period
from billing.notifications.store import store_notifications
from billing.settings import BillingDefaults, Settings, effective_settings
from billing.tables import (
    close_requests,
    customers,
    invoice_lines,
    invoice_usage,
    invoices,
    outbox,
    usage_counters,
)
from ledger.accounts import find_accounts
from ledger.bulk import BULK_MIN_ROWS, analyze_staged, array_text, insert_rows
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entries
from ledger.tables import UtcDateTime, balances, transfers

ROUNDING_RULE = "ROUND_HALF_UP to the currency's minor unit; remainder to rounding:<CUR>"


@dataclass
class CloseSummary:
    """What one billing cycle did (the cron endpoint's answer, Appendix A)."""

    type: str
    periods_closed: int = 0
    invoices_created: int = 0
    charges_enqueued: int = 0
    skipped: int = 0
    errors: int = 0
    invoice_ids: list[uuid.UUID] = field(default_factory=list)

    def report(self, duration_ms: int) -> dict[str, int | str]:
        """The summary as answered by the cron endpoint and logged (Appendix A, SPEC §12)."""
        return {
            "type": self.type,
            "periods_closed": self.periods_closed,
            "invoices_created": self.invoices_created,
            "charges_enqueued": self.charges_enqueued,
            "skipped": self.skipped,
            "errors": self.errors,
            "duration_ms": duration_ms,
        }


@dataclass(frozen=True, slots=True)
class _Due:
    # Assigned before the usage is read, so one pass can tag every billed row with it.
    invoice_id: uuid.UUID
    customer_id: str
    currency: str
    unbilled_account: int
    oldest: datetime
    start: datetime
    end: datetime
    settings: Settings


def round_half_up(micros: int, currency: str) -> int:
    """`micros` rounded half up to the currency's minor unit (USD: 10,000 micro-units)."""
    quantum = 10 ** (6 - minor_units(currency))
    whole, remainder = divmod(micros, quantum)
    rounded: int = (whole + (1 if 2 * remainder >= quantum else 0)) * quantum
    return rounded


def close_periods(
    session: Session,
    frequency: str,
    now: datetime,
    defaults: BillingDefaults,
    only: Iterable[str] | None = None,
) -> CloseSummary:
    """Close every due period of `frequency` (daily, weekly, monthly, threshold) at `now`.

    `only` limits the run to some customers (an admin's "process now", a threshold request).
    """
    summary = CloseSummary(frequency)
    due = _due_customers(session, frequency, now, defaults, only)
    if frequency == "threshold":
        _serve_requests(session, [d.customer_id for d in due], now)
    if not due:
        return summary
    _lock_unbilled(session, [d.unbilled_account for d in due])
    _give_memory(session)
    _stage_due(session, due)
    remaining = _later_usage(session)
    _stage_lines(session)
    totals, rate_ids = _usage_totals(session, due)
    rows: list[dict[str, Any]] = []
    for item in due:
        messages, segments, usage = totals.get(item.customer_id, (0, 0, 0))
        if messages == 0:
            summary.skipped += 1
            continue
        amount = round_half_up(usage, item.currency)
        rows.append(
            {
                "id": item.invoice_id,
                "customer_id": item.customer_id,
                "status": "pending",
                "frequency": frequency,
                "period_start": item.start,
                "period_end": item.end,
                "currency": item.currency,
                "amount_micros": amount,
                "usage_micros": usage,
                "rounding_micros": usage - amount,
                "message_count": messages,
                "segments": segments,
                "settings": {**item.settings.as_values(), "rounding": ROUNDING_RULE},
                "rate_ids": sorted(rate_ids.get(item.customer_id, set())),
                "approved_at": None if item.settings.require_manual_approval else now,
                # Due for its first charge at once when nothing waits for an admin.
                "next_retry_at": now if _charges_itself(item.settings) else None,
                "created_at": now,
                "updated_at": now,
            }
        )
    if not rows:
        _unstage(session)
        return summary
    insert_rows(session, invoices, rows)
    by_customer = {row["customer_id"]: row for row in rows}
    billed = [d for d in due if d.customer_id in by_customer]
    _record_billed_usage(session)
    _write_lines(session)
    _post_transfers(session, rows, now)
    _move_counters(session, billed, by_customer, remaining)
    _unstage(session)
    summary.charges_enqueued = _queue_follow_ups(
        session, rows, {d.customer_id: d for d in billed}, now
    )
    summary.periods_closed = summary.invoices_created = len(rows)
    summary.invoice_ids = [row["id"] for row in rows]
    return summary


def _due_customers(
    session: Session,
    frequency: str,
    now: datetime,
    defaults: BillingDefaults,
    only: Iterable[str] | None,
) -> list[_Due]:
    last_end = last_invoiced_end()
    query = (
        sa.select(
            customers.c.user_id,
            customers.c.currency,
            customers.c.created_at,
            usage_counters.c.oldest_unbilled_at,
            last_end.label("last_end"),
        )
        .join(usage_counters, usage_counters.c.customer_id == customers.c.user_id)
        .order_by(customers.c.user_id)
    )
    if frequency == "threshold":
        query = query.where(
            customers.c.user_id.in_(
                sa.select(close_requests.c.customer_id).where(close_requests.c.served_at.is_(None))
            )
        )
    else:
        _, end = last_ended_period(frequency, now)
        query = query.where(usage_counters.c.oldest_unbilled_at < end)
    if only is not None:
        query = query.where(customers.c.user_id.in_(sorted(set(only))))
    rows = session.execute(query).all()
    if not rows:
        return []
    settings = effective_settings(session, [r.user_id for r in rows], defaults, now)
    accounts = find_accounts(session, [unbilled_code(r.user_id) for r in rows])
    due = []
    for row in rows:
        effective = settings[row.user_id]
        if effective.frequency != frequency:
            continue
        if frequency in SCHEDULED:
            period = last_ended_period(frequency, now)
        else:
            period = (row.last_end or row.created_at, now)
        if row.last_end is not None and row.last_end >= period[1]:
            continue  # that period has its invoice already
        if row.oldest_unbilled_at is None and frequency in SCHEDULED:
            continue
        due.append(
            _Due(
                uuid6.uuid7(),
                row.user_id,
                row.currency,
                accounts[unbilled_code(row.user_id)].id,
                row.oldest_unbilled_at or period[1],
                period[0],
                period[1],
                effective,
            )
        )
    return due


# A close sorts or hashes the period's usage (a million rows for 10,000 customers): with the
# default 4 MB it spilled 240 MB to disk and took 1.6 s longer (measured, bench.close_period).
CLOSE_WORK_MEM = "256MB"


def _give_memory(session: Session) -> None:
    """Raise `work_mem` for this transaction only (PostgreSQL; `SET LOCAL` ends with it)."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{CLOSE_WORK_MEM}'")


def _serve_requests(session: Session, customer_ids: list[str], now: datetime) -> None:
    if customer_ids:
        session.execute(
            sa.update(close_requests)
            .where(
                close_requests.c.customer_id.in_(customer_ids), close_requests.c.served_at.is_(None)
            )
            .values(served_at=now)
        )


def _lock_unbilled(session: Session, account_ids: list[int]) -> None:
    """Lock the customers' unbilled balance rows in account order (no-op lock on SQLite,
    whose `BEGIN IMMEDIATE` already serialises writers)."""
    session.execute(
        sa.select(balances.c.account_id)
        .where(balances.c.account_id.in_(sorted(account_ids)))
        .order_by(balances.c.account_id, balances.c.slot)
        .with_for_update()
    ).all()


_usage = transfers.alias("usage")


# The due customers, with their bounds and their invoice's id, in a session-local table the
# usage is joined to: the planner then chooses one pass over the period (or index scans for a
# few customers) instead of one scan per chunk of an IN list.
_stage_metadata = sa.MetaData()
_STAGE_DUE = sa.Table(
    "close_stage_due",
    _stage_metadata,
    sa.Column("account_id", sa.BigInteger),
    sa.Column("customer_id", sa.String(64)),
    sa.Column("oldest", UtcDateTime),
    sa.Column("period_end", UtcDateTime),
    sa.Column("invoice_id", sa.Uuid),
    # Whether any of the customer's usage in the window can be billed already (an invoice of
    # theirs ends after `oldest`: late usage) or reversed (a reversal credits their unbilled
    # account). Usually neither: the per-row checks are then skipped, not planned as
    # anti-joins that sort the whole period (measured: 1.6 s of 1,000,000 rows).
    sa.Column("check_billed", sa.Boolean),
    sa.Column("check_reversed", sa.Boolean),
    prefixes=["TEMPORARY"],
)
# The period's usage totalled per invoice, country, prefix and rate version: one pass over the
# usage (its JSON fields read once) gives the totals, the rate versions and the lines.
_STAGE_LINES = sa.Table(
    "close_stage_lines",
    _stage_metadata,
    sa.Column("invoice_id", sa.Uuid),
    sa.Column("account_id", sa.BigInteger),
    sa.Column("country", sa.String(2)),
    sa.Column("prefix", sa.String(15)),
    sa.Column("rate_id", sa.BigInteger),
    sa.Column("messages", sa.BigInteger),
    sa.Column("segments", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    prefixes=["TEMPORARY"],
)


def _billable(*columns: Any) -> sa.Select[Any]:
    """The billable usage of the due customers: in their period, not billed yet, not reversed.
    The lines and the billed-usage links both read exactly this set (the customers' unbilled
    balance rows are locked, so no usage of theirs can appear or be reversed in between)."""
    return (
        sa.select(*columns)
        .select_from(_usage)
        .join(_STAGE_DUE, _STAGE_DUE.c.account_id == _usage.c.debit_account_id)
        .where(
            _usage.c.kind == Kind.USAGE.value,
            _usage.c.effective_at >= _STAGE_DUE.c.oldest,
            _usage.c.effective_at < _STAGE_DUE.c.period_end,
            sa.or_(
                ~_STAGE_DUE.c.check_billed,
                ~sa.exists().where(invoice_usage.c.transfer_id == _usage.c.id),
            ),
            sa.or_(
                ~_STAGE_DUE.c.check_reversed,
                ~sa.exists().where(transfers.c.reverses_id == _usage.c.id),
            ),
        )
    )


def _stage_lines(session: Session) -> None:
    connection = session.connection()
    _STAGE_LINES.create(connection)
    country = _usage.c.metadata["country"].as_string()
    prefix = _usage.c.metadata["prefix"].as_string()
    rate_id = _usage.c.metadata["rate_id"].as_integer()
    connection.execute(
        sa.insert(_STAGE_LINES).from_select(
            [c.name for c in _STAGE_LINES.columns],
            _billable(
                _STAGE_DUE.c.invoice_id,
                _STAGE_DUE.c.account_id,
                country,
                prefix,
                rate_id,
                # One SMS per usage transfer, unless it carries an aggregate (opening usage).
                sa.func.sum(sa.func.coalesce(_usage.c.metadata["messages"].as_integer(), 1)),
                sa.func.sum(_usage.c.metadata["segments"].as_integer()),
                sa.func.sum(_usage.c.amount),
            ).group_by(_STAGE_DUE.c.invoice_id, _STAGE_DUE.c.account_id, country, prefix, rate_id),
        )
    )


def _stage_due(session: Session, due: list[_Due]) -> None:
    connection = session.connection()
    _unstage(session)
    _STAGE_DUE.create(connection)
    insert_rows(
        session,
        _STAGE_DUE,
        [
            {
                "account_id": d.unbilled_account,
                "customer_id": d.customer_id,
                "oldest": d.oldest,
                "period_end": d.end,
                "invoice_id": d.invoice_id,
                "check_billed": True,
                "check_reversed": True,
            }
            for d in due
        ],
    )
    billed_before = sa.exists().where(
        invoices.c.customer_id == _STAGE_DUE.c.customer_id,
        invoices.c.period_end > _STAGE_DUE.c.oldest,
    )
    reversed_before = sa.exists().where(
        transfers.c.credit_account_id == _STAGE_DUE.c.account_id,
        transfers.c.kind == Kind.REVERSAL.value,
    )
    connection.execute(
        sa.update(_STAGE_DUE).values(check_billed=billed_before, check_reversed=reversed_before)
    )
    analyze_staged(session, _STAGE_DUE)


def _unstage(session: Session) -> None:
    connection = session.connection()
    for table in (_STAGE_LINES, _STAGE_DUE):
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table.name}")


def _usage_totals(
    session: Session, due: list[_Due]
) -> tuple[dict[str, tuple[int, int, int]], dict[str, set[int]]]:
    """Per customer: (messages, segments, amount) of the staged usage, and its rate versions."""
    customer_of = {d.unbilled_account: d.customer_id for d in due}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    rate_ids: dict[str, set[int]] = defaultdict(set)
    for line in session.execute(sa.select(_STAGE_LINES)).all():
        customer = customer_of[line.account_id]
        total = totals[customer]
        total[0] += int(line.messages)
        total[1] += int(line.segments or 0)
        total[2] += int(line.amount)
        if line.rate_id is not None:
            rate_ids[customer].add(int(line.rate_id))
    return {c: (m, g, a) for c, (m, g, a) in totals.items()}, rate_ids


def _record_billed_usage(session: Session) -> None:
    """Link each billable usage transfer to its customer's new invoice (the same set the lines
    were totalled from)."""
    session.execute(
        sa.insert(invoice_usage).from_select(
            ["transfer_id", "invoice_id"],
            # In key order the primary key grows at its right edge (measured in isolation,
            # 1,000,000 links: 2.3 s sorted, 5.0 s in random order).
            _billable(_usage.c.id, _STAGE_DUE.c.invoice_id).order_by(_usage.c.id),
        )
    )


def _write_lines(session: Session) -> None:
    session.execute(
        sa.insert(invoice_lines).from_select(
            ["invoice_id", "country", "prefix", "messages", "segments", "amount_micros"],
            sa.select(
                _STAGE_LINES.c.invoice_id,
                _STAGE_LINES.c.country,
                _STAGE_LINES.c.prefix,
                sa.func.sum(_STAGE_LINES.c.messages),
                sa.func.sum(_STAGE_LINES.c.segments),
                sa.func.sum(_STAGE_LINES.c.amount),
            ).group_by(_STAGE_LINES.c.invoice_id, _STAGE_LINES.c.country, _STAGE_LINES.c.prefix),
        )
    )


def _post_transfers(session: Session, rows: list[dict[str, Any]], now: datetime) -> None:
    """The invoice moves the exact usage from unbilled to receivable; the rounding transfer
    brings receivable to the rounded total, so usage == invoiced + rounding + unbilled."""
    entries = []
    for row in rows:
        customer, currency, invoice_id = row["customer_id"], row["currency"], row["id"]
        metadata = {"invoice_id": str(invoice_id)}
        entries.append(
            EntryRequest(
                Kind.INVOICE,
                f"invoice:{invoice_id}",
                (Leg(receivable_code(customer), unbilled_code(customer), row["usage_micros"]),),
                effective_at=now,
                metadata=metadata,
            )
        )
        rounding = row["rounding_micros"]
        if rounding:
            rounding_account = system_code("rounding", currency)
            leg = (
                Leg(rounding_account, receivable_code(customer), rounding)
                if rounding > 0
                else Leg(receivable_code(customer), rounding_account, -rounding)
            )
            entries.append(
                EntryRequest(
                    Kind.ROUNDING,
                    f"rounding:{invoice_id}",
                    (leg,),
                    effective_at=now,
                    metadata=metadata,
                )
            )
    post_entries(session, entries, now)


def _later_usage(session: Session) -> dict[int, datetime]:
    """Per unbilled account, the earliest usage at or after the period end: what
    `oldest_unbilled_at` becomes once everything before the end is billed.

    None of it can be billed: a due customer's invoices all end before this period's end
    (`_due_customers`), and an invoice bills only usage before its own end. So no anti-join
    against `invoice_usage`: as a join with one, a planner that believed most usage billed
    (true of a ledger with history, and of one whose close just rolled back) expected one row
    out of it, put the due customers under a nested loop and spent 14 minutes on 1,000,000 rows
    (bench.close_period, second run). One index probe per due account instead (the first row of
    `ix_transfers_debit_effective` from the period end), whatever the statistics say."""
    later = (
        sa.select(_usage.c.effective_at)
        .where(
            _usage.c.debit_account_id == _STAGE_DUE.c.account_id,
            _usage.c.effective_at >= _STAGE_DUE.c.period_end,
            _usage.c.kind == Kind.USAGE.value,
        )
        .order_by(_usage.c.effective_at)
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(sa.select(_STAGE_DUE.c.account_id, later)).all()
    return {account: oldest for account, oldest in rows if oldest is not None}


def _move_counters(
    session: Session,
    billed: list[_Due],
    by_customer: Mapping[str, Mapping[str, Any]],
    remaining: Mapping[int, datetime],
) -> None:
    """Take the billed messages off the counters and move `oldest_unbilled_at` past the
    period: everything before its end is now billed (or reversed, never billable)."""
    moves = [
        {
            "customer": d.customer_id,
            "messages": by_customer[d.customer_id]["message_count"],
            "billed_segments": by_customer[d.customer_id]["segments"],
            "oldest": remaining.get(d.unbilled_account),
        }
        for d in sorted(billed, key=lambda d: d.customer_id)
    ]
    connection = session.connection()
    if connection.dialect.name == "postgresql" and len(moves) >= BULK_MIN_ROWS:
        connection.exec_driver_sql(
            _MOVE_COUNTERS_BULK,
            {name: array_text(m[name] for m in moves) for name in moves[0]},
        )
        return
    session.execute(
        sa.update(usage_counters)
        .where(usage_counters.c.customer_id == sa.bindparam("customer"))
        .values(
            unbilled_messages=usage_counters.c.unbilled_messages - sa.bindparam("messages"),
            unbilled_segments=usage_counters.c.unbilled_segments - sa.bindparam("billed_segments"),
            oldest_unbilled_at=sa.bindparam("oldest", type_=UtcDateTime),
        ),
        moves,
    )


# One statement for many customers on PostgreSQL. No lock-order care needed: the close holds
# these customers' unbilled balance locks, which every writer of a counter takes first.
_MOVE_COUNTERS_BULK = (
    "UPDATE usage_counters u SET unbilled_messages = u.unbilled_messages - m.messages,"
    " unbilled_segments = u.unbilled_segments - m.billed_segments, oldest_unbilled_at = m.oldest"
    " FROM unnest(%(customer)s::text[], %(messages)s::bigint[], %(billed_segments)s::bigint[],"
    " %(oldest)s::timestamptz[]) AS m(customer, messages, billed_segments, oldest)"
    " WHERE u.customer_id = m.customer"
)


def _charges_itself(settings: Settings) -> bool:
    """Whether a new invoice is charged without an admin (SPEC §5 auto_process and
    require_manual_approval)."""
    return settings.auto_process and not settings.require_manual_approval


def _queue_follow_ups(
    session: Session, rows: list[dict[str, Any]], due: Mapping[str, _Due], now: datetime
) -> int:
    """Charges for invoices that need no approval (outbox), and "invoice issued" notices."""
    charges, notes = [], []
    for row in rows:
        settings = due[row["customer_id"]].settings
        invoice_id = str(row["id"])
        if _charges_itself(settings):
            charges.append(
                {
                    "topic": "charge_invoice",
                    "key": f"charge:{invoice_id}:1",
                    "payload": {"invoice_id": invoice_id},
                    "created_at": now,
                }
            )
        if settings.notifications_enabled:
            notes.append(
                {
                    "customer_id": row["customer_id"],
                    "kind": "invoice_issued",
                    "dedupe_key": f"invoice_issued:{invoice_id}",
                    "payload": {
                        "invoice_id": invoice_id,
                        "amount_micros": row["amount_micros"],
                        "currency": row["currency"],
                        "period_start": row["period_start"].isoformat(),
                        "period_end": row["period_end"].isoformat(),
                        "awaiting_approval": settings.require_manual_approval,
                    },
                    "created_at": now,
                }
            )
    insert_rows(session, outbox, charges, conflict=["key"])
    store_notifications(session, notes)
    return len(charges)
