"""The SMS service's API: post usage (one SMS or a batch) and ask before sending (SPEC §7,
Appendix A "Post one SMS" and "Pre-send check").

Usage bodies are validated by `billing.usage.ingestion`, not marshmallow: a 10,000-event batch
must be checked in milliseconds, and every problem reported with its event's index.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, jsonify, request
from werkzeug.exceptions import HTTPException

from api.auth import requires
from api.blueprint import Blueprint, read_json
from api.errors import ARCHIVED, ApiError
from api.fields import money_text, time_text
from api.group_commit import GroupCommitter
from api.usage_docs import (
    BATCH,
    CHECK,
    EVENT,
    DecisionDoc,
    HoldDoc,
    UsageAnswerDoc,
    answer,
    body,
)
from billing.errors import InvalidUsage
from billing.usage.holds import release_hold
from billing.usage.ingestion import UsageEvent, UsageResult, ingest_usage, validate_events
from billing.usage.presend import Decision, HoldOutcome, check_send, parse_check
from infra.http_status import RETRY_AFTER_SECONDS
from infra.metrics import PRESEND_FAIL_OPEN, USAGE_EVENTS
from infra.runtime import now, runtime, transaction
from ledger.db import run_in_transaction
from ledger.errors import DatabaseUnavailable, LedgerError

log = logging.getLogger(__name__)

blp = Blueprint("usage", __name__, url_prefix="/api/usage", description="SMS usage")


def _body() -> Any:
    body = read_json(request)
    if not isinstance(body, dict | list):
        raise InvalidUsage(
            'send a usage event or {"events": [...]}',
            errors=[{"index": None, "field": "", "code": "invalid_type"}],
        )
    return body


def present_result(result: UsageResult) -> dict[str, Any]:
    transfer, details = result.transfer, result.details
    return {
        "message_id": result.message_id,
        "status": result.status,
        "transfer_id": str(transfer.id),
        "amount": money_text(transfer.amount, transfer.currency),
        "currency": transfer.currency,
        "country": details.get("country"),
        "prefix": details.get("prefix"),
        "segments": details.get("segments"),
    }


@blp.route("", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires("service")
@blp.doc(
    requestBody=body(EVENT, BATCH),
    responses={
        "201": {
            **answer("at least one event posted", UsageAnswerDoc),
            "links": {
                "void": {
                    "operationRef": "#/paths/~1api~1usage~1{message_id}~1void/post",
                    "parameters": {"message_id": "$response.body#/results/0/message_id"},
                }
            },
        },
        "200": answer("every event was a replay", UsageAnswerDoc),
        "409": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        "422": {"$ref": "#/components/responses/DEFAULT_ERROR"},
    },
)
def post_usage() -> Any:
    """Post one usage event, or `{"events": [...]}` (up to 10,000), atomically and idempotently
    by `message_id`: 201 when anything was posted, 200 when every event was a replay."""
    body = _body()
    raw_events = body.get("events") if isinstance(body, dict) and "events" in body else [body]
    if (
        isinstance(body, dict)
        and "events" in body
        and (len(body) != 1 or not isinstance(raw_events, list))
    ):
        raise InvalidUsage(
            'a batch is exactly {"events": [...]}',
            errors=[{"index": None, "field": "events", "code": "invalid_type"}],
        )
    assert isinstance(raw_events, list)  # a lone event was wrapped, a bad batch refused above
    events = validate_events(raw_events)
    if len(events) < GROUP_BELOW_EVENTS:
        results = _committer().submit(events)
    else:
        defaults = runtime().config.billing
        results = transaction(lambda s: ingest_usage(s, events, now(), defaults))
    posted = sum(1 for r in results if r.status == "posted")
    USAGE_EVENTS.labels("posted").inc(posted)
    USAGE_EVENTS.labels("duplicate").inc(len(results) - posted)
    response = jsonify(
        {
            "posted": posted,
            "duplicates": len(results) - posted,
            "results": [present_result(r) for r in results],
        }
    )
    response.status_code = 201 if posted else 200
    return response


GROUP_BELOW_EVENTS = 500
"""Requests smaller than this share transactions (group commit); larger ones are batches
already and run alone."""


def _committer() -> GroupCommitter:
    state = runtime()
    committer = state.extras.get("usage_committer")
    if committer is None:
        sessions, clock, defaults = state.sessions, state.clock, state.config.billing

        def ingest(events: Sequence[UsageEvent]) -> list[UsageResult]:
            return run_in_transaction(
                sessions, lambda s: ingest_usage(s, events, clock(), defaults)
            )

        committer = state.extras.setdefault("usage_committer", GroupCommitter(ingest))
    return committer  # type: ignore[no-any-return]


def fail_open(view: Callable[..., Any]) -> Callable[..., Any]:
    """If the engine itself fails, answer 503 with `"allowed": true` so a naive client sends:
    a billing fault never blocks SMS unless a rule says block (SPEC §6). A database outage is
    such a failure (with `Retry-After`, SPEC §7), though it arrives as a `LedgerError`."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except DatabaseUnavailable:
            log.warning("pre-send check: database unavailable; failing open")
            PRESEND_FAIL_OPEN.labels("database_unavailable").inc()
            response = _open_answer()
            response.headers["Retry-After"] = RETRY_AFTER_SECONDS
            return response
        except (ApiError, LedgerError, HTTPException):
            raise
        except Exception:
            log.exception("pre-send check failed; failing open")
            PRESEND_FAIL_OPEN.labels("error").inc()
            return _open_answer()

    return guarded


