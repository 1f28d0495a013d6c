"""`?tab=failed`: the failed payments — each failed invoice with its user, amount, the reason
(its last error), attempts and next retry, a link to the record, and Retry: the billing tab's
action endpoint (`admin.record_action`, action=retry), through htmx without a reload or as a
plain form that comes back to this list."""

from __future__ import annotations

from typing import Any

from flask import render_template, request
from flask.typing import ResponseReturnValue

from billing.invoice import InvoiceStatus
from billing.invoicing.invoices import list_invoices
from infra.runtime import report
from web.filters import PAGE_SIZE, Filters, first_row, listing
from web.tabs import page_context, tab


@tab("failed", "Failed payments", roles=("admin",))
def failed() -> ResponseReturnValue:
    filters = Filters(request.args)
    number = filters.page()

    def load(session: Any) -> Any:
        return list_invoices(
            session,
            status=InvoiceStatus.FAILED,
            limit=PAGE_SIZE,
            offset=first_row(number),
        )

    found = report(load)
    return render_template(
        "admin/failed.html",
        **page_context("Failed payments", "failed"),
        **listing(found, number, filters),
    ), (400 if filters.problems else 200)
