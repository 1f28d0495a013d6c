"""End users' own data (SPEC §7, Appendix A), read with their HS256 user token: the user id always
comes from the token, so no parameter can point at another user."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires_user
from api.blueprint import Blueprint
from api.fields import money_text, time_text
from api.schemas import PageQuery, page_of, paged
from billing.invoice import InvoiceStatus
from billing.invoicing.summaries import billing_history, billing_summary
from billing.notifications.store import KINDS, notifications_of, public_notification
from infra.runtime import now, runtime, transaction
from ledger.money import format_micros

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


class UsageOut(Schema):
    amount = fields.String(metadata={"description": "unbilled usage, 4 decimals at least"})
    messages = fields.Integer()
    held = fields.String(
        metadata={
            "description": "set aside by reserving pre-send checks for messages not yet posted"
            " (not usage; counts against the credit limit)"
        }
    )


class LimitsOut(Schema):
    amount = fields.String(allow_none=True)
    messages = fields.Integer(allow_none=True)
    percent_used = fields.Float(allow_none=True)


class PendingOut(Schema):
    count = fields.Integer()
    amount = fields.String()


class InvoiceBriefOut(Schema):
    id = fields.String()
    status = fields.String()
    amount = fields.String()
    currency = fields.String()
    period_start = fields.String()
    period_end = fields.String()
    created_at = fields.String()


class SummaryOut(Schema):
    user_id = fields.String()
    currency = fields.String()
    frequency = fields.String()
    period_start = fields.String()
    next_billing_at = fields.String(allow_none=True)
    usage = fields.Nested(UsageOut)
    limits = fields.Nested(LimitsOut)
    pending_billings = fields.Nested(PendingOut)
    last_invoice = fields.Nested(InvoiceBriefOut, allow_none=True)


class BreakdownOut(Schema):
    country = fields.String(allow_none=True)
    prefix = fields.String(allow_none=True)
    messages = fields.Integer()
    segments = fields.Integer()
    amount = fields.String()


class HistoryItemOut(InvoiceBriefOut):
    frequency = fields.String()
    message_count = fields.Integer()
    segments = fields.Integer()
    breakdown = fields.List(fields.Nested(BreakdownOut))


class HistoryQuery(PageQuery):
    status = fields.String(validate=validate.OneOf(list(InvoiceStatus)))


HistoryPageOut = page_of(HistoryItemOut, "BillingHistoryPageOut")


def _brief(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "status": row.status,
        "amount": money_text(row.amount_micros, row.currency),
        "currency": row.currency,
        "period_start": time_text(row.period_start),
        "period_end": time_text(row.period_end),
        "created_at": time_text(row.created_at),
    }


@blp.route("/billing-summary", methods=["GET"])
@requires_user
@blp.response(200, SummaryOut)
def summary(user_id: str) -> dict[str, Any]:
    """Usage of the open period against the limits, the next billing date (scheduled
    frequencies), unpaid invoices, and the last invoice."""
    defaults = runtime().config.billing
    found = transaction(lambda s: billing_summary(s, user_id, defaults, now()))
    limits = found.settings
    return {
        "user_id": found.user_id,
        "currency": found.currency,
        "frequency": limits.frequency,
        "period_start": time_text(found.period_start),
        "next_billing_at": time_text(found.next_billing_at),
        "usage": {
            "amount": format_micros(found.unbilled_micros, min_places=4),
            "messages": found.unbilled_messages,
            "held": money_text(found.held_micros, found.currency),
        },
        "limits": {
            "amount": money_text(limits.threshold_amount, found.currency)
            if limits.threshold_amount is not None
            else None,
            "messages": limits.threshold_messages,
            "percent_used": round(found.percent_used, 2)
            if found.percent_used is not None
            else None,
        },
        "pending_billings": {
            "count": found.pending_count,
            "amount": money_text(found.pending_micros, found.currency),
        },
        "last_invoice": _brief(found.last_invoice) if found.last_invoice is not None else None,
    }


@blp.route("/billing-history", methods=["GET"])
@requires_user
@blp.arguments(HistoryQuery, location="query")
@blp.response(200, HistoryPageOut)
def history(query: dict[str, Any], user_id: str) -> dict[str, Any]:
    """The user's invoices, newest first, with status and usage per country and prefix."""
    return paged(
        query,
        lambda s, limit, offset: billing_history(s, user_id, query.get("status"), limit, offset),
        _history_item,
    )


def _history_item(item: tuple[Any, list[Any]]) -> dict[str, Any]:
    row, lines = item
    return {
        **_brief(row),
        "frequency": row.frequency,
        "message_count": row.message_count,
        "segments": row.segments,
        "breakdown": [
            {
                "country": line.country,
                "prefix": line.prefix,
                "messages": line.messages,
                "segments": line.segments,
                "amount": format_micros(line.amount_micros, min_places=4),
            }
            for line in lines
        ],
    }
