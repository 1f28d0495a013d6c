"""`?tab=failed`: failed payments with reason, attempts, next retry, and retry."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from web.tabs import page_context, tab


@tab("failed", "Failed payments", roles=("admin",))
def failed() -> ResponseReturnValue:
    return render_template("admin/failed.html", **page_context("Failed payments", "failed"))
