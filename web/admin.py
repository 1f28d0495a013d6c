"""`/admin/sms`: the staff pages' frame. Without a session it is the sign-in form (one password
field for an admin's or accountant's API key); with one, the tabs of the signed-in role."""

from __future__ import annotations

from flask import redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from billing.access.web_sessions import sign_in_staff
from infra.runtime import now, transaction
from web import errors
from web.auth import STAFF_COOKIE_KEY, forget, remember, staff_role
from web.blueprints import admin_pages
from web.security import is_htmx
from web.tabs import ORDER, TABS, tabs_for


def sign_in_page(message: str | None, status: int = 200) -> ResponseReturnValue:
    return render_template("admin/sign_in.html", message=message), status


def _unauthorized(error: HTTPException) -> ResponseReturnValue:
    if is_htmx(request):
        return errors.error_page(401, "Your session has ended. Sign in again.")
    return sign_in_page("Your session has ended. Sign in again.", 401)


errors.register(admin_pages, _unauthorized)


@admin_pages.get("")
def home() -> ResponseReturnValue:
    """The tab named by `?tab=` (default billing) for the signed-in role."""
    role = staff_role()
    if role is None:
        return sign_in_page(None)
    visible = tabs_for(role)
    name = request.args.get("tab") or visible[0].name
    if name not in TABS or name not in ORDER:
        return errors.error_page(404, f"There is no tab {name!r}.")
    if TABS[name] not in visible:
        return errors.error_page(403, f"The {TABS[name].title} tab is not for the {role} role.")
    return TABS[name].render()


@admin_pages.post("/sign-in")
def sign_in() -> ResponseReturnValue:
    key = (request.form.get("api_key") or "").strip()
    if not key:
        return sign_in_page("Paste an API key to sign in.", 400)
    started = transaction(lambda s: sign_in_staff(s, key, now()))
    if started is None:
        return sign_in_page(
            "That key is not a live admin or accountant key. Check it and try again.", 401
        )
    token, _ = started
    session.clear()  # a fresh session: nothing from before the sign-in carries over
    remember(STAFF_COOKIE_KEY, token)
    return redirect(url_for("admin.home"), 303)


@admin_pages.post("/sign-out")
def sign_out() -> Response:
    forget(STAFF_COOKIE_KEY)
    return redirect(url_for("admin.home"), 303)


@admin_pages.route("/<path:rest>", methods=["GET", "POST"])
def unknown(rest: str) -> ResponseReturnValue:
    return errors.error_page(404, "There is no such page.")
