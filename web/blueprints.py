"""The pages' two blueprints: the staff pages under the path the host application links to
(`/admin/sms`), and the end users' pages (the widget and the billing history). Both check CSRF
on every state-changing request and send the hardened headers of `web.security`."""

from __future__ import annotations

from flask import Blueprint, request
from werkzeug.wrappers import Response

from infra.runtime import runtime
from web import security

admin_pages = Blueprint("admin", __name__, url_prefix="/admin/sms", template_folder="templates")
user_pages = Blueprint("enduser", __name__, template_folder="templates")


@admin_pages.before_request
@user_pages.before_request
def _check_csrf() -> None:
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        security.csrf.protect()


@admin_pages.after_request
def _harden_staff(response: Response) -> Response:
    return security.harden(response)


@user_pages.after_request
def _harden_user(response: Response) -> Response:
    """Framed only by the origins of WIDGET_FRAME_ANCESTORS (else this host only)."""
    origins = runtime().config.widget_frame_ancestors
    return security.harden(response, frame_ancestors=" ".join(origins) or "'self'")
