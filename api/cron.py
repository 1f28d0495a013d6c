"""`POST /api/cron/process-sms-billing?type=…` for an external scheduler, authenticated with
`Bearer $CRON_SECRET` (compared in constant time)."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import bearer_token, documented
from api.blueprint import Blueprint
from api.errors import ApiError
from billing.settings import FREQUENCIES
from infra.runtime import dispatch_charges_now, now, runtime
from jobs.billing import run_billing_cycle

blp = Blueprint("cron", __name__, url_prefix="/api/cron", description="Scheduled billing")


class CycleQuery(Schema):
    type = fields.String(required=True, validate=validate.OneOf(FREQUENCIES))


class CycleOut(Schema):
    type = fields.String()
    periods_closed = fields.Integer()
    invoices_created = fields.Integer()
    charges_enqueued = fields.Integer()
    skipped = fields.Integer()
    errors = fields.Integer()
    duration_ms = fields.Integer()
    dispatch = fields.String(
        metadata={
            "enum": ["dispatched", "deferred", "none"],
            "description": "whether the new charges were handed to a worker now; `deferred`:"
            " the next sweep (within a minute of the job queue being reachable) charges them",
        }
    )


def requires_cron_secret(view: Callable[..., Any]) -> Callable[..., Any]:
    """Let the request through only with `Bearer $CRON_SECRET` (never when it is unset)."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        secret = runtime().config.cron_secret
        token = bearer_token()
        if not secret or token is None or not hmac.compare_digest(token.encode(), secret.encode()):
            raise ApiError(401, "unauthorized", "The cron secret is missing or wrong.")
        return view(*args, **kwargs)

    return documented("cronSecret")(guarded)


@blp.route("/process-sms-billing", methods=["POST"])
@requires_cron_secret
@blp.arguments(CycleQuery, location="query")
@blp.response(200, CycleOut)
def process(query: dict[str, Any]) -> dict[str, Any]:
    """Run a billing cycle now and answer its summary."""
    state = runtime()
    summary, duration_ms = run_billing_cycle(
        state.sessions, query["type"], now(), state.config.billing
    )
    dispatch = dispatch_charges_now() if summary.charges_enqueued else "none"
    return {**summary.report(duration_ms), "dispatch": dispatch}
