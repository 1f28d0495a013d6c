"""`?tab=settings`: the global defaults and the per-user overrides."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue

from web.tabs import page_context, tab


@tab("settings", "Settings", roles=("admin",))
def settings() -> ResponseReturnValue:
    return render_template("admin/settings.html", **page_context("Settings", "settings"))
