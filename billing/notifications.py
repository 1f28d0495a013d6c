"""Notifications for users (SPEC §6), stored once each: the dedupe key decides, so racing
writers and repeated jobs cannot store one twice. Delivery to webhooks arrives with the Sippy
issue's outbox dispatcher."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from billing.tables import notifications
from ledger.accounts import insert_ignoring_conflicts


def store_notifications(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert notification rows, skipping any whose `dedupe_key` is stored already."""
    if rows:
        session.execute(
            insert_ignoring_conflicts(session, notifications).on_conflict_do_nothing(
                index_elements=["dedupe_key"]
            ),
            rows,
        )
