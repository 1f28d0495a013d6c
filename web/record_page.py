"""`/admin/sms/billing/<id>`: one billing record — its headline, its lines per country and
prefix, its payment attempts as a timeline with Sippy's answers and the next retry, and its
ledger transfers, all read in one unit of work. Admins get the record's actions as plain forms
that come back here; the ones that cannot be undone are confirmed on this page first
(`?confirm=cancel`), so nothing needs JavaScript."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from flask import render_template, request
from flask.typing import ResponseReturnValue

from billing.invoicing.invoices import (
    get_invoice,
    invoice_lines_of,
    invoice_transfers,
    payment_attempts_of,
)
from infra.runtime import transaction
from ledger.model import Transfer
from web.auth import staff_only, staff_role
from web.billing_tab import CONFIRM, actions_for
from web.blueprints import admin_pages
from web.tabs import page_context


@dataclass(frozen=True, slots=True)
class Record:
    """What the page shows of one invoice, read together."""

    row: Any
    lines: list[Any]
    attempts: list[Any]
    transfers: list[Transfer]


def load_record(session: Any, billing_id: uuid.UUID) -> Record:
    """Raises: UnknownInvoice (a 404 page, through `web.errors`)."""
    return Record(
        get_invoice(session, billing_id),
        invoice_lines_of(session, billing_id),
        payment_attempts_of(session, billing_id),
        invoice_transfers(session, billing_id),
    )


@admin_pages.get("/billing/<uuid:billing_id>")
@staff_only("admin", "accountant")
def record(billing_id: uuid.UUID) -> ResponseReturnValue:
    found = transaction(lambda s: load_record(s, billing_id))
    can_act = staff_role() == "admin"
    actions = actions_for(found.row) if can_act else []
    confirming = request.args.get("confirm", "")
    if confirming not in CONFIRM or confirming not in actions:
        confirming = ""
    return render_template(
        "admin/record.html",
        **page_context("Billing record", "billing"),
        row=found.row,
        lines=found.lines,
        attempts=found.attempts,
        transfers=found.transfers,
        can_act=can_act,
        actions=actions,
        confirm=CONFIRM,
        confirming=confirming,
    )
