"""`?tab=stats`: the billing statistics and a plot of daily billed amount and messages."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from web.tabs import page_context, tab


@tab("stats", "Statistics", roles=("admin",))
def stats() -> ResponseReturnValue:
    return render_template("admin/stats.html", **page_context("Statistics", "stats"))
