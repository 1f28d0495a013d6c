"""`?tab=reconciliation`: runs, differences and proposals, the trial balance."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from web.tabs import page_context, tab


@tab("reconciliation", "Reconciliation", roles=("admin", "accountant"))
def reconciliation() -> ResponseReturnValue:
    return render_template(
        "admin/reconciliation.html", **page_context("Reconciliation", "reconciliation")
    )