def _open_answer() -> Response:
    response = jsonify(
        {
            "error": {
                "code": "billing_unavailable",
                "message": "The billing engine could not decide; sending is allowed.",
                "details": {},
            },
            "allowed": True,
            "should_block": False,
        }
    )
    response.status_code = 503
    return response


def present_decision(decision: Decision) -> dict[str, Any]:
    currency = decision.currency
    return {
        "allowed": decision.allowed,
        "should_block": decision.should_block,
        "reason": decision.reason,
        "message": decision.message,
        "currency": currency,
        "unbilled": money_text(decision.unbilled, currency),
        "limit": money_text(decision.limit, currency) if decision.limit is not None else None,
        "percent_used": decision.percent_used,
        "pending_billings": decision.pending_billings,
        "pending_amount": money_text(decision.pending_amount, currency),
        "estimated_cost": money_text(decision.estimated_cost, currency),
        "held": money_text(decision.held, currency),
        "hold": present_hold(decision.hold) if decision.hold is not None else None,
    }


def present_hold(outcome: HoldOutcome) -> dict[str, Any]:
    hold = outcome.hold
    return {
        "status": outcome.status,
        "message_id": hold.message_id if hold else None,
        "amount": money_text(hold.amount, hold.currency) if hold else None,
        "expires_at": time_text(hold.expires_at) if hold else None,
    }


@blp.route("/check", methods=["POST"])
@fail_open
@requires("service")
@blp.doc(
    requestBody=body(CHECK),
    responses={
        "200": answer("the decision", DecisionDoc),
        "422": {"$ref": "#/components/responses/DEFAULT_ERROR"},
        "503": {"description": "the engine failed: `allowed` is true (fail open)"},
    },
)
def check() -> Any:
    """May this user send now? `allowed`/`should_block` with a `reason` code when blocked.

    With `"reserve": true` and the message's `message_id`, an allowed send also holds the
    message's cost (priced as its post will be) until the post captures it, a void or
    `DELETE /api/usage/holds/{message_id}` releases it, or `SMS_BILLING_HOLD_TTL_S` pass:
    concurrent reserving checks can never together overrun the credit limit. Idempotent by
    `message_id`."""
    parsed = parse_check(_body())
    defaults = runtime().config.billing
    # A plain check reads in one statement and writes nothing: it commits alone. A reserving
    # check locks, reads and holds in one transaction.
    decision = transaction(
        lambda s: check_send(s, parsed, now(), defaults), autocommit=not parsed.reserve
    )
    return present_decision(decision)


@blp.route("/holds/<path:message_id>", methods=["DELETE"])
@requires("service")
@blp.doc(
    responses={
        "200": answer("the hold was released", HoldDoc),
        "404": {"$ref": "#/components/responses/DEFAULT_ERROR"},
    },
)
def release(message_id: str) -> Any:
    """Release the hold of a message that will not be sent (its send failed), so it stops
    counting against the user's limits. 404 when there is no live hold: never placed, captured
    by the usage post, released before, or expired."""
    hold = transaction(lambda s: release_hold(s, message_id, now()))
    return {
        "message_id": hold.message_id,
        "user_id": hold.customer_id,
        "status": "released",
        "amount": money_text(hold.amount, hold.currency),
        "currency": hold.currency,
    }
