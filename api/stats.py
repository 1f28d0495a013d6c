"""`GET /api/admin/sms/billing-stats?from=&to=&top=`: billing statistics for admins (SPEC §7)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.auth import requires
from api.blueprint import Blueprint
from api.fields import Instant, time_text
from billing.invoicing.stats import billing_stats
from infra.runtime import now, report

blp = Blueprint(
    "stats", __name__, url_prefix="/api/admin/sms/billing-stats", description="Statistics"
)


class StatsQuery(Schema):
    start = Instant(data_key="from", metadata={"description": "default: 30 days before `to`"})
    end = Instant(data_key="to", metadata={"description": "after `from`; default: now"})
    top = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100))

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_: Any) -> None:
        if "start" in data and "end" in data and data["end"] <= data["start"]:
            raise ValidationError("`to` must be after `from`", "to")


class StatsOut(Schema):
    start = fields.String(data_key="from")
    end = fields.String(data_key="to")
    invoices = fields.Dict(metadata={"description": "total, and count and amounts by status"})
    success_rate = fields.Float(
        allow_none=True, metadata={"description": "paid / (paid+failed), %"}
    )
    average_invoice = fields.Dict(metadata={"description": "per currency"})
    frequencies = fields.Dict(metadata={"description": "invoices per billing frequency"})
    failed_payments = fields.Dict(metadata={"description": "count, amounts, the latest few"})
    high_volume_users = fields.List(fields.Dict())
    usage_by_country = fields.List(fields.Dict())


@blp.route("", methods=["GET"])
@requires("admin")
@blp.arguments(StatsQuery, location="query")
@blp.response(200, StatsOut)
def stats(query: dict[str, Any]) -> dict[str, Any]:
    """Invoices created and usage sent in [from, to)."""
    end = query.get("end") or now()
    start = query.get("start") or end - timedelta(days=30)
    found = report(lambda s: billing_stats(s, start, end, top=query["top"]))
    found["start"], found["end"] = time_text(found.pop("from")), time_text(found.pop("to"))
    for failure in found["failed_payments"]["latest"]:
        failure["at"] = time_text(failure["at"])
    return found
