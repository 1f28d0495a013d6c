"""Admin endpoints for the rate table: list rate versions and add new ones (the same rules as
`smsledger rates import`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.fields import Instant, money_text, time_text
from api.runtime import now, transaction
from api.schemas import PageQuery, page_of, paged
from billing.errors import InvalidRate
from billing.paging import fetch_page
from billing.tables import rates
from billing.usage.rate_sheets import COLUMNS, add_rates, parse_rate

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
    filters: list[sa.ColumnElement[bool]] = []
    for name in ("plan", "prefix", "currency"):
        if query.get(name) is not None:
            filters.append(rates.c[name] == query[name])
    active_at: datetime | None = query.get("active_at")
    if active_at is not None:
        newer = rates.alias("newer")
        in_force = sa.and_(
            rates.c.valid_from <= active_at,
            sa.or_(rates.c.valid_to.is_(None), rates.c.valid_to > active_at),
        )
        filters.append(in_force)
        # The newest version in force wins, as in rating.
        filters.append(
            ~sa.exists().where(
                newer.c.plan == rates.c.plan,
                newer.c.prefix == rates.c.prefix,
                newer.c.currency == rates.c.currency,
                newer.c.valid_from > rates.c.valid_from,
                newer.c.valid_from <= active_at,
                sa.or_(newer.c.valid_to.is_(None), newer.c.valid_to > active_at),
            )
        )
    order = [rates.c.plan, rates.c.prefix, rates.c.currency, rates.c.valid_from]
    return paged(
        query,
        lambda s, limit, offset: fetch_page(s, rates, filters, order, limit, offset),
        _present,
    )


@blp.route("", methods=["POST"])
@requires("admin")
@blp.arguments(RatesIn)
@blp.response(201, ImportOut)
def add(body: dict[str, Any]) -> dict[str, Any]:
    """Add rate versions; identical ones already present are left as they are."""
    parsed, errors = [], []
    for index, values in enumerate(body["rates"]):
        text = {k: (str(v) if v is not None else None) for k, v in values.items() if k in COLUMNS}
        try:
            parsed.append(parse_rate(text))
        except ValueError as error:
            errors.append({"index": index, "message": str(error)})
    if errors:
        raise InvalidRate(f"{len(errors)} bad rate(s)", errors=errors)
    summary = transaction(lambda s: add_rates(s, parsed, now()))
    return {"added": summary.added, "unchanged": summary.unchanged}
