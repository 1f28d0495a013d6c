"""Undoing an invoice in the ledger, for a cancel (unpaid) and a refund (paid) alike: the invoice,
rounding and credit transfers are reversed, the usage it billed moves out of unbilled into
`adjustments:<CUR>` (the customer owes nothing for it and it is never billed again), and the
credits it had applied wait for the next invoice again."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import system_code, unbilled_code
from billing.invoice import Invoice
from billing.keys import UndoKeys, credit_key, invoice_key, rounding_key, write_off_key
from billing.tables import usage_credits
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry, reverse_transfer, select_transfers
from ledger.transfer_keys import keyed


def undo_invoice(
    session: Session, invoice: Invoice, undo: UndoKeys, now: datetime, why: str
) -> None:
    """Reverse the invoice's transfers under the `undo` keys, write its usage off, and release
    its credits. Idempotent: each posting is keyed."""
    for kind, key, undo_key in (
        (Kind.INVOICE, invoice_key(invoice.id), undo.invoice),
        (Kind.ROUNDING, rounding_key(invoice.id), undo.rounding),
        (Kind.ADJUSTMENT, credit_key(invoice.id), undo.credit),
    ):
        for original in select_transfers(session, keyed(kind.value, key)):
            reverse_transfer(session, original.id, undo_key, now, f"invoice {invoice.id} {why}")
    if invoice.usage_micros > 0:
        post_entry(
            session,
            EntryRequest(
                Kind.ADJUSTMENT,
                write_off_key(invoice.id),
                (
                    Leg(
                        system_code("adjustments", invoice.currency),
                        unbilled_code(invoice.customer_id),
                        invoice.usage_micros,
                    ),
                ),
                description=f"usage of {why} invoice {invoice.id} written off",
                metadata={"invoice_id": str(invoice.id)},
            ),
            now,
        )
    session.execute(
        sa.update(usage_credits)
        .where(usage_credits.c.invoice_id == invoice.id)
        .values(invoice_id=None)
    )
