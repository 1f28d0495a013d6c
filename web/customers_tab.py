"""`?tab=customers`: search, Sippy account, suspend and reactivate."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from web.tabs import page_context, tab


@tab("customers", "Customers", roles=("admin",))
def customers() -> ResponseReturnValue:
    return render_template("admin/customers.html", **page_context("Customers", "customers"))
