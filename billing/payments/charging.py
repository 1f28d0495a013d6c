"""Charging invoices in Sippy, exactly once (SPEC §6, invariant 8).

A charge is three steps, because Sippy's `accountDebit` has no idempotency key:
1. in one transaction, lock the invoice and record the attempt with our unique reference;
2. call Sippy with the reference in the payment notes, outside any transaction;
3. in another transaction, record the answer: accepted settles (one settlement transfer per
   invoice, by idempotency key), declined fails the invoice with or without a retry, unknown
   leaves the attempt open.
An open attempt (unknown, or started by a worker that died) is never charged again: once it is
older than the in-flight grace, it is looked up in Sippy's payment history by its reference,
and only a lookup that finds nothing lets the invoice be retried.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.orm import Session

from billing.chart import receivable_code, system_code
from billing.errors import UnknownInvoice
from billing.invoice import CHARGEABLE, Invoice, S, check_move, lock_invoice
from billing.keys import (
    charge_reference,
    invoice_paid_notice,
    payment_failed_notice,
    settlement_key,
)
from billing.notifications.store import store_notifications
from billing.payments.sippy_client import ChargeOutcome, Payment
from billing.settings import BillingDefaults, effective_settings
from billing.tables import customers, invoices, payment_attempts
from ledger.model import EntryRequest, Kind, Leg
from ledger.money import Money
from ledger.posting import post_entry

log = logging.getLogger("smsledger.billing")

OPEN_ATTEMPTS = ("started", "unknown")
# Failures that are ours, not the customer's: an admin fixes them, the user is not told.
OPERATOR_CODES = frozenset({"http_401", "no_sippy_account"})
OPERATOR_REASON = "the payment could not be processed; our billing team has been told"
"""What the user is told of a failure that is ours: every failed invoice notifies its user, but
the internal reason (credentials, a missing Sippy account id) is for the admin only."""


@dataclass(frozen=True)
class ChargePolicy:
    """When to try again (SPEC §6 backoff, configurable) and how long an unanswered attempt may
    still be in flight at Sippy before its absence from the payment history means anything."""

    retry_backoff: tuple[timedelta, ...] = (
        timedelta(hours=1),
        timedelta(hours=6),
        timedelta(hours=24),
    )
    in_flight_grace: timedelta = timedelta(minutes=2)
    # Sippy's clock and ours may differ: look a reference up this far around the attempt.
    lookup_margin: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class Call:
    attempt_id: uuid.UUID
    account_id: int
    amount: Money
    reference: str


@dataclass(frozen=True, slots=True)
class Lookup:
    attempt_id: uuid.UUID
    account_id: int
    reference: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class CheckEarlier:
    """Before a new attempt: look up every earlier attempt's reference again. Sippy may apply
    a debit long after it answered nothing (measured: 90 s late, past a 15 s grace), so an
    attempt that a lookup once found absent may be present now."""

    account_id: int
    references: tuple[tuple[uuid.UUID, str], ...]  # (attempt id, reference)
    since: datetime


Plan = Skip | Call | Lookup | CheckEarlier


@dataclass(frozen=True, slots=True)
class Attempt:
    """One charge attempt row, typed (`payment_attempts`)."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    attempt_no: int
    reference: str
    customer_id: str
    sippy_account_id: str | None
    amount_micros: int
    currency: str
    status: str
    code: str | None

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


