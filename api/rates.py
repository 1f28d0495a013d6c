"""Admin endpoints for the rate table: list rate versions and add new ones (the same rules as
`smsledger rates import`)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.fields import Instant, money_text, time_text
from api.schemas import PageQuery, page_of, paged
from billing.usage import rate_sheets
from billing.usage.rate_sheets import COLUMNS, add_rates
from infra.runtime import now, transaction

blp = Blueprint("rates", __name__, url_prefix="/api/admin/rates", description="Rate table")


class RateQuery(PageQuery):
    plan = fields.String()
    prefix = fields.String(validate=validate.Regexp(r"^[0-9]{1,15}$"))
    currency = fields.String(validate=validate.Length(equal=3))
    active_at = Instant(metadata={"description": "only the version in force at this instant"})


class RateIn(Schema):
    # Strings as in a rate sheet; parsed by the same function as the CSV import.
    prefix = fields.Raw(required=True)
    price = fields.Raw(required=True, metadata={"type": "string", "example": "0.0075"})
    currency = fields.String(required=True)
    country = fields.String(allow_none=True)
    valid_from = fields.String(allow_none=True)
    valid_to = fields.String(allow_none=True)
    plan = fields.String(allow_none=True)


class RatesIn(Schema):
    rates = fields.List(
        fields.Nested(RateIn), required=True, validate=validate.Length(min=1, max=10_000)
    )


class RateOut(Schema):
    id = fields.Integer()
    plan = fields.String()
    prefix = fields.String()
    country = fields.String(allow_none=True)
    currency = fields.String()
    price = fields.String()
    valid_from = fields.String()
    valid_to = fields.String(allow_none=True)


RatePageOut = page_of(RateOut, "RatePageOut")


class ImportOut(Schema):
    added = fields.Integer()
    unchanged = fields.Integer()


def _present(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "plan": row.plan,
        "prefix": row.prefix,
        "country": row.country,
        "currency": row.currency,
        "price": money_text(row.price_micros, row.currency),
        "valid_from": time_text(row.valid_from),
        "valid_to": time_text(row.valid_to),
    }


@blp.route("")
@requires("admin")
@blp.arguments(RateQuery, location="query")
@blp.response(200, RatePageOut)
def list_rates(query: dict[str, Any]) -> dict[str, Any]:
    """Rate versions by plan, prefix and validity."""
    filters = {name: query.get(name) for name in ("plan", "prefix", "currency", "active_at")}
    return paged(
        query,
        lambda s, limit, offset: rate_sheets.list_rates(s, **filters, limit=limit, offset=offset),
        _present,
    )


@blp.route("", methods=["POST"])
@requires("admin")
@blp.arguments(RatesIn)
@blp.response(201, ImportOut)
def add(body: dict[str, Any]) -> dict[str, Any]:
    """Add rate versions; identical ones already present are left as they are."""
    texts = (
        {k: (str(v) if v is not None else None) for k, v in values.items() if k in COLUMNS}
        for values in body["rates"]
    )
    parsed = rate_sheets.parse_rates(texts, "index", 0, "bad rate(s)")
    summary = transaction(lambda s: add_rates(s, parsed, now()))
    return {"added": summary.added, "unchanged": summary.unchanged}
