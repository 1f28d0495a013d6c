"""Voiding a usage event: `POST /api/usage/{message_id}/void`, the owner's action that undoes an
SMS posted but not sent (billing/usage/voiding.py). The generic ledger reversal refuses usage
transfers and points here."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.ledger import TransferOut, present_transfer
from api.runtime import now, transaction
from billing.usage.voiding import void_usage

blp = Blueprint("usage_voids", __name__, url_prefix="/api/usage", description="SMS usage")


class VoidIn(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=500))


class VoidOut(Schema):
    message_id = fields.String()
    status = fields.String(metadata={"enum": ["voided", "duplicate"]})
    usage = fields.Nested(TransferOut)
    reversal = fields.Nested(TransferOut)


@blp.route("/<path:message_id>/void", methods=["POST"])
@requires("service", "admin")
@blp.arguments(VoidIn)
@blp.response(201, VoidOut)
@blp.alt_response(200, schema=VoidOut, description="voided before: the same reversal")
@blp.alt_response(404, description="no usage event with this message_id")
@blp.alt_response(409, description="the message was billed: cancel or refund its invoice")
def void(body: dict[str, Any], message_id: str) -> tuple[dict[str, Any], int]:
    """Void an unbilled usage event (a send that failed): its transfer is reversed and the usage
    counters, percent used and threshold state no longer count it. Idempotent."""
    result = transaction(lambda s: void_usage(s, message_id, now(), body["reason"]))
    answer = {
        "message_id": message_id,
        "status": result.status,
        "usage": present_transfer(result.usage),
        "reversal": present_transfer(result.reversal),
    }
    return answer, 201 if result.status == "voided" else 200
