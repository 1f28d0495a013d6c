"""Refunding a paid invoice through Sippy, exactly once: the owner's way to undo a settlement.

The same discipline as charges (decision 0013), because `accountCredit` has no idempotency key
either: an admin's request records a refund attempt (`requested`) and an outbox row; the refund
job marks it `started` with its unique reference and commits before Sippy is called; Sippy's
answer is recorded in a second transaction. Accepted: the settlement is reversed, the invoice
undone in the ledger (its usage written off) and the invoice becomes `refunded`. Declined: the
invoice stays paid and an admin may ask again. No answer: the attempt stays open and is looked
up by its reference once older than the in-flight grace; before any new attempt every earlier
one is looked up again, so a credit Sippy applied late is never given twice.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.orm import Session

from billing.errors import InvalidInvoiceState
from billing.invoice import Invoice, InvoiceStatus, check_move, lock_invoice
from billing.keys import refund_reference, refund_settlement_key, settlement_key, undo_keys
from billing.outbox import queue_refund
from billing.payments.charging import Call, ChargePolicy, CheckEarlier, Lookup, Plan, Skip
from billing.payments.sippy_client import ChargeOutcome, Payment
from billing.tables import invoices, payment_attempts, refund_attempts
from billing.write_off import undo_invoice
from ledger.archived import refuse_before_cut
from ledger.model import Kind
from ledger.money import Money
from ledger.posting import reverse_transfer, select_transfers
from ledger.tables import transfers
from ledger.transfer_keys import is_reversed, keyed

OPEN = ("started", "unknown")


def request_refund(session: Session, invoice: Invoice, now: datetime, who: str | None) -> bool:
    """Ask for a refund of a paid invoice (the caller holds the invoice's row lock); whether a
    new attempt was requested (False: one is already under way).

    Raises: InvalidInvoiceState when the invoice is not paid; ArchivedPeriod when its period
    starts before the archive cut (its settlement left the database: the ledger could not undo
    what Sippy would credit).
    """
    if invoice.status != InvoiceStatus.PAID:
        raise InvalidInvoiceState(
            f"cannot refund an invoice that is {invoice.status}", status=invoice.status
        )
    refuse_before_cut(session, invoice.period_start, "a refund of an invoice whose period starts")
    pending = session.execute(
        sa.select(sa.func.count())
        .select_from(refund_attempts)
        .where(
            refund_attempts.c.invoice_id == invoice.id,
            refund_attempts.c.status.in_(("requested", *OPEN)),
        )
    ).scalar_one()
    if pending:
        return False
    attempt_no = (
        1
        + session.execute(
            sa.select(sa.func.coalesce(sa.func.max(refund_attempts.c.attempt_no), 0)).where(
                refund_attempts.c.invoice_id == invoice.id
            )
        ).scalar_one()
    )
    attempt_id = uuid6.uuid7()
    session.execute(
        sa.insert(refund_attempts).values(
            id=attempt_id,
            invoice_id=invoice.id,
            attempt_no=attempt_no,
            reference=refund_reference(invoice.id, attempt_id),
            customer_id=invoice.customer_id,
            sippy_account_id=_charged_account(session, invoice.id),
            amount_micros=invoice.amount_micros,
            currency=invoice.currency,
            status="requested",
            requested_by=who,
            requested_at=now,
        )
    )
    queue_refund(session, invoice.id, attempt_no, now)
    return True


def plan_refund(
    session: Session,
    invoice_id: uuid.UUID,
    now: datetime,
    policy: ChargePolicy,
    earlier_checked: bool = False,
) -> Plan:
    """What to do next for the invoice's refund, marking a requested attempt `started` when it
    is to be sent (committed before Sippy is called)."""
    invoice = lock_invoice(session, invoice_id)
    if invoice is None:
        return Skip("unknown_invoice")
    attempt = _latest(session, invoice_id, ("requested", *OPEN))
    if attempt is None:
        return Skip(invoice.status)
    account = attempt.sippy_account_id
    if account is None or not str(account).isdigit():
        _finish(session, attempt.id, now, "declined", "no_sippy_account", "no Sippy account")
        return Skip("failed")
    if attempt.status in OPEN:
        if now - attempt.started_at < policy.in_flight_grace:
            return Skip("in_flight")
        return Lookup(attempt.id, int(account), attempt.reference, attempt.started_at)
    earlier = _closed_attempts(session, invoice_id)
    if earlier and not earlier_checked:
        since = min(a.started_at for a in earlier)
        return CheckEarlier(int(account), tuple((a.id, a.reference) for a in earlier), since)
    session.execute(
        sa.update(refund_attempts)
        .where(refund_attempts.c.id == attempt.id)
        .values(status="started", started_at=now)
    )
    return Call(
        attempt.id, int(account), Money(attempt.amount_micros, attempt.currency), attempt.reference
    )


def record_refund(
    session: Session, attempt_id: uuid.UUID, outcome: ChargeOutcome, now: datetime
) -> str:
    """Apply Sippy's answer to an open refund attempt; a closed one is left as it is."""
    attempt = _attempt(session, attempt_id)
    invoice = lock_invoice(session, attempt.invoice_id)
    if attempt.status not in OPEN or invoice is None:
        return str(attempt.status)
    if outcome.status == "accepted":
        return _refunded(session, invoice, attempt, None, now)
    if outcome.status == "declined":
        _finish(session, attempt.id, now, "declined", outcome.code, outcome.message)
        return "declined"
    session.execute(
        sa.update(refund_attempts)
        .where(refund_attempts.c.id == attempt.id)
        .values(status="unknown", code=outcome.code, message=outcome.message)
    )
    return "unknown"


def resolve_refund(
    session: Session, attempt_id: uuid.UUID, payment: Payment | None, now: datetime
) -> str:
    """Close an attempt (open, or an earlier one looked up again) from Sippy's history: found
    completes the refund, absent means Sippy never credited it."""
    attempt = _attempt(session, attempt_id)
    invoice = lock_invoice(session, attempt.invoice_id)
    if invoice is None or invoice.status == InvoiceStatus.REFUNDED:
        return InvoiceStatus.REFUNDED
    if payment is not None:
        return _refunded(session, invoice, attempt, payment.payment_id, now)
    if attempt.status in OPEN:
        _finish(session, attempt.id, now, "not_applied", attempt.code or "lost", None)
        # Sippy never took it: ask again (a new attempt, after the earlier ones are checked).
        request_refund(session, invoice, now, "lookup")
    return "not_applied"


def _refunded(
    session: Session, invoice: Invoice, attempt: Any, payment_id: str | None, now: datetime
) -> str:
    """Sippy credited the customer: reverse the settlement, undo the invoice, mark it."""
    for settlement in _settlements(session, invoice.id):
        reverse_transfer(
            session,
            settlement.id,
            refund_settlement_key(invoice.id),
            now,
            f"invoice {invoice.id} refunded",
        )
    undo_invoice(session, invoice, undo_keys("refund", invoice.id), now, "refunded")
    session.execute(
        sa.update(refund_attempts)
        .where(refund_attempts.c.id == attempt.id)
        .values(status="accepted", sippy_payment_id=payment_id, finished_at=now)
    )
    session.execute(  # a request made while this one was unresolved is no longer needed
        sa.update(refund_attempts)
        .where(refund_attempts.c.invoice_id == invoice.id, refund_attempts.c.status == "requested")
        .values(status="not_applied", code="superseded", finished_at=now)
    )
    session.execute(
        sa.update(invoices)
        .where(invoices.c.id == invoice.id)
        .values(
            status=check_move(invoice.status, InvoiceStatus.REFUNDED),
            next_retry_at=None,
            updated_at=now,
        )
    )
    return InvoiceStatus.REFUNDED


def _settlements(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    """The invoice's settlements that still stand (one per accepted charge, normally one)."""
    references = session.execute(
        sa.select(payment_attempts.c.reference).where(
            payment_attempts.c.invoice_id == invoice_id, payment_attempts.c.status == "accepted"
        )
    ).scalars()
    return list(
        select_transfers(
            session,
            keyed(Kind.SETTLEMENT.value, [settlement_key(r) for r in references]),
            ~is_reversed(transfers.c.id),
        )
    )


def _charged_account(session: Session, invoice_id: uuid.UUID) -> str | None:
    """The Sippy account the invoice was charged on: the refund goes back there."""
    return session.execute(
        sa.select(payment_attempts.c.sippy_account_id)
        .where(payment_attempts.c.invoice_id == invoice_id, payment_attempts.c.status == "accepted")
        .order_by(payment_attempts.c.attempt_no.desc())
        .limit(1)
    ).scalar_one_or_none()


def _attempt(session: Session, attempt_id: uuid.UUID) -> Any:
    return session.execute(
        sa.select(refund_attempts).where(refund_attempts.c.id == attempt_id)
    ).one()


def _latest(session: Session, invoice_id: uuid.UUID, statuses: tuple[str, ...]) -> Any:
    return session.execute(
        sa.select(refund_attempts)
        .where(refund_attempts.c.invoice_id == invoice_id, refund_attempts.c.status.in_(statuses))
        .order_by(refund_attempts.c.attempt_no.desc())
        .limit(1)
    ).one_or_none()


def _closed_attempts(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    """Earlier attempts Sippy might still have applied (sent, and not accepted)."""
    return list(
        session.execute(
            sa.select(refund_attempts).where(
                refund_attempts.c.invoice_id == invoice_id,
                refund_attempts.c.status.in_(("declined", "not_applied")),
                refund_attempts.c.started_at.is_not(None),
            )
        ).all()
    )


def _finish(
    session: Session,
    attempt_id: uuid.UUID,
    now: datetime,
    status: str,
    code: str | None,
    message: str | None,
) -> None:
    session.execute(
        sa.update(refund_attempts)
        .where(refund_attempts.c.id == attempt_id)
        .values(status=status, code=code, message=message, finished_at=now)
    )


def due_refunds(session: Session, now: datetime, policy: ChargePolicy) -> list[uuid.UUID]:
    """Invoices whose refund waits: requested and never sent (a lost hand-off), or sent and
    unanswered for longer than the grace (to be looked up)."""
    stale = now - policy.in_flight_grace
    return list(
        session.execute(
            sa.select(refund_attempts.c.invoice_id)
            .distinct()
            .where(
                sa.or_(
                    refund_attempts.c.status == "requested",
                    sa.and_(
                        refund_attempts.c.status.in_(OPEN), refund_attempts.c.started_at <= stale
                    ),
                )
            )
        ).scalars()
    )
