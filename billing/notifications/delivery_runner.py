"""Delivering due webhooks: a runner, so it opens its own units of work (decision 0013).

The HTTP calls to customers' receivers must run outside any transaction (a slow receiver would
hold row locks for its whole timeout), so one batch is three kinds of step: claim a batch in one
transaction, POST each notification with no transaction open, record each answer in its own
transaction. Everything inside a step is a plain service function taking a `Session`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session

from billing.notifications.store import public_notification
from billing.notifications.webhooks import (
    SIGNATURE_HEADER,
    DeliverySummary,
    Sender,
    claim_due,
    record_delivery,
    sign,
)
from billing.settings import BillingDefaults
from ledger.db import run_in_transaction
from ledger.exact_json import dump_json


def deliver_due(
    sessions: Callable[[], Session],
    send: Sender,
    secret: str | None,
    clock: Callable[[], datetime],
    defaults: BillingDefaults,
    limit: int = 200,
) -> DeliverySummary:
    """Deliver one batch of due notifications; what happened to them."""
    summary = DeliverySummary()
    if not secret:
        return summary  # nothing is ever sent unsigned; the job says why once
    batch = run_in_transaction(sessions, lambda s: claim_due(s, clock(), defaults, limit, summary))
    for row, url in batch:
        body = dump_json(public_notification(row)).encode()
        timestamp = int(clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            "X-Smsledger-Event": row.kind,
        }
        started = time.perf_counter()
        answer = send(url, body, headers)
        duration_ms = int((time.perf_counter() - started) * 1000)
        delivery = functools.partial(
            record_delivery, row=row, url=url, answer=answer, duration_ms=duration_ms, now=clock()
        )
        outcome = run_in_transaction(sessions, delivery)
        setattr(summary, outcome, getattr(summary, outcome) + 1)
    return summary
