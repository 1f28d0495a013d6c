"""Undoing an invoice in the ledger, for a cancel (unpaid) and a refund (paid) alike: the invoice
and rounding transfers are reversed, and the usage it billed moves out of unbilled into
`adjustments:<CUR>`, so the customer owes nothing for it and it is never billed again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from billing.chart import system_code, unbilled_code
from billing.invoice import Invoice
from billing.keys import invoice_key, rounding_key, write_off_key
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entry, reverse_transfer, select_transfers
from ledger.tables import transfers


def undo_invoice(
    session: Session, invoice: Invoice, undo_keys: tuple[str, str], now: datetime, why: str
) -> None:
    """Reverse the invoice's transfers under `undo_keys` (invoice, rounding) and write its
    usage off. Idempotent: each posting is keyed."""
    for kind, key, undo_key in (
        (Kind.INVOICE, invoice_key(invoice.id), undo_keys[0]),
        (Kind.ROUNDING, rounding_key(invoice.id), undo_keys[1]),
    ):
        for original in select_transfers(
            session, transfers.c.kind == kind.value, transfers.c.idempotency_key == key
        ):
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
