"""Webhook delivery of stored notifications (SPEC §6): a signed POST to the customer's URL,
retried with backoff, every try written to the delivery log.

The notification row is its own outbox: it is stored in the transaction that caused it with
`delivery_status = 'pending'`, and a job delivers what is due. A batch is claimed first (its
rows get a lease in `next_delivery_at`, so a second worker skips them) and the HTTP calls run
outside any transaction.

Signature: `X-Smsledger-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`,
the timestamp inside the signed text so a captured request cannot be replayed later
(`verify_signature`, with a tolerance, is what a receiver runs).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.settings import BillingDefaults, effective_settings
from billing.tables import customers, notifications, webhook_deliveries

log = logging.getLogger("smsledger.webhooks")

SIGNATURE_HEADER = "X-Smsledger-Signature"
TIMESTAMP_TOLERANCE_S = 300
DELIVERY_BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=12),
)
CLAIM_LEASE = timedelta(minutes=2)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance_s: int = TIMESTAMP_TOLERANCE_S
) -> bool:
    """Whether `header` signs `body` with `secret` and was made within the tolerance."""
    parts = dict(piece.partition("=")[::2] for piece in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


Sender = Callable[[str, bytes, Mapping[str, str]], Answer]


def post_with_requests(timeout_s: float = 5.0) -> Sender:
    """The production sender: one POST, no redirects followed, any 2xx is a delivery."""

    def send(url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        try:
            answer = requests.post(
                url, data=body, headers=dict(headers), timeout=timeout_s, allow_redirects=False
            )
        except requests.RequestException as error:
            return Answer(None, f"{type(error).__name__}: {error}"[:500])
        return Answer(answer.status_code, None if answer.ok else answer.text[:500])

    return send


@dataclass
class DeliverySummary:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0

    def report(self) -> dict[str, int]:
        return {
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def claim_due(
    session: Session,
    now: datetime,
    defaults: BillingDefaults,
    limit: int,
    summary: DeliverySummary,
) -> list[tuple[Any, str]]:
    """Lease a batch of due notifications to this worker; those without a webhook URL are
    marked skipped (stored for the user, nothing to deliver)."""
    rows = session.execute(
        sa.select(notifications, customers.c.webhook_url)
        .join(customers, customers.c.user_id == notifications.c.customer_id)
        .where(
            notifications.c.delivery_status == "pending",
            sa.or_(
                notifications.c.next_delivery_at.is_(None), notifications.c.next_delivery_at <= now
            ),
        )
        .order_by(notifications.c.id)
        .limit(limit)
        .with_for_update(of=notifications, skip_locked=True)
    ).all()
    settings = effective_settings(session, {row.customer_id for row in rows}, defaults, now)
    claimed, skipped = [], []
    for row in rows:
        url = row.webhook_url or settings[row.customer_id].webhook_url
        if url:
            claimed.append((row, url))
        else:
            skipped.append(row.id)
    if skipped:
        session.execute(
            sa.update(notifications)
            .where(notifications.c.id.in_(skipped))
            .values(delivery_status="skipped")
        )
        summary.skipped += len(skipped)
    if claimed:
        session.execute(
            sa.update(notifications)
            .where(notifications.c.id.in_([row.id for row, _ in claimed]))
            .values(next_delivery_at=now + CLAIM_LEASE)
        )
    return claimed


def record_delivery(
    session: Session, row: Any, url: str, answer: Answer, duration_ms: int, now: datetime
) -> str:
    """Log one try and move the notification on: delivered, retried later, or failed after
    the last retry. The name of the summary counter it falls under."""
    attempt = row.delivery_attempts + 1
    session.execute(
        sa.insert(webhook_deliveries).values(
            notification_id=row.id,
            attempt_no=attempt,
            url=url,
            attempted_at=now,
            status_code=answer.status_code,
            error=answer.error,
            duration_ms=duration_ms,
            succeeded=answer.succeeded,
        )
    )
    values: dict[str, Any] = {"delivery_attempts": attempt}
    if answer.succeeded:
        values.update(delivery_status="delivered", delivered_at=now, next_delivery_at=None)
        outcome = "delivered"
    elif attempt <= len(DELIVERY_BACKOFF):
        values["next_delivery_at"] = now + DELIVERY_BACKOFF[attempt - 1]
        outcome = "retrying"
    else:
        values.update(delivery_status="failed", next_delivery_at=None)
        outcome = "failed"
        log.warning("Webhook delivery failed", extra={"notification_id": row.id, "url": url})
    session.execute(sa.update(notifications).where(notifications.c.id == row.id).values(**values))
    return outcome


def deliveries_of(session: Session, notification_id: int) -> list[Any]:
    """The delivery log of one notification, oldest first."""
    return list(
        session.execute(
            sa.select(webhook_deliveries)
            .where(webhook_deliveries.c.notification_id == notification_id)
            .order_by(webhook_deliveries.c.id)
        ).all()
    )
