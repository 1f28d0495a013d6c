"""The JSON API's errors: domain errors (statuses from `infra.http_status`) and HTTP errors
become the envelope `{"error": {"code", "message", "details"}}` (SPEC §7). Nothing leaks SQL
or stacks."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from infra.http_status import retry_after, status_of
from ledger import errors as ledger_errors
from ledger.db import is_outage

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP-level refusal raised by a route or the auth layer."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


ARCHIVED = {
    "410": {
        "description": "`archived`: the instant, range, message or invoice is before the archive"
        " cut (docs/archives.md); `details.archived_before` and `details.archive` say where",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
}
"""The answer of every operation that can reach into an archived month (ledger.archived)."""

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
}

# Marshmallow's stock messages, as machine-readable codes.
_FIELD_CODES = [
    ("Missing data for required field", "required"),
    ("Field may not be null", "null"),
    ("Unknown field", "unknown_field"),
    ("Not a valid amount", "invalid_amount"),
    ("more than 6 decimal places", "too_many_decimals"),
    ("never a float", "invalid_amount"),
    ("is not a decimal number", "invalid_amount"),
    ("Must be one of", "not_allowed"),
    ("Length must be", "invalid_length"),
    ("Shorter than", "invalid_length"),
    ("Longer than", "invalid_length"),
    ("Must be greater", "out_of_range"),
    ("Must be less", "out_of_range"),
    ("Not a valid", "invalid_type"),
]


def envelope(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


def field_errors(messages: Any, path: str = "") -> list[dict[str, str]]:
    """Flatten marshmallow's nested messages into `[{field, code, message}]`."""
    flat: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{path}.{key}" if path else str(key)
            flat.extend(field_errors(value, name))
    elif isinstance(messages, list):
        for item in messages:
            flat.extend(field_errors(item, path))
    else:
        text = str(messages)
        code = next((c for fragment, c in _FIELD_CODES if fragment in text), "invalid")
        flat.append({"field": path, "code": code, "message": text})
    return flat


def _domain_error(error: ledger_errors.LedgerError) -> ResponseReturnValue:
    status, code = status_of(error)
    response = envelope(status, code, error.message, error.details)
    wait = retry_after(error)
    if wait is not None:
        response.headers["Retry-After"] = wait
    return response


def _database_error(error: DBAPIError) -> ResponseReturnValue:
    """A database error that left no unit of work (which translates its own): an outage is
    still a 503 `database_unavailable`, anything else is unexpected."""
    if not is_outage(error):
        return _unexpected(error)
    log.warning("database unavailable", extra={"reason": type(error.orig).__name__})
    return _domain_error(
        ledger_errors.DatabaseUnavailable("The database is unavailable. Try again shortly.")
    )


def _api_error(error: ApiError) -> ResponseReturnValue:
    response = envelope(error.status, error.code, error.message, error.details)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def http_error(error: HTTPException) -> ResponseReturnValue:
    """Werkzeug and webargs errors (flask-smorest registers this for HTTPException)."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 400 and messages is not None:
        return envelope(400, "malformed_json", "The request body is not valid JSON.")
    if status == 422 and messages is not None:
        # webargs nests by location ("json", "query"); the location is not part of the name.
        inner = messages
        if isinstance(messages, dict) and len(messages) == 1:
            inner = next(iter(messages.values()))
        errors = field_errors(inner)
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return envelope(422, "validation_failed", f"Invalid request: {summary}", {"errors": errors})
    if status >= 500:
        log.error("http error %s", status)
        return envelope(status, "internal_error", "The server could not complete the request.")
    response = envelope(
        status, HTTP_CODES.get(status, "http_error"), error.description or error.name
    )
    return _keep_headers(response, error)


def _keep_headers(response: Response, error: HTTPException) -> Response:
    """The error's own headers survive the envelope (a 405's `Allow`, a 401's
    `WWW-Authenticate`); only its HTML content type is replaced."""
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _unexpected(error: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return envelope(500, "internal_error", "The server could not complete the request.")


def _pool_exhausted(error: PoolTimeout) -> ResponseReturnValue:
    """Every pooled connection stayed busy past the pool's timeout: overload, not a fault of
    the request; the client may retry shortly."""
    log.warning("database pool exhausted", extra={"reason": str(error)})
    response = envelope(503, "busy_retry", "The server is busy; retry shortly.")
    response.headers["Retry-After"] = "1"
    return response


def register(app: Flask) -> None:
    app.register_error_handler(ledger_errors.LedgerError, _domain_error)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(PoolTimeout, _pool_exhausted)
    app.register_error_handler(Exception, _unexpected)