def plan_charge(
    session: Session,
    invoice_id: uuid.UUID,
    now: datetime,
    policy: ChargePolicy,
    defaults: BillingDefaults,
    earlier_checked: bool = False,
) -> Plan:
    """Decide what to do for the invoice, recording a new attempt when it is to be charged.
    A new attempt is recorded only once every earlier attempt has been looked up again
    (`earlier_checked`): until then the plan is `CheckEarlier`."""
    invoice = lock_invoice(session, invoice_id)
    if invoice is None:
        return Skip("unknown_invoice")
    open_attempt = session.execute(
        sa.select(payment_attempts)
        .where(
            payment_attempts.c.invoice_id == invoice_id,
            payment_attempts.c.status.in_(OPEN_ATTEMPTS),
        )
        .order_by(payment_attempts.c.attempt_no.desc())
        .limit(1)
    ).one_or_none()
    if open_attempt is not None:
        if now - open_attempt.started_at < policy.in_flight_grace:
            return Skip("in_flight")
        return Lookup(
            open_attempt.id,
            int(open_attempt.sippy_account_id),
            open_attempt.reference,
            open_attempt.started_at,
        )
    if invoice.status not in CHARGEABLE:
        return Skip(invoice.status)
    if invoice.status == S.PENDING and invoice.approved_at is None:
        return Skip("awaiting_approval")
    if invoice.next_retry_at is None or invoice.next_retry_at > now:
        return Skip("not_due")
    if invoice.amount_micros == 0:
        # Usage below half a minor unit rounds to nothing: there is nothing to collect.
        _update_invoice(session, invoice, now, status=S.PAID, next_retry_at=None)
        return Skip(S.PAID)
    account = _account_of(session, invoice.customer_id)
    if not earlier_checked and account is not None and str(account).isdigit():
        earlier = _earlier_attempts(session, invoice.id)
        if earlier:
            return CheckEarlier(
                int(account),
                tuple((a.id, a.reference) for a in earlier),
                min(a.started_at for a in earlier),
            )
    attempt_id = uuid6.uuid7()
    attempt = {
        "id": attempt_id,
        "invoice_id": invoice.id,
        "attempt_no": invoice.attempts + 1,
        "reference": charge_reference(invoice.id, attempt_id),
        "customer_id": invoice.customer_id,
        "sippy_account_id": account,
        "amount_micros": invoice.amount_micros,
        "currency": invoice.currency,
        "started_at": now,
    }
    if account is None or not str(account).isdigit():
        message = "the customer has no Sippy account id: set it with PATCH /api/admin/customers"
        session.execute(
            sa.insert(payment_attempts).values(
                **attempt,
                status="declined",
                code="no_sippy_account",
                message=message,
                retryable=False,
                finished_at=now,
            )
        )
        _fail_invoice(session, invoice, "no_sippy_account", message, None, now)
        _notify_failure(session, invoice, attempt_id, OPERATOR_REASON, None, now, defaults)
        return Skip(S.FAILED)
    session.execute(sa.insert(payment_attempts).values(**attempt, status="started"))
    _update_invoice(
        session,
        invoice,
        now,
        status=S.PROCESSING,
        attempts=invoice.attempts + 1,
        next_retry_at=None,
    )
    return Call(
        attempt_id,
        int(account),
        Money(invoice.amount_micros, invoice.currency),
        str(attempt["reference"]),
    )


def record_outcome(
    session: Session,
    attempt_id: uuid.UUID,
    outcome: ChargeOutcome,
    now: datetime,
    defaults: BillingDefaults,
    policy: ChargePolicy,
) -> str:
    """Apply Sippy's answer to an open attempt; a closed attempt is left as it is."""
    invoice, attempt = _lock_attempt(session, attempt_id)
    if attempt.status not in OPEN_ATTEMPTS:
        return str(attempt.status)
    if outcome.status == "accepted":
        return _settle(session, invoice, attempt.reference, attempt, None, now, defaults)
    if outcome.status == "declined":
        return _decline(session, invoice, attempt, "declined", outcome, now, defaults, policy)
    _update_attempt(
        session, attempt.id, status="unknown", code=outcome.code, message=outcome.message
    )
    _update_invoice(session, invoice, now, last_error=f"{outcome.code}: {outcome.message}")
    log.warning(
        "Charge outcome unknown",
        extra={"invoice_id": str(invoice.id), "code": outcome.code, "reason": outcome.message},
    )
    return "unknown"


