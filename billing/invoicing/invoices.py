"""Invoices for admins: listing, one invoice with its lines and ledger transfers, and the actions
of SPEC §6 (process now, approve, retry, cancel).

An action that should lead to a charge makes the invoice due (`next_retry_at`) and writes a
`charge_invoice` outbox row in the same transaction, keyed by invoice and attempt so a repeated
action cannot queue the same attempt twice; `billing.payments.charging` does the charging.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.errors import InvalidInvoiceState, UnknownInvoice
from billing.invoice import InvoiceStatus, check_move, lock_invoice
from billing.keys import (
    invoice_transfer_keys,
    undo_keys,
)
from billing.outbox import ChargeRequest, queue_charges
from billing.paging import Page, fetch_page
from billing.payments.refunds import request_refund
from billing.settings import BillingDefaults, effective_settings
from billing.tables import invoice_lines, invoices, payment_attempts
from billing.write_off import undo_invoice
from ledger.model import Transfer
from ledger.posting import select_transfers
from ledger.transfer_keys import keyed_pairs

ACTIONS_FROM: dict[str, tuple[InvoiceStatus, ...]] = {
    "process": (InvoiceStatus.PENDING,),
    "approve": (InvoiceStatus.PENDING,),
    "retry": (InvoiceStatus.FAILED,),
    "cancel": (InvoiceStatus.PENDING, InvoiceStatus.FAILED),
    "refund": (InvoiceStatus.PAID,),
}
"""The admin actions of SPEC §6 and the states each may start from."""

ACTIONS = tuple(ACTIONS_FROM)


def list_invoices(
    session: Session,
    *,
    status: str | None = None,
    user_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    frequency: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Invoices newest first; `start`/`end` bound the billed period."""
    filters: list[sa.ColumnElement[bool]] = []
    if status is not None:
        filters.append(invoices.c.status == status)
    if user_id is not None:
        filters.append(invoices.c.customer_id == user_id)
    if frequency is not None:
        filters.append(invoices.c.frequency == frequency)
    if start is not None:
        filters.append(invoices.c.period_end > start)
    if end is not None:
        filters.append(invoices.c.period_start < end)
    order = [invoices.c.created_at.desc(), invoices.c.id.desc()]
    return fetch_page(session, invoices, filters, order, limit, offset)


def get_invoice(session: Session, invoice_id: uuid.UUID) -> Any:
    """Raises: UnknownInvoice."""
    row = session.execute(sa.select(invoices).where(invoices.c.id == invoice_id)).one_or_none()
    if row is None:
        raise UnknownInvoice(f"no invoice {invoice_id}", invoice_id=str(invoice_id))
    return row


def invoice_lines_of(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    return list(
        session.execute(
            sa.select(invoice_lines)
            .where(invoice_lines.c.invoice_id == invoice_id)
            .order_by(invoice_lines.c.country, invoice_lines.c.prefix)
        ).all()
    )


def payment_attempts_of(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    """Every charge attempt of the invoice, first first."""
    return list(
        session.execute(
            sa.select(payment_attempts)
            .where(payment_attempts.c.invoice_id == invoice_id)
            .order_by(payment_attempts.c.attempt_no)
        ).all()
    )


def invoice_transfers(session: Session, invoice_id: uuid.UUID) -> list[Transfer]:
    """The ledger transfers an invoice caused, found by their idempotency keys in one query
    (the `transfer_keys` primary key)."""
    references = [attempt.reference for attempt in payment_attempts_of(session, invoice_id)]
    pairs = [(kind.value, key) for kind, key in invoice_transfer_keys(invoice_id, references)]
    found = select_transfers(session, keyed_pairs(pairs))
    return sorted(found, key=lambda t: (t.posted_at, str(t.id)))


def act(
    session: Session,
    invoice_id: uuid.UUID,
    action: str,
    now: datetime,
    defaults: BillingDefaults,
    who: str | None = None,
) -> Any:
    """Apply an admin action and return the invoice row after it.

    process: approve if needed and queue a charge now; approve: approve, and queue a charge
    when the customer's settings auto-process; retry: a failed invoice goes back to pending
    with a new charge attempt queued; cancel: a pending or failed invoice is reversed in the
    ledger and its usage written off (never billed again); refund: a paid invoice is credited
    back in Sippy (queued; it becomes `refunded` when Sippy takes the credit).

    Raises: UnknownInvoice, InvalidInvoiceState.
    """
    if action not in ACTIONS:
        raise InvalidInvoiceState(f"action must be one of {', '.join(ACTIONS)}", action=action)
    invoice = lock_invoice(session, invoice_id)
    if invoice is None:
        raise UnknownInvoice(f"no invoice {invoice_id}", invoice_id=str(invoice_id))
    allowed = ACTIONS_FROM[action]
    if invoice.status not in allowed or (action == "approve" and invoice.approved_at is not None):
        raise InvalidInvoiceState(
            f"cannot {action} an invoice that is {invoice.status}"
            + (" and already approved" if action == "approve" and invoice.approved_at else ""),
            status=invoice.status,
            action=action,
        )
    changes: dict[str, Any] = {"updated_at": now}
    settings = effective_settings(session, [invoice.customer_id], defaults, now)[
        invoice.customer_id
    ]
    if action in ("process", "approve"):
        changes["approved_at"] = invoice.approved_at or now
        if action == "process" or settings.auto_process:
            changes["next_retry_at"] = now
            queue_charges(session, [ChargeRequest(invoice.id, invoice.attempts + 1)], now)
    elif action == "retry":
        changes.update(status=check_move(invoice.status, InvoiceStatus.PENDING), next_retry_at=now)
        queue_charges(session, [ChargeRequest(invoice.id, invoice.attempts + 1)], now)
    elif action == "refund":
        request_refund(session, invoice, now, who)
    else:
        changes.update(
            status=check_move(invoice.status, InvoiceStatus.CANCELLED), next_retry_at=None
        )
        undo_invoice(
            session,
            invoice,
            undo_keys("cancel", invoice.id),
            now,
            "cancelled",
        )
    session.execute(sa.update(invoices).where(invoices.c.id == invoice_id).values(**changes))
    return get_invoice(session, invoice_id)
