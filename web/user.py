"""The end users' pages (SPEC §7): the billing widget the host application frames on its
dashboard, and the user's billing history and notifications. A user token (`?token=`) is
exchanged on first load for a short server-side session, so the token leaves the URL; every
figure is read for the session's user only, whatever the URL says."""

from __future__ import annotations

from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from web import errors
from web.blueprints import user_pages


def _unauthorized(error: HTTPException) -> ResponseReturnValue:
    return errors.error_page(
        401, "Your billing session has ended or the link is not valid. Reload the dashboard."
    )


errors.register(user_pages, _unauthorized)
