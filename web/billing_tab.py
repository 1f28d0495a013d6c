"""`?tab=billing`: the headline figures, the billing records with their filters in the URL,
pagination and a CSV export of the filtered list, the per-record actions (process, approve,
retry, refund, cancel) and "run billing cycle now". Every action is the API's service call
(`billing.invoicing.invoices.act`, `jobs.billing.run_billing_cycle`) in one unit of work."""

from __future__ import annotations

import csv
import functools
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import (
    Response,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue

from billing.chart import CUSTOMER_ID
from billing.errors import InvalidInvoiceState, UnknownInvoice
from billing.invoice import InvoiceStatus
from billing.invoicing.invoices import ACTIONS_FROM, act, get_invoice, list_invoices
from billing.invoicing.stats import billing_overview
from billing.settings import FREQUENCIES
from infra.runtime import dispatch_charges_now, now, report, runtime, transaction
from jobs.billing import run_billing_cycle
from web import format
from web.auth import staff_only, staff_role
from web.blueprints import admin_pages
from web.errors import error_page, notice
from web.filters import PAGE_SIZE, Filters, first_row, listing
from web.security import is_htmx
from web.tabs import back_to, page_context, tab

CONFIRM = ("cancel", "refund")
"""Actions that ask for confirmation first: they cannot be undone."""

EXPORT_BATCH = 1_000


def actions_for(row: Any) -> list[str]:
    """The actions the record's status allows, in the order the buttons show."""
    found = [name for name, states in ACTIONS_FROM.items() if row.status in states]
    if "approve" in found and row.approved_at is not None:
        found.remove("approve")
    return found


def record_filters(args: Any) -> tuple[Filters, dict[str, Any]]:
    filters = Filters(args)
    query = {
        "status": filters.choice("status", list(InvoiceStatus), "Status"),
        "user_id": filters.matching("user", CUSTOMER_ID, "User"),
        "frequency": filters.choice("frequency", FREQUENCIES, "Frequency"),
        "start": filters.bound("from", "From"),
        "end": filters.bound("to", "To"),
    }
    return filters, query


def month_start(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


@tab("billing", "Billing", roles=("admin", "accountant"))
def billing() -> ResponseReturnValue:
    filters, query = record_filters(request.args)
    number = filters.page()
    moment = now()
    start = month_start(moment)

    def load(session: Any) -> tuple[Any, Any]:
        found = list_invoices(session, **query, limit=PAGE_SIZE, offset=first_row(number))
        return found, billing_overview(session, start, moment)

    found, overview = report(load)
    return render_template(
        "admin/billing.html",
        **page_context("Billing", "billing"),
        **listing(found, number, filters),
        overview=overview,
        period_start=start,
        statuses=list(InvoiceStatus),
        frequencies=FREQUENCIES,
        actions_for=actions_for,
        confirm=CONFIRM,
        can_act=staff_role() == "admin",
    ), (400 if filters.problems else 200)


@admin_pages.get("/billing.csv")
@staff_only("admin", "accountant")
def export_records() -> ResponseReturnValue:
    """The filtered list as CSV, every page of it, read in batches."""
    filters, query = record_filters(request.args)
    if filters.problems:
        return Response(" ".join(filters.problems) + "\n", 400, mimetype="text/plain")

    def rows() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        offset = 0
        while True:
            batch: list[Any] = report(functools.partial(_export_batch, query=query, offset=offset))
            for row in batch:
                writer.writerow(csv_row(row))
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(batch) < EXPORT_BATCH:
                return
            offset += EXPORT_BATCH

    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    return Response(
        stream_with_context(rows()),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="billing-records-{stamp}.csv"'},
    )


def _export_batch(session: Any, query: dict[str, Any], offset: int) -> list[Any]:
    return list(list_invoices(session, **query, limit=EXPORT_BATCH, offset=offset).items)


CSV_COLUMNS = (
    "id",
    "user_id",
    "status",
    "frequency",
    "period_start",
    "period_end",
    "messages",
    "segments",
    "amount",
    "currency",
    "attempts",
    "last_error",
    "next_retry_at",
    "created_at",
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def as_cell(text: str) -> str:
    """Stored text (a user id, Sippy's error message) as a spreadsheet shows it, never as a
    formula: a leading `=`, `+`, `-`, `@` is quoted (OWASP's CSV injection advice)."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def csv_row(row: Any) -> list[Any]:
    return [
        row.id,
        as_cell(row.customer_id),
        row.status,
        row.frequency,
        format.instant(row.period_start),
        format.instant(row.period_end),
        row.message_count,
        row.segments,
        format.amount(row.amount_micros, row.currency),
        row.currency,
        row.attempts,
        as_cell(row.last_error or ""),
        format.instant(row.next_retry_at) if row.next_retry_at else "",
        format.instant(row.created_at),
    ]


@admin_pages.get("/billing/<uuid:billing_id>/confirm/<action>")
@staff_only("admin")
def confirm_action(billing_id: uuid.UUID, action: str) -> ResponseReturnValue:
    """The no-JavaScript confirmation of an action that cannot be undone; it returns to the
    page it came from (`?back=`)."""
    if action not in CONFIRM:
        return error_page(404, f"There is no action {action!r} to confirm.")
    row = transaction(lambda s: get_invoice(s, billing_id))
    return render_template(
        "admin/confirm.html",
        **page_context("Confirm", "billing"),
        row=row,
        action=action,
        back=back_to(request.args, "billing"),
    )


@admin_pages.post("/billing/<uuid:billing_id>/action")
@staff_only("admin")
def record_action(billing_id: uuid.UUID) -> ResponseReturnValue:
    """Apply an action; htmx gets the record's new row, a plain form a redirect back."""
    action = request.form.get("action", "")
    back = back_to(request.form, "billing")
    if action not in ACTIONS_FROM:
        return _refused(f"There is no action {action!r}.", back, 422)
    defaults = runtime().config.billing
    try:
        row = transaction(lambda s: act(s, billing_id, action, now(), defaults, "web:admin"))
    except UnknownInvoice:
        return _refused(f"There is no billing record {billing_id}.", back, 404)
    except InvalidInvoiceState as error:
        return _refused(f"Not done: {error.message}.", back, 409)
    if (action == "refund" or row.next_retry_at is not None) and (
        dispatch_charges_now() == "dispatched"
    ):  # a worker may have charged it already: show the record as it is now
        row = transaction(lambda s: get_invoice(s, billing_id))
    message = f"{action.capitalize()}: record {format.short_id(billing_id)} is now {row.status}."
    if is_htmx(request):
        return render_template(
            "admin/_record_row.html",
            row=row,
            actions_for=actions_for,
            confirm=CONFIRM,
            can_act=True,
        )
    flash(message, "success")
    return redirect(back, 303)


@admin_pages.post("/billing/run")
@staff_only("admin")
def run_now() -> ResponseReturnValue:
    """Run a billing cycle for a frequency now and show its summary."""
    frequency = request.form.get("type", "")
    back = url_for("admin.home", tab="billing")
    if frequency not in FREQUENCIES:
        return _refused(f"Type must be one of {', '.join(FREQUENCIES)}.", back, 422)
    state = runtime()
    summary, duration_ms = run_billing_cycle(state.sessions, frequency, now(), state.config.billing)
    if summary.charges_enqueued:
        dispatch_charges_now()
    report = summary.report(duration_ms)
    message = (
        f"{frequency.capitalize()} cycle: {report['periods_closed']} periods closed,"
        f" {report['invoices_created']} invoices created, {report['charges_enqueued']} charges"
        f" queued, {report['skipped']} skipped, {report['errors']} errors"
        f" ({report['duration_ms']} ms)."
    )
    if is_htmx(request):
        return notice(message, 200, ok=not report["errors"])
    flash(message, "success" if not report["errors"] else "error")
    return redirect(back, 303)


def _refused(message: str, back: str, status: int) -> ResponseReturnValue:
    """A refusal: htmx shows it in the page's notice area, a plain form after the redirect."""
    if is_htmx(request):
        return notice(message, status)
    flash(message, "error")
    return redirect(back, 303)
