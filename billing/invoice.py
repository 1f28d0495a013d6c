"""An invoice: its record as the services read it, its states and the moves between them, and
where a customer's open period starts (after its last invoice that was not cancelled).

Every writer of `invoices.status` moves it through `check_move`, so a move nobody designed
(a cancelled invoice charged, a paid one cancelled) is refused in Python before the database
sees it; the database's `ck_invoices_status_known` still refuses an unknown state.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.errors import InvalidInvoiceState
from billing.tables import customers, invoices


class InvoiceStatus(StrEnum):
    PENDING = "pending"  # issued; waiting for its charge (or for an admin's approval)
    PROCESSING = "processing"  # a charge attempt is open at Sippy
    PAID = "paid"  # settled in the ledger
    FAILED = "failed"  # the last attempt was declined; retried on schedule or by an admin
    CANCELLED = "cancelled"  # reversed in the ledger, its usage written off; final
    REFUNDED = "refunded"  # paid, then credited back in Sippy and undone in the ledger; final


S = InvoiceStatus

UNPAID = (S.PENDING, S.PROCESSING, S.FAILED)
"""What a customer still owes: counted by the pre-send check and the user's summary."""

CHARGEABLE = (S.PENDING, S.FAILED)
"""States a new charge attempt may start from (when the invoice is due)."""

MOVES: Mapping[InvoiceStatus, frozenset[InvoiceStatus]] = {
    # charge started, nothing to collect, no Sippy account, admin approval, admin cancel,
    # settled from Sippy's statement
    S.PENDING: frozenset({S.PROCESSING, S.PAID, S.FAILED, S.PENDING, S.CANCELLED}),
    # Sippy's answer (or the lookup of an unanswered charge), or a statement settles it
    S.PROCESSING: frozenset({S.PAID, S.FAILED}),
    # a retry's attempt, admin retry, admin cancel, a decline before any call, statement
    S.FAILED: frozenset({S.PROCESSING, S.PENDING, S.CANCELLED, S.FAILED, S.PAID}),
    # reconciliation found no such debit in Sippy (the settlement is reversed, an admin
    # decides), or an admin refunded it and Sippy took the credit
    S.PAID: frozenset({S.FAILED, S.REFUNDED}),
    S.CANCELLED: frozenset(),
    S.REFUNDED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class Invoice:
    """One invoice row, typed: what charging and the admin actions reason about."""

    id: uuid.UUID
    customer_id: str
    status: InvoiceStatus
    frequency: str
    period_start: datetime
    period_end: datetime
    currency: str
    amount_micros: int
    usage_micros: int
    rounding_micros: int
    message_count: int
    segments: int
    approved_at: datetime | None
    attempts: int
    last_error: str | None
    next_retry_at: datetime | None
    created_at: datetime
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Invoice:
        values = {name: getattr(row, name) for name in _FIELDS}
        return cls(**{**values, "status": InvoiceStatus(row.status)})


_FIELDS = tuple(f.name for f in fields(Invoice))


def check_move(current: str, new: str) -> InvoiceStatus:
    """The new state, when `current` may move to it.

    Raises: InvalidInvoiceState for a move the table does not allow."""
    target = InvoiceStatus(new)
    if target not in MOVES[InvoiceStatus(current)]:
        raise InvalidInvoiceState(
            f"an invoice that is {current} cannot become {new}", status=current, to=new
        )
    return target


def last_invoiced_end() -> sa.ScalarSelect[Any]:
    """Per customer row (correlated on `customers.user_id`): the end of its last invoiced,
    uncancelled period: where its open period starts."""
    return (
        sa.select(sa.func.max(invoices.c.period_end))
        .where(
            invoices.c.customer_id == customers.c.user_id,
            invoices.c.status != InvoiceStatus.CANCELLED,
        )
        .scalar_subquery()
    )


def lock_invoice(session: Session, invoice_id: uuid.UUID) -> Invoice | None:
    """The invoice, its row locked until the transaction ends (every writer of an invoice
    takes this lock first); None when there is no such invoice."""
    row = session.execute(
        sa.select(invoices).where(invoices.c.id == invoice_id).with_for_update()
    ).one_or_none()
    return None if row is None else Invoice.from_row(row)
