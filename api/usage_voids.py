"""Voiding a usage event: `POST /api/usage/{message_id}/void`, the owner's action that undoes an
SMS posted but not sent (billing/usage/voiding.py). The generic ledger reversal refuses usage
transfers and points here."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.errors import ARCHIVED
from api.ledger import TransferOut, present_transfer
from billing.usage.voiding import void_usage
from infra.runtime import now, transaction

blp = Blueprint("usage_voids", __name__, url_prefix="/api/usage", description="SMS usage")


class VoidIn(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=500))


class VoidOut(Schema):
    message_id = fields.String()
    status = fields.String(
        metadata={
            "enum": ["voided", "credited", "duplicate", "released"],
            "description": "voided: reversed now; credited: it was billed already, so it is"
            " credited on the customer's next invoice; duplicate: voided before; released:"
            " never posted, and its reserving check's hold is freed",
        }
    )
    usage = fields.Nested(TransferOut, allow_none=True)
    reversal = fields.Nested(TransferOut, allow_none=True)
    billed_on = fields.String(
        allow_none=True, metadata={"description": "the invoice that billed it"}
    )


@blp.route("/<path:message_id>/void", methods=["POST"])
@blp.doc(responses=ARCHIVED)
@requires("service", "admin")
@blp.arguments(VoidIn, required=False)
@blp.response(201, VoidOut)
@blp.alt_response(200, schema=VoidOut, description="voided before: the same reversal")
@blp.alt_response(404, description="no usage event and no live hold with this message_id")
def void(body: dict[str, Any], message_id: str) -> tuple[dict[str, Any], int]:
    """Void a usage event (a send that failed). Unbilled: its transfer is reversed and the
    usage counters, percent used and threshold state no longer count it. Billed already: it is
    credited on the customer's next invoice. Never posted but held by a reserving check: the
    hold is released. Idempotent."""
    result = transaction(lambda s: void_usage(s, message_id, now(), body["reason"]))
    answer = {
        "message_id": message_id,
        "status": result.status,
        "usage": present_transfer(result.usage) if result.usage else None,
        "reversal": present_transfer(result.reversal) if result.reversal else None,
        "billed_on": str(result.billed_on) if result.billed_on else None,
    }
    return answer, 200 if result.status == "duplicate" else 201
