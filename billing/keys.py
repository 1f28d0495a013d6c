"""Every key billing writes by convention, built in one place: the idempotency keys of the
transfers billing owns, the outbox keys of the work they ask for, the dedupe keys of the
notifications they store, and the reference a charge carries to Sippy.

A key is a promise: posting under the same key twice posts once (invariant 5), queueing the
same outbox key twice queues once, storing the same notice twice stores once. So each
convention must be spelled exactly once: a second spelling that drifted would break the
promise silently. Readers that look transfers up by key (an invoice's own page) use the same
builders as the writers.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal, NamedTuple

from ledger.model import Kind

InvoiceId = uuid.UUID | str


def invoice_key(invoice_id: InvoiceId) -> str:
    """The invoice transfer: the exact usage moved from unbilled to receivable."""
    return f"invoice:{invoice_id}"


def rounding_key(invoice_id: InvoiceId) -> str:
    """The rounding transfer that brings the receivable to the rounded invoice total."""
    return f"rounding:{invoice_id}"


class UndoKeys(NamedTuple):
    """The reversals that undo an invoice in the ledger (a cancel, or a refund)."""

    invoice: str
    rounding: str
    credit: str


def undo_keys(action: Literal["cancel", "refund"], invoice_id: InvoiceId) -> UndoKeys:
    """`cancel:invoice:<id>`, `refund:rounding:<id>`, ...: one reversal per transfer undone."""
    return UndoKeys(
        f"{action}:invoice:{invoice_id}",
        f"{action}:rounding:{invoice_id}",
        f"{action}:credit:{invoice_id}",
    )


def credit_key(invoice_id: InvoiceId) -> str:
    """The transfer crediting an invoice with voided messages an earlier invoice had billed."""
    return f"credit:{invoice_id}"


def write_off_key(invoice_id: InvoiceId) -> str:
    """The adjustment that writes a cancelled invoice's usage off (never billed again)."""
    return f"write-off:{invoice_id}"


def settlement_key(reference: str) -> str:
    """One settlement per successful charge, keyed by the charge's unique reference: a charge
    can never be settled twice, and an invoice whose settlement was reversed (Sippy had no such
    debit) can be charged and settled again under its new attempt."""
    return f"settlement:{reference}"


def reconciliation_key(item_id: int) -> str:
    """The correction an accountant accepted for one reconciliation item."""
    return f"reconciliation:{item_id}"


def legacy_usage_key(month: str, user_id: str, destination: str, country: str | None) -> str:
    """A legacy user's usage of the onboarding month, one aggregate per destination."""
    return f"legacy:{month}:{user_id}:{destination}:{country or ''}"


REFUND_SETTLEMENT_PREFIX = "refund:settlement:"


def refund_settlement_key(invoice_id: InvoiceId) -> str:
    """The reversal of a refunded invoice's settlement."""
    return f"{REFUND_SETTLEMENT_PREFIX}{invoice_id}"


def invoice_transfer_keys(invoice_id: InvoiceId, references: list[str]) -> list[tuple[Kind, str]]:
    """Every (kind, key) an invoice's transfers can carry, given its charges' references."""
    return [
        *((Kind.SETTLEMENT, settlement_key(reference)) for reference in references),
        (Kind.INVOICE, invoice_key(invoice_id)),
        (Kind.ROUNDING, rounding_key(invoice_id)),
        (Kind.ADJUSTMENT, credit_key(invoice_id)),
        *((Kind.REVERSAL, key) for key in undo_keys("cancel", invoice_id)),
        *((Kind.REVERSAL, key) for key in undo_keys("refund", invoice_id)),
        (Kind.REVERSAL, refund_settlement_key(invoice_id)),
        (Kind.ADJUSTMENT, write_off_key(invoice_id)),
    ]


def charge_reference(invoice_id: InvoiceId, attempt_id: uuid.UUID) -> str:
    """What a charge attempt carries in Sippy's payment notes: unique per attempt, so an
    unanswered charge is found again by it (decision 0013)."""
    return f"smsledger:{invoice_id}:{attempt_id}"


def refund_reference(invoice_id: InvoiceId, attempt_id: uuid.UUID) -> str:
    """What a refund attempt carries in Sippy's payment notes (not `smsledger:`, which names
    charges: reconciliation reads those)."""
    return f"smsledger-refund:{invoice_id}:{attempt_id}"


def refund_job_key(invoice_id: InvoiceId, attempt_no: int) -> str:
    """The outbox row asking for refund attempt `attempt_no` of an invoice."""
    return f"refund:{invoice_id}:{attempt_no}"


def charge_job_key(invoice_id: InvoiceId, attempt_no: int) -> str:
    """The outbox row asking for charge attempt `attempt_no` of an invoice."""
    return f"charge:{invoice_id}:{attempt_no}"


def invoice_issued_notice(invoice_id: InvoiceId) -> str:
    return f"invoice_issued:{invoice_id}"


def invoice_paid_notice(invoice_id: InvoiceId) -> str:
    return f"invoice_paid:{invoice_id}"


def payment_failed_notice(attempt_id: uuid.UUID) -> str:
    return f"payment_failed:{attempt_id}"


def approaching_threshold_notice(
    customer_id: str,
    period_start: datetime,
    threshold_amount: int | None,
    threshold_messages: int | None,
) -> str:
    """Once per user, open period and threshold (a changed threshold may warn again)."""
    return ":".join(
        [
            "approaching_threshold",
            customer_id,
            period_start.isoformat(),
            str(threshold_amount),
            str(threshold_messages),
        ]
    )


def void_key(message_id: str) -> str:
    """The reversal that voids one usage event (a send that failed after it was posted)."""
    return f"void:{message_id}"