def resolve_attempt(
    session: Session,
    attempt_id: uuid.UUID,
    payment: Payment | None,
    now: datetime,
    defaults: BillingDefaults,
    policy: ChargePolicy,
) -> str:
    """Close an open attempt from what Sippy's payment history says: found settles, absent
    means the charge never happened and the invoice may be retried."""
    invoice, attempt = _lock_attempt(session, attempt_id)
    if attempt.status not in OPEN_ATTEMPTS:
        return str(attempt.status)
    if payment is not None:
        if payment.amount.micros != attempt.amount_micros:
            log.warning(
                "Sippy applied a different amount",
                extra={"invoice_id": str(invoice.id), "sippy_amount": payment.amount.format()},
            )
        return _settle(
            session, invoice, attempt.reference, attempt, payment.payment_id, now, defaults
        )
    reason = ChargeOutcome(
        "declined",
        attempt.code or "lost",
        f"no answer from Sippy and no payment with reference {attempt.reference}",
        retryable=True,
    )
    return _decline(session, invoice, attempt, "not_applied", reason, now, defaults, policy)


def _earlier_attempts(session: Session, invoice_id: uuid.UUID) -> list[Any]:
    """The invoice's closed attempts that Sippy might still have applied (all but accepted)."""
    return list(
        session.execute(
            sa.select(
                payment_attempts.c.id, payment_attempts.c.reference, payment_attempts.c.started_at
            )
            .where(
                payment_attempts.c.invoice_id == invoice_id,
                payment_attempts.c.status.not_in(("accepted", *OPEN_ATTEMPTS)),
            )
            .order_by(payment_attempts.c.attempt_no)
        ).all()
    )


def settle_late(
    session: Session,
    attempt_id: uuid.UUID,
    payment: Payment,
    now: datetime,
    defaults: BillingDefaults,
) -> str:
    """An earlier attempt turned out applied after all (found by its reference before a new
    attempt): settle the invoice through it, once. A paid invoice is left as it is."""
    invoice, attempt = _lock_attempt(session, attempt_id)
    if invoice.status == S.PAID:
        return S.PAID
    log.warning(
        "Sippy applied an earlier charge late",
        extra={"invoice_id": str(invoice.id), "reference": attempt.reference},
    )
    return _settle(session, invoice, attempt.reference, attempt, payment.payment_id, now, defaults)


def due_charges(
    session: Session, now: datetime, policy: ChargePolicy, limit: int = 500
) -> list[uuid.UUID]:
    """Invoices with a charge step due: first attempts and retries whose time has come, and
    open attempts old enough to be looked up (a worker died, or the answer was lost)."""
    ready = (
        sa.select(invoices.c.id)
        .where(invoices.c.status.in_(CHARGEABLE), invoices.c.next_retry_at <= now)
        .order_by(invoices.c.next_retry_at)
        .limit(limit)
    )
    stale = (
        sa.select(payment_attempts.c.invoice_id)
        .where(
            payment_attempts.c.status.in_(OPEN_ATTEMPTS),
            payment_attempts.c.started_at <= now - policy.in_flight_grace,
        )
        .limit(limit)
    )
    found = list(session.execute(ready).scalars()) + list(session.execute(stale).scalars())
    return list(dict.fromkeys(found))


def _account_of(session: Session, customer_id: str) -> Any:
    return session.execute(
        sa.select(customers.c.sippy_account_id).where(customers.c.user_id == customer_id)
    ).scalar_one_or_none()


def _attempt(session: Session, condition: sa.ColumnElement[bool]) -> Attempt | None:
    row = session.execute(sa.select(payment_attempts).where(condition)).one_or_none()
    return None if row is None else Attempt.from_row(row)


