"""Admin endpoints for the rate table: list rate versions and add new ones (the same rules as
`smsledger rates import`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from api.auth import requires
from api.blueprint import Blueprint
from api.fields import (
    POSITIVE_AMOUNT_SCHEMA,
    Instant,
    currency_field,
    money_text,
    time_text,
    unsigned,
)
from api.schemas import PageQuery, page_of, paged
from billing.usage import rate_sheets
from billing.usage.problems import amount_shape_problem
from billing.usage.rate_sheets import COLUMNS, PLAN, add_rates
from infra.runtime import now, transaction

blp = Blueprint("rates", __name__, url_prefix="/api/admin/rates", description="Rate table")


class RateQuery(PageQuery):
    plan = fields.String(validate=validate.Regexp(PLAN.pattern))
    prefix = fields.String(validate=validate.Regexp(r"^[0-9]{1,15}$"))
    currency = currency_field()
    active_at = Instant(metadata={"description": "only the version in force at this instant"})


def _amount(value: object) -> None:
    """The price's shape; its sign is `parse_rate`'s to refuse (`invalid_rate`)."""
    problem = (
        amount_shape_problem(unsigned(value)) if isinstance(value, str | int | Decimal) else None
    )
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        problem = "price must be a decimal string or a JSON number"
    if problem is not None:
        raise ValidationError(f"Not a valid amount: {problem}")


class RateIn(Schema):
    # Shaped here as the document says; parsed by the same function as the CSV import.
    prefix = fields.String(
        required=True,
        metadata={
            "pattern": r"^\+?[1-9][0-9]{0,14}$",
            "description": "leading digits of E.164 numbers",
            "example": "44",
        },
    )
    price = fields.Raw(
        required=True,
        validate=_amount,
        metadata={**POSITIVE_AMOUNT_SCHEMA, "description": "per segment, above zero"},
    )
    currency = currency_field(required=True)
    country = fields.String(
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z]{2}$"),
        metadata={"description": "ISO 3166 alpha-2 region of the prefix"},
    )
    valid_from = Instant(allow_none=True, metadata={"description": "default: always"})
    valid_to = Instant(
        allow_none=True, metadata={"description": "exclusive, after `valid_from`; default: open"}
    )
    plan = fields.String(
        allow_none=True,
        validate=validate.Regexp(PLAN.pattern),
        metadata={"description": "default: `default`"},
    )


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


def _text(value: Any) -> str | None:
    """A loaded field as a rate sheet's text: instants in RFC 3339."""
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


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
    texts = ({k: _text(v) for k, v in values.items() if k in COLUMNS} for values in body["rates"])
    parsed = rate_sheets.parse_rates(texts, "index", 0, "bad rate(s)")
    summary = transaction(lambda s: add_rates(s, parsed, now()))
    return {"added": summary.added, "unchanged": summary.unchanged}
