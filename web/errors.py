"""Refusals on pages: the same statuses as the API (`infra.http_status`), as a page a person can
read, with the message and a way back; a 503 keeps its `Retry-After`. Nothing answers 500 for
a bad input."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from infra.http_status import RETRY_AFTER_SECONDS, retry_after, status_of
from ledger.errors import LedgerError
from web.security import is_htmx

log = logging.getLogger("smsledger.web")

TITLES = {
    400: "Bad request",
    401: "Sign in needed",
    403: "Not for your role",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    413: "Too large",
    422: "Not accepted",
    503: "Unavailable",
}


def error_page(
    status: int, message: str, headers: dict[str, str] | None = None
) -> tuple[str, int, dict[str, str]]:
    """The refusal as a page; to htmx, as a notice (a whole page swapped into a table row would
    make no sense), and a 401 reloads the page so the sign-in shows."""
    if is_htmx(request):
        body, _, shown = notice(message, status)
        if status == 401:
            shown["HX-Refresh"] = "true"
        return body, status, {**(headers or {}), **shown}
    title = TITLES.get(status, "Something went wrong")
    body = render_template("error.html", status=status, title=title, message=message)
    return body, status, headers or {}


def notice(message: str, status: int = 200, ok: bool = False) -> tuple[str, int, dict[str, str]]:
    """An htmx answer shown in the page's notice area (`#notices`) instead of the element the
    request targeted: a refusal, or a summary that belongs to no row."""
    body = render_template("admin/_notice.html", message=message, ok=ok)
    return body, status, {"HX-Retarget": "#notices", "HX-Reswap": "innerHTML"}


def _http(error: HTTPException) -> ResponseReturnValue:
    return error_page(error.code or 500, error.description or error.name)


def _csrf(error: CSRFError) -> ResponseReturnValue:
    return error_page(
        400, "The form had no valid security token (CSRF). Reload the page and try again."
    )


def _domain(error: LedgerError) -> ResponseReturnValue:
    status, _ = status_of(error)
    wait = retry_after(error)
    return error_page(status, error.message, {"Retry-After": wait} if wait else None)


def _unexpected(error: Exception) -> ResponseReturnValue:
    log.exception("unhandled error on a page")
    return error_page(
        500, "The server could not complete the request.", {"Retry-After": RETRY_AFTER_SECONDS}
    )


def register(
    blueprint: Blueprint, unauthorized: Callable[[HTTPException], ResponseReturnValue]
) -> None:
    """Error pages for `blueprint`; a 401 answers with `unauthorized` (the staff sign-in, or
    the widget's "sign in again" page)."""
    blueprint.register_error_handler(CSRFError, _csrf)
    blueprint.register_error_handler(401, unauthorized)
    blueprint.register_error_handler(HTTPException, _http)
    blueprint.register_error_handler(LedgerError, _domain)
    blueprint.register_error_handler(Exception, _unexpected)