def _lock_attempt(session: Session, attempt_id: uuid.UUID) -> tuple[Invoice, Attempt]:
    """The attempt and its invoice, the invoice locked first (the order every writer takes)."""
    invoice_id = session.execute(
        sa.select(payment_attempts.c.invoice_id).where(payment_attempts.c.id == attempt_id)
    ).scalar_one()
    invoice = lock_invoice(session, invoice_id)
    attempt = _attempt(session, payment_attempts.c.id == attempt_id)
    assert invoice is not None and attempt is not None  # a foreign key holds the pair
    return invoice, attempt


def _update_invoice(session: Session, invoice: Invoice, now: datetime, **values: Any) -> None:
    """Raises: InvalidInvoiceState when `status` is a move the invoice may not make."""
    if "status" in values:
        values["status"] = check_move(invoice.status, values["status"])
    session.execute(
        sa.update(invoices).where(invoices.c.id == invoice.id).values(**values, updated_at=now)
    )


def _update_attempt(session: Session, attempt_id: uuid.UUID, **values: Any) -> None:
    session.execute(
        sa.update(payment_attempts).where(payment_attempts.c.id == attempt_id).values(**values)
    )


def settle_from_statement(
    session: Session,
    invoice_id: uuid.UUID,
    reference: str,
    payment_id: str | None,
    charged_at: datetime,
    now: datetime,
    defaults: BillingDefaults,
) -> str:
    """Settle an invoice Sippy is known to have charged (a reconciliation found the debit with
    this reference), as a lookup would have: the settlement dated when Sippy charged, the
    attempt of that reference accepted, the invoice paid. Nothing happens to a paid invoice.

    Raises: UnknownInvoice.
    """
    invoice = lock_invoice(session, invoice_id)
    if invoice is None:
        raise UnknownInvoice(f"no invoice {invoice_id}", invoice_id=str(invoice_id))
    if invoice.status == S.PAID:
        return S.PAID
    attempt = _attempt(session, payment_attempts.c.reference == reference)
    if attempt is None:  # charged outside our attempts (by hand in Sippy): record it as one
        session.execute(
            sa.insert(payment_attempts).values(
                id=uuid6.uuid7(),
                invoice_id=invoice.id,
                attempt_no=invoice.attempts + 1,
                reference=reference,
                customer_id=invoice.customer_id,
                sippy_account_id=_account_of(session, invoice.customer_id),
                amount_micros=invoice.amount_micros,
                currency=invoice.currency,
                status="started",
                code="reconciliation",
                started_at=charged_at,
            )
        )
        _update_invoice(session, invoice, now, attempts=invoice.attempts + 1)
        attempt = _attempt(session, payment_attempts.c.reference == reference)
    return _settle(
        session, invoice, reference, attempt, payment_id, now, defaults, effective_at=charged_at
    )


def _settle(
    session: Session,
    invoice: Invoice,
    reference: str,
    attempt: Attempt | None,
    payment_id: str | None,
    now: datetime,
    defaults: BillingDefaults,
    effective_at: datetime | None = None,
) -> str:
    """Post the invoice's one settlement (its idempotency key is the invoice: a second
    accepted attempt could never post another) and mark it paid. The settlement names the Sippy
    account charged, so reconciliation finds it even without the attempt row."""
    account = (
        attempt.sippy_account_id
        if attempt is not None
        else _account_of(session, invoice.customer_id)
    )
    post_entry(
        session,
        EntryRequest(
            Kind.SETTLEMENT,
            settlement_key(reference),
            (
                Leg(
                    system_code("sippy:clearing", invoice.currency),
                    receivable_code(invoice.customer_id),
                    invoice.amount_micros,
                ),
            ),
            effective_at=effective_at,
            description=f"invoice {invoice.id} paid through Sippy",
            metadata={
                "invoice_id": str(invoice.id),
                "reference": reference,
                "customer_id": invoice.customer_id,
                "sippy_account_id": account,
            },
        ),
        now,
    )
    if attempt is not None:
        _update_attempt(
            session, attempt.id, status="accepted", sippy_payment_id=payment_id, finished_at=now
        )
    _update_invoice(session, invoice, now, status=S.PAID, next_retry_at=None, last_error=None)
    _notify(
        session,
        invoice,
        "invoice_paid",
        invoice_paid_notice(invoice.id),
        {"reference": reference},
        now,
        defaults,
    )
    log.info("SMS billing paid", extra={"invoice_id": str(invoice.id)})
    return S.PAID


