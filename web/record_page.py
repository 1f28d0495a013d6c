"""`/admin/sms/billing/<id>`: one billing record — its lines per country and prefix, its payment
attempts as a timeline with Sippy's answers and the next retry, and its ledger transfers."""

from __future__ import annotations

import uuid
from typing import Any

from flask import render_template
from flask.typing import ResponseReturnValue

from billing.invoicing.invoices import get_invoice
from infra.runtime import transaction
from web.auth import staff_only
from web.blueprints import admin_pages
from web.tabs import page_context


@admin_pages.get("/billing/<uuid:billing_id>")
@staff_only("admin", "accountant")
def record(billing_id: uuid.UUID) -> ResponseReturnValue:
    def load(session: Any) -> Any:
        return get_invoice(session, billing_id)

    row = transaction(load)
    return render_template(
        "admin/record.html", **page_context("Billing record", "billing"), row=row
    )
