"""The pages' two blueprints: the staff pages under the path the host application links to
(`/admin/sms`), and the end users' pages (the widget and the billing history). Both check CSRF
on every state-changing request and send the hardened headers of `web.security`."""

from __future__ import annotations

from flask import Blueprint, abort, request
from werkzeug.wrappers import Response

from infra.runtime import runtime
from web import security

admin_pages = Blueprint("admin", __name__, url_prefix="/admin/sms", template_folder="templates")
user_pages = Blueprint("enduser", __name__, template_folder="templates")


@admin_pages.before_request
@user_pages.before_request
def _check_form() -> None:
    """Every state-changing request carries its CSRF token, and no NUL (which PostgreSQL
    cannot store) in any field or file name: a 400 page, not a database error."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    security.csrf.protect()
    names = [upload.filename or "" for upload in request.files.values()]
    if any("\x00" in text for text in [*request.form.values(), *request.form.keys(), *names]):
        abort(400, "NUL characters are not accepted.")


@admin_pages.after_request
def _harden_staff(response: Response) -> Response:
    return security.harden(response)


@user_pages.after_request
def _harden_user(response: Response) -> Response:
    """Framed only by the origins of WIDGET_FRAME_ANCESTORS (else this host only)."""
    origins = runtime().config.widget_frame_ancestors
    ancestors = " ".join(origins) or "'self'"
    return security.harden(response, frame_ancestors=ancestors, referrer="no-referrer")