def _decline(
    session: Session,
    invoice: Invoice,
    attempt: Attempt,
    status: str,
    outcome: ChargeOutcome,
    now: datetime,
    defaults: BillingDefaults,
    policy: ChargePolicy,
) -> str:
    retry_at = None
    if outcome.retryable and invoice.attempts <= len(policy.retry_backoff):
        retry_at = now + policy.retry_backoff[invoice.attempts - 1]
    _update_attempt(
        session,
        attempt.id,
        status=status,
        code=outcome.code,
        message=outcome.message,
        retryable=outcome.retryable,
        finished_at=now,
    )
    _fail_invoice(session, invoice, outcome.code or "declined", outcome.message, retry_at, now)
    reason = OPERATOR_REASON if outcome.code in OPERATOR_CODES else outcome.message
    _notify_failure(session, invoice, attempt.id, reason, retry_at, now, defaults)
    return S.FAILED


def _notify_failure(
    session: Session,
    invoice: Invoice,
    attempt_id: uuid.UUID,
    reason: str | None,
    retry_at: datetime | None,
    now: datetime,
    defaults: BillingDefaults,
) -> None:
    """ "Payment failed", once per attempt: every failed invoice tells its user."""
    _notify(
        session,
        invoice,
        "payment_failed",
        payment_failed_notice(attempt_id),
        {"reason": reason, "next_retry_at": retry_at.isoformat() if retry_at else None},
        now,
        defaults,
    )


def _fail_invoice(
    session: Session,
    invoice: Invoice,
    code: str,
    message: str | None,
    retry_at: datetime | None,
    now: datetime,
) -> None:
    values: dict[str, Any] = {"status": S.FAILED, "last_error": f"{code}: {message}"}
    if invoice.status != S.PROCESSING:  # a decline before any call still counts as an attempt
        values["attempts"] = invoice.attempts + 1
    _update_invoice(session, invoice, now, next_retry_at=retry_at, **values)
    log.warning(
        "Failed to process SMS billing",
        extra={
            "invoice_id": str(invoice.id),
            "user_id": invoice.customer_id,
            "reason": f"{code}: {message}",
            "next_retry_at": retry_at.isoformat() if retry_at else None,
        },
    )


def _notify(
    session: Session,
    invoice: Invoice,
    kind: str,
    dedupe_key: str,
    extra: dict[str, Any],
    now: datetime,
    defaults: BillingDefaults,
) -> None:
    settings = effective_settings(session, [invoice.customer_id], defaults, now)
    if not settings[invoice.customer_id].notifications_enabled:
        return
    store_notifications(
        session,
        [
            {
                "customer_id": invoice.customer_id,
                "kind": kind,
                "dedupe_key": dedupe_key,
                "payload": {
                    "invoice_id": str(invoice.id),
                    "amount_micros": invoice.amount_micros,
                    "currency": invoice.currency,
                    **extra,
                },
                "created_at": now,
            }
        ],
    )


def mark_unsettled(session: Session, invoice_id: uuid.UUID, reason: str, now: datetime) -> None:
    """An invoice whose settlement was reversed (Sippy has no such debit): failed, with the
    reason, and no automatic retry: an admin decides (retry or cancel)."""
    invoice = lock_invoice(session, invoice_id)
    if invoice is not None and invoice.status == S.PAID:
        _update_invoice(
            session, invoice, now, status=S.FAILED, next_retry_at=None, last_error=reason
        )
