"""The outbox (DESIGN "Jobs and time"): work a committed change asked for, written in the same
transaction and handed to a job after commit. Claiming marks rows dispatched under a row lock
that concurrent dispatchers skip; a lost hand-off is harmless because every consumer also has a
sweep over the durable state (a due invoice keeps its `next_retry_at`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.keys import charge_job_key, refund_job_key
from billing.tables import outbox
from ledger.bulk import insert_rows


class Topic(StrEnum):
    """What an outbox row asks for; the job that consumes it claims by topic."""

    CHARGE_INVOICE = "charge_invoice"
    REFUND_INVOICE = "refund_invoice"


class ChargeRequest(NamedTuple):
    """Charge attempt `attempt_no` of an invoice, asked for by a close or an admin action."""

    invoice_id: uuid.UUID
    attempt_no: int


def queue_charges(session: Session, requests: Iterable[ChargeRequest], now: datetime) -> int:
    """Ask for these charge attempts after commit; how many were asked for. The key (invoice
    and attempt) makes a repeated request for the same attempt a no-op."""
    rows = [
        {
            "topic": Topic.CHARGE_INVOICE.value,
            "key": charge_job_key(request.invoice_id, request.attempt_no),
            "payload": {"invoice_id": str(request.invoice_id)},
            "created_at": now,
        }
        for request in requests
    ]
    insert_rows(session, outbox, rows, conflict=["key"])
    return len(rows)


def claim_outbox(session: Session, topic: str, now: datetime, limit: int = 500) -> list[Any]:
    """Undispatched payloads of `topic`, oldest first, marked dispatched."""
    rows = session.execute(
        sa.select(outbox.c.id, outbox.c.payload)
        .where(outbox.c.dispatched_at.is_(None), outbox.c.topic == topic)
        .order_by(outbox.c.created_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        session.execute(
            sa.update(outbox)
            .where(outbox.c.id.in_([row.id for row in rows]))
            .values(dispatched_at=now)
        )
    return [row.payload for row in rows]


def queue_refund(session: Session, invoice_id: uuid.UUID, attempt_no: int, now: datetime) -> None:
    """Ask for refund attempt `attempt_no` of an invoice after commit (once per attempt)."""
    row = {
        "topic": Topic.REFUND_INVOICE.value,
        "key": refund_job_key(invoice_id, attempt_no),
        "payload": {"invoice_id": str(invoice_id)},
        "created_at": now,
    }
    insert_rows(session, outbox, [row], conflict=["key"])
