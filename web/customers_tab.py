"""`?tab=customers`: find customers by user id or name, page through them, set a customer's Sippy
account, suspend and reactivate. Every change is `billing.customers.update_customer` in one unit
of work, as `PATCH /api/admin/customers/<id>` does; htmx swaps the customer's row, a plain form
redirects back with a notice."""

from __future__ import annotations

import re
from typing import Any

from flask import flash, redirect, render_template, request
from flask.typing import ResponseReturnValue

from billing.chart import CUSTOMER_ID
from billing.customers import Customer, get_customer, list_customers, update_customer
from billing.errors import CustomerNotFound
from infra.runtime import now, report, transaction
from web import errors
from web.auth import staff_only
from web.blueprints import admin_pages
from web.filters import PAGE_SIZE, Filters, first_row, listing
from web.security import is_htmx
from web.tabs import back_to, page_context, tab

STATUSES = ("active", "suspended")
"""A customer's statuses (`billing.tables.CUSTOMER_STATUSES`, which the pages may not import)."""

SIPPY_ACCOUNT_ID = re.compile(r"^[0-9]{1,18}$")
"""Sippy names accounts by an integer `i_account` (as the API validates it)."""

MAX_SEARCH = 64
SIPPY_FILTER = {"yes": True, "no": False}


def customer_filters(args: Any) -> tuple[Filters, dict[str, Any]]:
    filters = Filters(args)
    search = filters.text("q")
    if len(search) > MAX_SEARCH:
        filters.problems.append(f"Search may be at most {MAX_SEARCH} characters.")
        search = ""
    elif search:
        filters.values["q"] = search
    has_sippy = filters.choice("sippy", SIPPY_FILTER, "Sippy account")
    query = {
        "status": filters.choice("status", STATUSES, "Status"),
        "search": search or None,
        "has_sippy_account": None if has_sippy is None else SIPPY_FILTER[has_sippy],
    }
    return filters, query


@tab("customers", "Customers", roles=("admin",))
def customers() -> ResponseReturnValue:
    filters, query = customer_filters(request.args)
    number = filters.page()
    found = report(lambda s: list_customers(s, **query, limit=PAGE_SIZE, offset=first_row(number)))
    return render_template(
        "admin/customers.html",
        **page_context("Customers", "customers"),
        **listing(found, number, filters),
        statuses=STATUSES,
        back=request.full_path,
    ), (400 if filters.problems else 200)


def _row(customer: Customer, **extra: Any) -> str:
    return render_template(
        "admin/_customers_row.html", row=customer, back=request.form.get("back", ""), **extra
    )


def _not_found(user_id: str) -> ResponseReturnValue:
    message = f"There is no customer {user_id}."
    if is_htmx(request):
        return errors.notice(message, 404)
    return errors.error_page(404, message)


def _known(user_id: str) -> bool:
    return bool(CUSTOMER_ID.match(user_id))


@admin_pages.get("/customers/<user_id>/sippy-account")
@staff_only("admin")
def sippy_account_page(user_id: str) -> ResponseReturnValue:
    """The no-JavaScript page to set a customer's Sippy account (and where a refused value is
    shown with the input kept)."""
    if not _known(user_id):
        return _not_found(user_id)
    try:
        customer = transaction(lambda s: get_customer(s, user_id))
    except CustomerNotFound:
        return _not_found(user_id)
    return _account_page(customer, customer.sippy_account_id or "", None, 200)


def _account_page(
    customer: Customer, value: str, problem: str | None, status: int
) -> ResponseReturnValue:
    return render_template(
        "admin/customers_account.html",
        **page_context(f"Sippy account of {customer.user_id}", "customers"),
        row=customer,
        value=value,
        problem=problem,
        back=request.values.get("back", ""),
    ), status


@admin_pages.post("/customers/<user_id>/sippy-account")
@staff_only("admin")
def set_sippy_account(user_id: str) -> ResponseReturnValue:
    """Set (or, blank, clear) a customer's Sippy account: `PATCH {"sippy_account_id"}`."""
    if not _known(user_id):
        return _not_found(user_id)
    value = (request.form.get("sippy_account_id") or "").strip()
    if value and not SIPPY_ACCOUNT_ID.match(value):
        problem = "The Sippy account must be Sippy's numeric i_account (1-18 digits)."
        try:
            customer = transaction(lambda s: get_customer(s, user_id))
        except CustomerNotFound:
            return _not_found(user_id)
        if is_htmx(request):
            return _row(customer, problem=problem, typed=value), 422
        return _account_page(customer, value, problem, 422)
    try:
        customer = transaction(
            lambda s: update_customer(s, user_id, now(), sippy_account_id=value or None)
        )
    except CustomerNotFound:
        return _not_found(user_id)
    message = (
        f"User {user_id} is now Sippy account {value}."
        if value
        else f"User {user_id} has no Sippy account now."
    )
    if is_htmx(request):
        return _row(customer, notice=message)
    flash(message, "success")
    return redirect(back_to(request.form, "customers"), 303)


@admin_pages.post("/customers/<user_id>/status")
@staff_only("admin")
def set_status(user_id: str) -> ResponseReturnValue:
    """Suspend or reactivate a customer: `PATCH {"status"}`."""
    if not _known(user_id):
        return _not_found(user_id)
    status = request.form.get("status", "")
    if status not in STATUSES:
        message = f"Status must be one of {', '.join(STATUSES)}."
        if is_htmx(request):
            return errors.notice(message, 422)
        flash(message, "error")
        return redirect(back_to(request.form, "customers"), 303)
    try:
        customer = transaction(lambda s: update_customer(s, user_id, now(), status=status))
    except CustomerNotFound:
        return _not_found(user_id)
    message = f"User {user_id} is {'suspended' if status == 'suspended' else 'active again'}."
    if is_htmx(request):
        return _row(customer, notice=message)
    flash(message, "success")
    return redirect(back_to(request.form, "customers"), 303)
