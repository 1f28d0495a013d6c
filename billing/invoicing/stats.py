"""Billing statistics for admins (SPEC §7): invoices and amounts by status, success rate, failed
payments, average invoice, frequencies, the busiest users and usage per country, for a range —
each figure one SQL aggregate, never a Python loop over rows. Money is per currency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.invoice import UNPAID, InvoiceStatus
from billing.tables import invoices, payment_attempts
from ledger.model import Kind
from ledger.money import format_micros
from ledger.tables import transfers

FAILED_ATTEMPTS = ("declined", "not_applied")


def by_status_and_currency(session: Session, where: sa.ColumnElement[bool]) -> list[Any]:
    """(status, currency, invoices, amount in micro-units) of the invoices `where` holds."""
    return list(
        session.execute(
            sa.select(
                invoices.c.status,
                invoices.c.currency,
                sa.func.count(),
                sa.func.sum(invoices.c.amount_micros),
            )
            .where(where)
            .group_by(invoices.c.status, invoices.c.currency)
        ).all()
    )


def billing_stats(
    session: Session, start: datetime, end: datetime, top: int = 10, latest: int = 5
) -> dict[str, Any]:
    """Invoices created and usage sent in [start, end)."""
    in_range = sa.and_(invoices.c.created_at >= start, invoices.c.created_at < end)
    by_status: dict[str, dict[str, Any]] = {}
    for status, currency, count, total in by_status_and_currency(session, in_range):
        entry = by_status.setdefault(status, {"count": 0, "amounts": {}})
        entry["count"] += int(count)
        entry["amounts"][currency] = format_micros(int(total))
    paid = by_status.get(InvoiceStatus.PAID, {}).get("count", 0)
    failed = by_status.get(InvoiceStatus.FAILED, {}).get("count", 0)
    averages = {
        currency: format_micros(int(average))
        for currency, average in session.execute(
            sa.select(invoices.c.currency, sa.func.round(sa.func.avg(invoices.c.amount_micros)))
            .where(in_range)
            .group_by(invoices.c.currency)
        ).all()
    }
    frequencies: dict[str, int] = {
        frequency: int(count)
        for frequency, count in session.execute(
            sa.select(invoices.c.frequency, sa.func.count())
            .where(in_range)
            .group_by(invoices.c.frequency)
        ).all()
    }
    return {
        "from": start,
        "to": end,
        "invoices": {"total": sum(e["count"] for e in by_status.values()), "by_status": by_status},
        "success_rate": round(paid * 100 / (paid + failed), 2) if paid + failed else None,
        "average_invoice": averages,
        "frequencies": frequencies,
        "failed_payments": _failed_payments(session, start, end, latest),
        "high_volume_users": _busiest(session, start, end, top),
        "usage_by_country": _by_country(session, start, end),
    }


def _failed_payments(session: Session, start: datetime, end: datetime, latest: int) -> Any:
    a = payment_attempts.c
    window = sa.and_(a.status.in_(FAILED_ATTEMPTS), a.started_at >= start, a.started_at < end)
    amounts: dict[str, str] = {}
    count = 0
    for currency, n, total in session.execute(
        sa.select(a.currency, sa.func.count(), sa.func.sum(a.amount_micros))
        .where(window)
        .group_by(a.currency)
    ).all():
        count += int(n)
        amounts[currency] = format_micros(int(total))
    recent = session.execute(
        sa.select(
            a.invoice_id,
            a.customer_id,
            a.amount_micros,
            a.currency,
            a.code,
            a.message,
            a.started_at,
        )
        .where(window)
        .order_by(a.started_at.desc())
        .limit(latest)
    ).all()
    return {
        "count": count,
        "amounts": amounts,
        "latest": [
            {
                "invoice_id": str(r.invoice_id),
                "user_id": r.customer_id,
                "amount": format_micros(r.amount_micros),
                "currency": r.currency,
                "code": r.code,
                "message": r.message,
                "at": r.started_at,
            }
            for r in recent
        ],
    }


def _usage(start: datetime, end: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        transfers.c.kind == Kind.USAGE.value,
        transfers.c.effective_at >= start,
        transfers.c.effective_at < end,
    )


def _messages() -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.func.coalesce(transfers.c.metadata["messages"].as_integer(), 1))


def _busiest(session: Session, start: datetime, end: datetime, top: int) -> list[dict[str, Any]]:
    user = transfers.c.metadata["user_id"].as_string()
    rows = session.execute(
        sa.select(user, transfers.c.currency, _messages(), sa.func.sum(transfers.c.amount))
        .where(_usage(start, end))
        .group_by(user, transfers.c.currency)
        .order_by(_messages().desc(), user)
        .limit(top)
    ).all()
    return [
        {"user_id": u, "messages": int(m), "amount": format_micros(int(a)), "currency": c}
        for u, c, m, a in rows
    ]


def _by_country(session: Session, start: datetime, end: datetime) -> list[dict[str, Any]]:
    country = transfers.c.metadata["country"].as_string()
    segments = sa.func.sum(transfers.c.metadata["segments"].as_integer())
    rows = session.execute(
        sa.select(
            country,
            transfers.c.currency,
            _messages().label("messages"),
            segments,
            sa.func.sum(transfers.c.amount),
        )
        .where(_usage(start, end))
        .group_by(country, transfers.c.currency)
        .order_by(sa.literal_column("messages").desc(), country)
    ).all()
    return [
        {
            "country": code,
            "currency": currency,
            "messages": int(messages),
            "segments": int(parts or 0),
            "amount": format_micros(int(amount)),
        }
        for code, currency, messages, parts, amount in rows
    ]


def invoice_counts(session: Session) -> dict[InvoiceStatus, int]:
    """How many invoices are in each state now (every state, zero included)."""
    found: dict[str, int] = dict(
        session.execute(
            sa.select(invoices.c.status, sa.func.count()).group_by(invoices.c.status)
        ).all()
    )
    return {status: int(found.get(status, 0)) for status in InvoiceStatus}


@dataclass(frozen=True, slots=True)
class Overview:
    """The billing tab's headline figures: what was billed in a period (per currency, cancelled
    invoices excluded), what is waiting now, and how charges fared in the period."""

    billed_micros: dict[str, int]
    billed_count: int
    pending_micros: dict[str, int]
    pending_count: int
    failed_count: int
    success_rate: float | None


def billing_overview(session: Session, start: datetime, end: datetime) -> Overview:
    """Two grouped aggregates over invoices: those created in [start, end), and those unpaid now."""
    billed: dict[str, int] = {}
    billed_count = paid = failed_in_range = 0
    created = sa.and_(invoices.c.created_at >= start, invoices.c.created_at < end)
    for status, currency, count, total in by_status_and_currency(session, created):
        if status == InvoiceStatus.CANCELLED:
            continue
        billed[currency] = billed.get(currency, 0) + int(total)
        billed_count += int(count)
        paid += int(count) if status in (InvoiceStatus.PAID, InvoiceStatus.REFUNDED) else 0
        failed_in_range += int(count) if status == InvoiceStatus.FAILED else 0
    pending: dict[str, int] = {}
    pending_count = failed_now = 0
    for status, currency, count, total in by_status_and_currency(
        session, invoices.c.status.in_(UNPAID)
    ):
        if status == InvoiceStatus.FAILED:
            failed_now += int(count)
            continue
        pending[currency] = pending.get(currency, 0) + int(total)
        pending_count += int(count)
    charged = paid + failed_in_range
    rate = round(paid * 100 / charged, 2) if charged else None
    return Overview(billed, billed_count, pending, pending_count, failed_now, rate)


@dataclass(frozen=True, slots=True)
class DailyBilling:
    """One UTC day's invoices: how many were created, the messages they billed, and what they
    came to per currency (integer micro-units)."""

    day: datetime  # the day's midnight, UTC
    invoices: int
    messages: int
    amounts_micros: dict[str, int]


def _utc_day(session: Session, column: Any) -> sa.ColumnElement[str]:
    """The UTC calendar day of a stored instant as `YYYY-MM-DD` text, on either database.

    PostgreSQL converts the timestamptz to UTC first (a bare `date()` would use the session's
    TimeZone); SQLite stores the UTC instant as text already, so `date()` is its UTC day. The
    constants are literals, not bound parameters, so that the GROUP BY repeats the SELECT's
    expression exactly (PostgreSQL refuses two differently-bound copies of it)."""
    if session.get_bind().dialect.name == "postgresql":
        utc = sa.func.timezone(sa.literal_column("'UTC'"), column)
        return sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD'"), type_=sa.String)
    return sa.func.date(column, type_=sa.String)


def daily_billing(session: Session, start: datetime, end: datetime) -> list[DailyBilling]:
    """Invoices created in [start, end) per UTC day, oldest day first: their count, messages and
    amounts per currency, from one GROUP BY (day, currency). Days without invoices are absent."""
    day = _utc_day(session, invoices.c.created_at)
    rows = session.execute(
        sa.select(
            day,
            invoices.c.currency,
            sa.func.count(),
            sa.func.sum(invoices.c.amount_micros),
            sa.func.sum(invoices.c.message_count),
        )
        .where(invoices.c.created_at >= start, invoices.c.created_at < end)
        .group_by(day, invoices.c.currency)
        .order_by(day, invoices.c.currency)
    ).all()
    tallies: dict[str, list[int]] = {}  # day -> [invoices, messages]
    amounts: dict[str, dict[str, int]] = {}
    for text, currency, count, total, messages in rows:
        tally = tallies.setdefault(text, [0, 0])
        tally[0] += int(count)
        tally[1] += int(messages or 0)
        amounts.setdefault(text, {})[currency] = int(total)
    return [
        DailyBilling(datetime.fromisoformat(f"{text}T00:00:00+00:00"), n, m, amounts[text])
        for text, (n, m) in tallies.items()
    ]
