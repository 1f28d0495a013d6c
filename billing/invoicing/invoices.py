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

from billing.chart import system_code, unbilled_code
from billing.errors import InvalidInvoiceState, UnknownInvoice
from billing.paging import Page, fetch_page
from billing.settings import BillingDefaults, effective_settings
from billing.tables import customers, invoice_lines, invoices, outbox, payment_attempts
from ledger.accounts import insert_ignoring_conflicts
from ledger.model import EntryRequest, Kind, Leg, Transfer
from ledger.posting import post_entry, reverse_transfer, select_transfers
from ledger.tables import transfers

ACTIONS = ("process", "approve", "retry", "cancel")


def last_invoiced_end() -> sa.ScalarSelect[Any]:
    """Per customer row (correlated on `customers.user_id`): the end of its last invoiced,
    uncancelled period: where its open period starts."""
    return (
        sa.select(sa.func.max(invoices.c.period_end))
        .where(invoices.c.customer_id == customers.c.user_id, invoices.c.status != "cancelled")
        .scalar_subquery()
    )


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


def settlement_key(reference: str) -> str:
    """One settlement per successful charge, keyed by the charge's unique reference: a charge
    can never be settled twice, and an invoice whose settlement was reversed (Sippy had no such
    debit) can be charged and settled again under its new attempt."""
    return f"settlement:{reference}"


def payment_attempts_of(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    """Every charge attempt of the invoice, first first."""
    return list(
        session.execute(
            sa.select(payment_attempts)
            .where(payment_attempts.c.invoice_id == invoice_id)
            .order_by(payment_attempts.c.attempt_no)
        ).all()
    )


def _keys(session: Session, invoice_id: uuid.UUID) -> list[tuple[str, str]]:
    settlements = [
        (Kind.SETTLEMENT.value, settlement_key(attempt.reference))
        for attempt in payment_attempts_of(session, invoice_id)
    ]
    return [
        *settlements,
        (Kind.INVOICE.value, f"invoice:{invoice_id}"),
        (Kind.ROUNDING.value, f"rounding:{invoice_id}"),
        (Kind.REVERSAL.value, f"cancel:invoice:{invoice_id}"),
        (Kind.REVERSAL.value, f"cancel:rounding:{invoice_id}"),
        (Kind.ADJUSTMENT.value, f"write-off:{invoice_id}"),
    ]


def invoice_transfers(session: Session, invoice_id: uuid.UUID) -> list[Transfer]:
    """The ledger transfers an invoice caused, found by their idempotency keys (indexed)."""
    found: list[Transfer] = []
    for kind, key in _keys(session, invoice_id):
        found.extend(
            select_transfers(session, transfers.c.kind == kind, transfers.c.idempotency_key == key)
        )
    return sorted(found, key=lambda t: (t.posted_at, str(t.id)))


def act(
    session: Session,
    invoice_id: uuid.UUID,
    action: str,
    now: datetime,
    defaults: BillingDefaults,
) -> Any:
    """Apply an admin action and return the invoice row after it.

    process: approve if needed and queue a charge now; approve: approve, and queue a charge
    when the customer's settings auto-process; retry: a failed invoice goes back to pending
    with a new charge attempt queued; cancel: a pending or failed invoice is reversed in the
    ledger and its usage written off (never billed again).

    Raises: UnknownInvoice, InvalidInvoiceState.
    """
    if action not in ACTIONS:
        raise InvalidInvoiceState(f"action must be one of {', '.join(ACTIONS)}", action=action)
    invoice = session.execute(
        sa.select(invoices).where(invoices.c.id == invoice_id).with_for_update()
    ).one_or_none()
    if invoice is None:
        raise UnknownInvoice(f"no invoice {invoice_id}", invoice_id=str(invoice_id))
    allowed = {
        "process": ("pending",),
        "approve": ("pending",),
        "retry": ("failed",),
        "cancel": ("pending", "failed"),
    }[action]
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
            _queue_charge(session, invoice, now)
    elif action == "retry":
        changes.update(status="pending", next_retry_at=now)
        _queue_charge(session, invoice, now)
    else:
        changes.update(status="cancelled", next_retry_at=None)
        _reverse_and_write_off(session, invoice, now)
    session.execute(sa.update(invoices).where(invoices.c.id == invoice_id).values(**changes))
    return get_invoice(session, invoice_id)


def _queue_charge(session: Session, invoice: Any, now: datetime) -> None:
    session.execute(
        insert_ignoring_conflicts(session, outbox).on_conflict_do_nothing(index_elements=["key"]),
        {
            "topic": "charge_invoice",
            "key": f"charge:{invoice.id}:{invoice.attempts + 1}",
            "payload": {"invoice_id": str(invoice.id)},
            "created_at": now,
        },
    )


def _reverse_and_write_off(session: Session, invoice: Any, now: datetime) -> None:
    """Undo the invoice's transfers, then move the usage it billed out of unbilled into
    `adjustments:<CUR>`: the customer owes nothing for it and it is never billed again."""
    for kind, key, cancel_key in (
        (Kind.INVOICE, f"invoice:{invoice.id}", f"cancel:invoice:{invoice.id}"),
        (Kind.ROUNDING, f"rounding:{invoice.id}", f"cancel:rounding:{invoice.id}"),
    ):
        for original in select_transfers(
            session, transfers.c.kind == kind.value, transfers.c.idempotency_key == key
        ):
            reverse_transfer(
                session, original.id, cancel_key, now, f"invoice {invoice.id} cancelled"
            )
    if invoice.usage_micros > 0:
        post_entry(
            session,
            EntryRequest(
                Kind.ADJUSTMENT,
                f"write-off:{invoice.id}",
                (
                    Leg(
                        system_code("adjustments", invoice.currency),
                        unbilled_code(invoice.customer_id),
                        invoice.usage_micros,
                    ),
                ),
                description=f"usage of cancelled invoice {invoice.id} written off",
                metadata={"invoice_id": str(invoice.id)},
            ),
            now,
        )
