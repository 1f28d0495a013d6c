"""End users' own data (SPEC §7), read with their HS256 user token: the user id always comes
from the token, so no parameter can point at another user."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires_user
from api.blueprint import Blueprint
from api.schemas import PageQuery, page_of, paged
from billing.notifications import KINDS, notifications_of, public_notification

blp = Blueprint("user", __name__, url_prefix="/api/user", description="End users")


class NotificationQuery(PageQuery):
    type = fields.String(validate=validate.OneOf(KINDS))


class NotificationOut(Schema):
    id = fields.String()
    type = fields.String(metadata={"enum": list(KINDS)})
    user_id = fields.String()
    created_at = fields.String()
    data = fields.Dict(metadata={"description": "the event's figures; money as decimal strings"})
    delivery_status = fields.String(
        metadata={"description": "webhook delivery: pending, delivered, failed or skipped"}
    )


NotificationPageOut = page_of(NotificationOut, "NotificationPageOut")


@blp.route("/notifications", methods=["GET"])
@requires_user
@blp.arguments(NotificationQuery, location="query")
@blp.response(200, NotificationPageOut)
def notifications(query: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The user's notifications, newest first (approaching threshold, invoice issued, invoice
    paid, payment failed)."""
    return paged(
        query,
        lambda s, limit, offset: notifications_of(s, user_id, query.get("type"), limit, offset),
        lambda row: {**public_notification(row), "delivery_status": row.delivery_status},
    )
