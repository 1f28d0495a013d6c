"""The outbox (DESIGN "Jobs and time"): work a committed change asked for, written in the same
transaction and handed to a job after commit. Claiming marks rows dispatched under a row lock
that concurrent dispatchers skip; a lost hand-off is harmless because every consumer also has a
sweep over the durable state (a due invoice keeps its `next_retry_at`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.tables import outbox


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
