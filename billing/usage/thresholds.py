"""The threshold hook, run in the same transaction as every usage post.

For customers billed by threshold: when unbilled usage reaches `threshold_amount` or
`threshold_messages`, a close of their open period is requested (a durable row a job serves);
at `notify_at_percent` an "approaching threshold" notification is stored, at most once per
user, period and threshold (a unique key decides, so racing posts cannot send it twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import unbilled_code
from billing.invoice import last_invoiced_end
from billing.keys import approaching_threshold_notice
from billing.notifications.store import store_notifications
from billing.settings import Settings
from billing.tables import close_requests, customers, usage_counters
from ledger.accounts import insert_ignoring_conflicts
from ledger.balances import cached_balances


def after_usage(
    session: Session, customer_ids: Iterable[str], settings: Mapping[str, Settings], now: datetime
) -> None:
    watched = sorted(c for c in customer_ids if settings[c].frequency == "threshold")
    if not watched:
        return
    requests: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for customer_id, amount, messages, period_start in unbilled_state(session, watched):
        limits = settings[customer_id]
        reached = (limits.threshold_amount is not None and amount >= limits.threshold_amount) or (
            limits.threshold_messages is not None and messages >= limits.threshold_messages
        )
        if reached:
            requests.append(
                {"customer_id": customer_id, "reason": "threshold", "requested_at": now}
            )
        percent = percent_used(limits, amount, messages)
        if limits.notifications_enabled and percent is not None:
            if percent >= limits.notify_at_percent:
                notes.append(_approaching(customer_id, limits, amount, messages, period_start, now))
    if requests:
        session.execute(
            insert_ignoring_conflicts(session, close_requests).on_conflict_do_nothing(
                index_elements=["customer_id"], index_where=close_requests.c.served_at.is_(None)
            ),
            requests,
        )
    store_notifications(session, notes)


def _approaching(
    customer_id: str,
    limits: Settings,
    amount: int,
    messages: int,
    period_start: datetime,
    now: datetime,
) -> dict[str, Any]:
    """The "approaching threshold" notification row; its key makes it once per user, period
    and threshold."""
    key = approaching_threshold_notice(
        customer_id, period_start, limits.threshold_amount, limits.threshold_messages
    )
    return {
        "customer_id": customer_id,
        "kind": "approaching_threshold",
        "dedupe_key": key,
        "payload": {
            "percent_used": round(percent_used(limits, amount, messages) or 0, 2),
            "notify_at_percent": limits.notify_at_percent,
            "unbilled_micros": amount,
            "unbilled_messages": messages,
            "threshold_amount_micros": limits.threshold_amount,
            "threshold_messages": limits.threshold_messages,
            "period_start": period_start.isoformat(),
        },
        "created_at": now,
    }


def percent_used(limits: Settings, amount: int, messages: int) -> float | None:
    """How far towards the nearer threshold, in percent (None without thresholds)."""
    shares = []
    if limits.threshold_amount:
        shares.append(amount * 100 / limits.threshold_amount)
    if limits.threshold_messages:
        shares.append(messages * 100 / limits.threshold_messages)
    return max(shares) if shares else None


def unbilled_state(
    session: Session, customer_ids: list[str]
) -> list[tuple[str, int, int, datetime]]:
    """(customer, unbilled micros, unbilled messages, open period start) from cached rows."""
    period_start = last_invoiced_end()
    rows = session.execute(
        sa.select(
            customers.c.user_id,
            customers.c.created_at,
            period_start.label("last_period_end"),
            usage_counters.c.unbilled_messages,
        )
        .join(usage_counters, usage_counters.c.customer_id == customers.c.user_id)
        .where(customers.c.user_id.in_(customer_ids))
    ).all()
    amounts = unbilled_amounts(session, customer_ids)
    return [
        (
            row.user_id,
            amounts.get(row.user_id, 0),
            int(row.unbilled_messages),
            row.last_period_end or row.created_at,
        )
        for row in rows
    ]


def unbilled_amounts(session: Session, customer_ids: list[str]) -> dict[str, int]:
    """Cached unbilled balances of `customer:<id>:unbilled`, one query."""
    codes = {unbilled_code(c): c for c in customer_ids}
    found = cached_balances(session, list(codes))
    return {codes[code]: balance.balance for code, balance in found.items()}
