"""Manual journal entries (adjustments, opening balances) and their reversals, posted by people.

The engine's own transfers (usage, invoice, rounding, settlement, the write-off of a cancelled
invoice, a reconciliation's corrections) are posted, reversed and credited only by the billing
flow that owns them, which moves the billing state (counters, invoice status) in the same unit
of work (DESIGN invariant 10). A person undoes them through that owner's action; the generic
reversal refuses them and says which action to use.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from billing.chart import ensure_system_accounts_named
from billing.errors import BillingOwnedTransfer, KindNotAllowed
from ledger.model import EntryRequest, Kind, PostResult, Transfer
from ledger.posting import get_transfer, post_entry, reverse_transfer

MANUAL_KINDS = frozenset({Kind.ADJUSTMENT, Kind.OPENING})


def post_manual_entry(session: Session, entry: EntryRequest, now: datetime) -> PostResult:
    """Post an adjustment or opening entry, creating standard system accounts it names.

    Raises: KindNotAllowed, and whatever `ledger.posting.post_entries` raises.
    """
    if entry.kind not in MANUAL_KINDS:
        raise KindNotAllowed(
            f"kind {entry.kind.value!r} cannot be posted by hand; use one of "
            + ", ".join(sorted(k.value for k in MANUAL_KINDS)),
            field="kind",
        )
    codes = {code for leg in entry.legs for code in (leg.debit, leg.credit)}
    ensure_system_accounts_named(session, codes, now)
    return post_entry(session, entry, now)


OWNER_ACTIONS = {
    Kind.USAGE: "void the usage event: POST /api/usage/{message_id}/void",
    Kind.INVOICE: 'cancel the invoice: POST /api/admin/sms/billing {"action": "cancel"}',
    Kind.ROUNDING: 'cancel the invoice: POST /api/admin/sms/billing {"action": "cancel"}',
    Kind.SETTLEMENT: 'refund the invoice: POST /api/admin/sms/billing {"action": "refund"}',
}
"""The billing-owned kinds and the action that undoes each through its owner."""


def owner_action(session: Session, transfer: Transfer) -> str | None:
    """What undoes `transfer` when billing owns it; None for a manual entry (or the reversal
    of one), which the generic reversal may undo."""
    if transfer.kind in OWNER_ACTIONS:
        return OWNER_ACTIONS[transfer.kind].replace("{message_id}", transfer.idempotency_key)
    metadata = transfer.metadata or {}
    if transfer.kind == Kind.ADJUSTMENT and "invoice_id" in metadata:
        # A credit on an invoice, or the write-off of a cancelled or refunded one.
        return f"act on invoice {metadata['invoice_id']} (cancel it unpaid, refund it paid)"
    if "reconciliation" in metadata:
        return "post a correcting adjustment: it was accepted from a reconciliation item"
    if transfer.kind == Kind.REVERSAL and transfer.reverses_id is not None:
        original = get_transfer(session, transfer.reverses_id)
        found = owner_action(session, original)
        if found is not None:
            return f"nothing by hand: it undid a billing transfer ({original.kind.value})"
    return None


def reverse_manual_entry(
    session: Session,
    transfer_id: uuid.UUID,
    idempotency_key: str,
    now: datetime,
    description: str | None = None,
) -> PostResult:
    """Reverse a manual entry (an adjustment or opening, or a reversal of one).

    Raises: BillingOwnedTransfer (409) naming the owner's action for a billing transfer;
    UnknownTransfer, AlreadyReversed, BalanceLimitExceeded as `reverse_transfer` does.
    """
    transfer = get_transfer(session, transfer_id)
    action = owner_action(session, transfer)
    if action is not None:
        raise BillingOwnedTransfer(
            f"a {transfer.kind.value} transfer belongs to billing and is not reversed here;"
            f" to undo it, {action}",
            transfer_id=str(transfer_id),
            kind=transfer.kind.value,
            action=action,
        )
    return reverse_transfer(session, transfer_id, idempotency_key, now, description)
