"""Voiding a usage event: the owner's way to undo an SMS that was posted but not sent (or sent
by mistake). The usage transfer is reversed and the usage counters move back in the same unit
of work, so `threshold_messages`, percent used, the pre-send check and the user's widget stop
counting it (DESIGN invariant 10). Idempotent by `message_id`.

A message an invoice has billed already is not reversed (that invoice stands as issued): it is
credited on the customer's next invoice instead (`usage_credits`, applied by the close).

A message never posted but held by a reserving check (billing/usage/holds.py) has its hold
released: the send failed before its usage arrived.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import unbilled_code
from billing.errors import UnknownHold, UnknownUsage
from billing.keys import void_key
from billing.tables import invoice_usage, usage_counters, usage_credits
from billing.usage.holds import drop_holds, release_hold
from ledger.accounts import find_accounts, insert_ignoring_conflicts
from ledger.archived import refuse_before_cut
from ledger.balances import lock_balance_rows
from ledger.model import Kind, Transfer
from ledger.posting import reverse_transfer, select_transfers
from ledger.transfer_keys import key_taken, keyed


@dataclass(frozen=True, slots=True)
class VoidResult:
    # "voided" now, "credited" (billed: on the next invoice), "duplicate", or "released" (never
    # posted: its hold was freed)
    status: str
    usage: Transfer | None  # None when released
    reversal: Transfer | None  # None when credited or released
    billed_on: uuid.UUID | None = None  # the invoice that had billed it


def void_usage(
    session: Session, message_id: str, now: datetime, reason: str | None = None
) -> VoidResult:
    """Void the unbilled usage event `message_id`.

    Raises: UnknownUsage (neither posted nor held); BillingOwnedTransfer when it was billed
    already (the message names the invoice and what to do with it); ArchivedPeriod when its
    month was archived.
    """
    found = _transfers(session, Kind.USAGE, message_id)
    if not found and key_taken(session, Kind.USAGE.value, message_id):
        refuse_before_cut(session, None, f"message {message_id!r}: its usage")  # archived
    if not found:
        try:
            release_hold(session, message_id, now)
        except UnknownHold:
            raise UnknownUsage(f"no usage event {message_id!r}", message_id=message_id) from None
        return VoidResult("released", None, None)
    usage = found[0]
    drop_holds(session, [message_id])  # a hold its racing post could not see
    customer_id = str((usage.metadata or {})["user_id"])  # every usage transfer names its user
    # The lock every usage post and every close takes first: a close cannot bill this message
    # while it is being voided, nor a void slip in after the close read it.
    unbilled = find_accounts(session, [unbilled_code(customer_id)])[unbilled_code(customer_id)]
    lock_balance_rows(session, [unbilled.id])
    invoice_id = session.execute(
        sa.select(invoice_usage.c.invoice_id).where(
            invoice_usage.c.transfer_id == usage.id,
            invoice_usage.c.effective_at == usage.effective_at,  # its month's partition only
        )
    ).scalar_one_or_none()
    if invoice_id is not None:
        return _credit(session, customer_id, usage, invoice_id, now, reason)
    earlier = _transfers(session, Kind.REVERSAL, void_key(message_id))
    if earlier:  # a replay, whatever reason it gives: the first void stands
        return VoidResult("duplicate", usage, earlier[0])
    result = reverse_transfer(
        session, usage.id, void_key(message_id), now, reason or f"usage {message_id} voided"
    )
    _uncount(session, customer_id, usage)
    return VoidResult("voided", usage, result.transfers[0])


def _credit(
    session: Session,
    customer_id: str,
    usage: Transfer,
    invoice_id: uuid.UUID,
    now: datetime,
    reason: str | None,
) -> VoidResult:
    """Record the credit for a billed message, once."""
    inserted = session.execute(
        insert_ignoring_conflicts(session, usage_credits)
        .values(
            customer_id=customer_id,
            transfer_id=usage.id,
            message_id=usage.idempotency_key,
            amount_micros=usage.amount,
            currency=usage.currency,
            reason=reason,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["transfer_id"])
        .returning(usage_credits.c.id)
    ).first()
    return VoidResult("credited" if inserted else "duplicate", usage, None, invoice_id)


def _transfers(session: Session, kind: Kind, key: str) -> list[Transfer]:
    return list(select_transfers(session, keyed(kind.value, key)))


def _uncount(session: Session, customer_id: str, usage: Transfer) -> None:
    """Take the message off the counters; with none left unbilled, nothing is unbilled since
    any instant (a later close need not look)."""
    metadata = usage.metadata or {}
    messages = int(metadata.get("messages") or 1)
    segments = int(metadata.get("segments") or 0)
    left = usage_counters.c.unbilled_messages - messages
    session.execute(
        sa.update(usage_counters)
        .where(usage_counters.c.customer_id == customer_id)
        .values(
            unbilled_messages=left,
            unbilled_segments=usage_counters.c.unbilled_segments - segments,
            oldest_unbilled_at=sa.case(
                (left <= 0, None), else_=usage_counters.c.oldest_unbilled_at
            ),
        )
    )
