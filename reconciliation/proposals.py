"""Correcting journal entries for each difference: proposed when a run finds it, posted only
when an accountant accepts the item (`POST …/items/{item}/resolve`).

- missing in ledger, with our reference to an unpaid invoice of that amount: settle the invoice
  as a charge lookup would have, dated when Sippy charged;
- missing in ledger otherwise (a duplicate, no reference, another amount): record the receipt,
  debit `sippy:clearing`, credit `adjustments`;
- missing in Sippy: reverse the ledger's line (a settled invoice goes back to failed);
- amount mismatch in one currency: adjust what was collected by the difference;
- amount mismatch across currencies: reverse the ledger's line, record the receipt in Sippy's.

Every entry carries the item's reference in its metadata, so the next run over the range
matches it; idempotency keys are `reconciliation:<item>[:part]`, so accepting twice posts once.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.chart import receivable_code, system_code, system_specs
from billing.invoice import UNPAID
from billing.keys import reconciliation_key
from billing.payments.charging import mark_unsettled, settle_from_statement
from billing.settings import BillingDefaults
from billing.tables import invoices
from ledger.accounts import ensure_accounts
from ledger.model import EntryRequest, Kind, Leg
from ledger.money import format_micros
from ledger.posting import get_transfer, post_entry, reverse_transfer
from reconciliation.errors import ItemNotResolvable, UnknownRun
from reconciliation.matching import AMOUNT, RECEIPT
from reconciliation.tables import DIFFERENCE_KINDS, reconciliation_items

_INVOICE_REFERENCE = re.compile(r"^smsledger:([0-9a-f-]{36}):")
CLEARING, ADJUSTMENTS = "sippy:clearing", "adjustments"


def propose_all(session: Session, run_id: uuid.UUID) -> None:
    """Write a proposal on every difference of the run."""
    items = session.execute(
        sa.select(reconciliation_items).where(
            reconciliation_items.c.run_id == run_id,
            reconciliation_items.c.kind.in_(DIFFERENCE_KINDS),
        )
    ).all()
    if items:
        session.execute(
            sa.update(reconciliation_items)
            .where(reconciliation_items.c.id == sa.bindparam("item"))
            .values(proposal=sa.bindparam("proposal", type_=reconciliation_items.c.proposal.type)),
            [{"item": item.id, "proposal": proposal(session, item)} for item in items],
        )


def proposal(session: Session, item: Any) -> dict[str, Any]:
    """What would correct this difference, in words and entries."""
    sippy_cur, ledger_cur = item.sippy_currency, item.ledger_currency
    if item.kind == "missing_in_ledger":
        invoice = _unpaid_invoice(session, item)
        if invoice is None:
            return _receipt(item, "record what Sippy collected; refund or explain it")
        receivable = receivable_code(invoice.customer_id)
        return {
            "action": "settle_invoice",
            "invoice_id": str(invoice.id),
            "description": f"Sippy charged invoice {invoice.id}: settle it",
            "entries": [
                _entry("settlement", system_code(CLEARING, sippy_cur), receivable, item, "sippy")
            ],
        }
    reversal = _entry(
        "reversal",
        receivable_code(item.customer_id),
        system_code(CLEARING, ledger_cur),
        item,
        "ledger",
    )
    if item.kind == "missing_in_sippy":
        return {
            "action": "reverse",
            "transfer_id": str(item.ledger_transfer_id),
            "description": "Sippy has no such debit: reverse the ledger's collection",
            "entries": [reversal],
        }
    if sippy_cur != ledger_cur:
        replaced = _receipt(item, "Sippy collected another currency: replace the ledger's line")
        replaced.update(action="replace", transfer_id=str(item.ledger_transfer_id))
        replaced["entries"].insert(0, reversal)
        return replaced
    delta = item.sippy_amount_micros - item.ledger_amount_micros
    clearing, adjustments = system_code(CLEARING, sippy_cur), system_code(ADJUSTMENTS, sippy_cur)
    debit, credit = (clearing, adjustments) if delta > 0 else (adjustments, clearing)
    return {
        "action": "adjust_amount",
        "delta": format_micros(delta),
        "description": f"Sippy collected {format_micros(delta)} {sippy_cur} more than the ledger",
        "entries": [
            {
                "kind": "adjustment",
                "debit": debit,
                "credit": credit,
                "amount": format_micros(abs(delta)),
                "currency": sippy_cur,
            }
        ],
    }


def _entry(kind: str, debit: str, credit: str, item: Any, side: str) -> dict[str, str]:
    micros = item.sippy_amount_micros if side == "sippy" else item.ledger_amount_micros
    currency = item.sippy_currency if side == "sippy" else item.ledger_currency
    return {
        "kind": kind,
        "debit": debit,
        "credit": credit,
        "amount": format_micros(micros),
        "currency": currency,
    }


def _receipt(item: Any, description: str) -> dict[str, Any]:
    currency = item.sippy_currency
    receipt = _entry(
        "adjustment",
        system_code(CLEARING, currency),
        system_code(ADJUSTMENTS, currency),
        item,
        "sippy",
    )
    return {"action": "record_receipt", "description": description, "entries": [receipt]}


def _unpaid_invoice(session: Session, item: Any) -> Any:
    found = _INVOICE_REFERENCE.match(item.reference or "")
    if found is None:
        return None
    invoice = session.execute(
        sa.select(invoices).where(invoices.c.id == uuid.UUID(found.group(1)))
    ).one_or_none()
    if (
        invoice is None
        or invoice.status not in UNPAID
        or invoice.currency != item.sippy_currency
        or invoice.amount_micros != item.sippy_amount_micros
    ):
        return None
    return invoice


def resolve(
    session: Session,
    run_id: uuid.UUID,
    item_id: int,
    action: str,
    by: str,
    note: str | None,
    now: datetime,
    defaults: BillingDefaults,
) -> Any:
    """Accept (post the proposal) or dismiss one difference; the item after it.

    Raises: UnknownRun, ItemNotResolvable.
    """
    item = session.execute(
        sa.select(reconciliation_items)
        .where(reconciliation_items.c.run_id == run_id, reconciliation_items.c.id == item_id)
        .with_for_update()
    ).one_or_none()
    if item is None:
        raise UnknownRun(f"no item {item_id} in run {run_id}", run_id=str(run_id), item=item_id)
    if item.kind == "matched":
        raise ItemNotResolvable("a matched item needs no resolution", item=item_id)
    if item.resolution is not None:
        raise ItemNotResolvable(f"the item was {item.resolution} already", item=item_id)
    if action == "accept":
        _apply(session, item, now, defaults)
    session.execute(
        sa.update(reconciliation_items)
        .where(reconciliation_items.c.id == item_id)
        .values(
            resolution="accepted" if action == "accept" else "dismissed",
            resolved_by=by,
            resolved_at=now,
            resolution_note=note,
        )
    )
    return session.execute(
        sa.select(reconciliation_items).where(reconciliation_items.c.id == item_id)
    ).one()


def _apply(session: Session, item: Any, now: datetime, defaults: BillingDefaults) -> None:
    plan = item.proposal or {}
    key = reconciliation_key(item.id)
    action = plan.get("action")
    if action == "settle_invoice":
        settle_from_statement(
            session,
            uuid.UUID(plan["invoice_id"]),
            item.reference,
            item.sippy_payment_id,
            item.sippy_at,
            now,
            defaults,
        )
    elif action == "record_receipt":
        _post_receipt(session, item, key, now)
    elif action in ("reverse", "replace"):
        _reverse(session, item, key if action == "reverse" else f"{key}:reverse", now)
        if action == "replace":
            _post_receipt(session, item, f"{key}:receipt", now)
    elif action == "adjust_amount":
        delta = item.sippy_amount_micros - item.ledger_amount_micros
        clearing = system_code(CLEARING, item.sippy_currency)
        adjustments = system_code(ADJUSTMENTS, item.sippy_currency)
        leg = Leg(clearing, adjustments, delta) if delta > 0 else Leg(adjustments, clearing, -delta)
        _post(session, key, leg, item, AMOUNT, item.ledger_at, now, collected_delta_micros=delta)
    else:
        raise ItemNotResolvable("this item has no proposal to accept: dismiss it", item=item.id)


def _post_receipt(session: Session, item: Any, key: str, now: datetime) -> None:
    currency = item.sippy_currency
    ensure_accounts(session, system_specs(currency), now)
    leg = Leg(
        system_code(CLEARING, currency),
        system_code(ADJUSTMENTS, currency),
        item.sippy_amount_micros,
    )
    _post(
        session, key, leg, item, RECEIPT, item.sippy_at, now, sippy_payment_id=item.sippy_payment_id
    )


def _post(
    session: Session,
    key: str,
    leg: Leg,
    item: Any,
    purpose: str,
    effective_at: datetime,
    now: datetime,
    **extra: Any,
) -> None:
    post_entry(
        session,
        EntryRequest(
            Kind.ADJUSTMENT,
            key,
            (leg,),
            effective_at=effective_at,
            description=f"reconciliation run {item.run_id}, item {item.id}",
            metadata={
                "reconciliation": purpose,
                "reference": item.reference,
                "sippy_account_id": item.sippy_account_id,
                "customer_id": item.customer_id,
                **extra,
            },
        ),
        now,
    )


def _reverse(session: Session, item: Any, key: str, now: datetime) -> None:
    original = get_transfer(session, item.ledger_transfer_id)
    reverse_transfer(
        session, original.id, key, now, f"reconciliation run {item.run_id}: Sippy has no such debit"
    )
    invoice_id = (original.metadata or {}).get("invoice_id")
    if original.kind == Kind.SETTLEMENT and invoice_id:
        reason = f"settlement reversed by reconciliation run {item.run_id}: Sippy has no such debit"
        mark_unsettled(session, uuid.UUID(invoice_id), reason, now)
