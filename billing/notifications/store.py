"""Notifications for users (SPEC §6), stored once each: the dedupe key decides, so racing
writers and repeated jobs cannot store one twice. Webhook delivery is
`billing.notifications.webhooks`'s."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from billing.paging import Page, fetch_page
from billing.tables import notifications
from ledger.bulk import insert_rows
from ledger.money import format_micros

KINDS = ("approaching_threshold", "invoice_issued", "invoice_paid", "payment_failed")
_MICROS = "_micros"


def store_notifications(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert notification rows, skipping any whose `dedupe_key` is stored already."""
    insert_rows(session, notifications, rows, conflict=["dedupe_key"])


def public_notification(row: Any) -> dict[str, Any]:
    """A notification as users and webhooks see it: money as decimal strings (stored payloads
    keep integer micro-units under `*_micros` keys)."""
    data = {
        key.removesuffix(_MICROS): (
            format_micros(value) if key.endswith(_MICROS) and value is not None else value
        )
        for key, value in row.payload.items()
    }
    return {
        "id": str(row.id),
        "type": row.kind,
        "user_id": row.customer_id,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


def notifications_of(
    session: Session, user_id: str, kind: str | None, limit: int, offset: int
) -> Page:
    """One user's notifications, newest first."""
    filters = [notifications.c.customer_id == user_id]
    if kind is not None:
        filters.append(notifications.c.kind == kind)
    order = [notifications.c.created_at.desc(), notifications.c.id.desc()]
    return fetch_page(session, notifications, filters, order, limit, offset)
