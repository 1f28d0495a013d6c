"""Marshmallow fields for the wire format: money as exact decimal strings, times as RFC 3339
UTC. The only place the API turns text into micro-units and back."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from babel.numbers import list_currencies
from marshmallow import ValidationError, fields, validate

from billing.currency import minor_units
from billing.usage.problems import (
    AMOUNT_PATTERN,
    MAX_AMOUNT,
    POSITIVE_AMOUNT_PATTERN,
    amount_shape_problem,
)
from ledger.errors import InvalidAmount
from ledger.money import format_micros, parse_micros

CURRENCIES = tuple(sorted(code for code in list_currencies() if re.fullmatch("[A-Z]{3}", code)))
"""The ISO 4217 codes `billing.currency.validate_currency` knows: upper case only."""


def currency_field(checked_later: bool = False, **kwargs: Any) -> fields.String:
    """A currency: one of `CURRENCIES`, documented as their enum. `checked_later`: the service
    refuses any other with `invalid_currency` itself, so the field only documents."""
    if checked_later:
        metadata = {"enum": list(CURRENCIES), **kwargs.pop("metadata", {})}
        return fields.String(validate=validate.Length(equal=3), metadata=metadata, **kwargs)
    return fields.String(validate=validate.OneOf(CURRENCIES), **kwargs)


AMOUNT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": AMOUNT_PATTERN, "example": "1.50"},
        {"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT)},
    ],
    "description": "an amount: a decimal string (at most 6 decimals, no sign, no leading zeros)"
    " or a plain JSON number, read exactly; at most 999999999.999999",
}
POSITIVE_AMOUNT_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": POSITIVE_AMOUNT_PATTERN, "example": "1.50"},
        {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": float(MAX_AMOUNT),
        },
    ],
    "description": "an amount above zero: a decimal string (at most 6 decimals, no sign, no"
    " leading zeros) or a plain JSON number, read exactly; at most 999999999.999999",
}
WEBHOOK_URL_PATTERN = r"^https?://([A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+$"


def webhook_url_field() -> fields.Url:
    """Where notifications are POSTed: an absolute http(s) URL (RFC 3986: ASCII, percent
    escapes), or null for none."""
    return fields.Url(
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Regexp(WEBHOOK_URL_PATTERN, error="Not a valid URL."),
        metadata={
            "format": "uri",
            "pattern": WEBHOOK_URL_PATTERN,
            "example": "https://example.com/hook",
        },
    )


def unsigned(value: str | int | Decimal) -> str | int | Decimal:
    """An amount without its sign: where a field refuses a negative amount, its domain says so
    with its own code (`invalid_amount`, `invalid_settings`, ...), so the shape check leaves
    the sign to it."""
    if isinstance(value, str):
        return value.removeprefix("-")
    return -value if value < 0 else value


class Money(fields.Field[int]):
    """Money in: a decimal string or a JSON number (parsed as Decimal), at most 6 decimals and
    never negative (`AMOUNT_SCHEMA`); loads to integer micro-units. Never a float."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's documented extension point
        "invalid_amount": "Not a valid amount: use a decimal string with at most 6 decimals.",
    }

    def __init__(self, positive: bool = False, **kwargs: Any) -> None:
        shape = POSITIVE_AMOUNT_SCHEMA if positive else AMOUNT_SCHEMA
        metadata = {**shape, **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise self.make_error("invalid_amount")
        try:
            micros = parse_micros(value)
        except InvalidAmount as error:
            raise ValidationError(error.message) from None
        shape = amount_shape_problem(unsigned(value))
        if shape is not None:
            raise ValidationError(f"Not a valid amount: {shape}")
        return micros

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


def money_text(micros: int, currency: str) -> str:
    """Micro-units as the wire's decimal string, padded to the currency's minor unit."""
    return format_micros(micros, minor_units(currency))


def time_text(moment: datetime | None) -> str | None:
    """An instant as RFC 3339 UTC with a `Z`."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Flag(fields.Boolean):
    """A JSON boolean: `true` or `false`, never 0, 1 or a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def query_flag(**kwargs: Any) -> fields.Boolean:
    """A boolean query parameter: `true` or `false`, as the document says."""
    return fields.Boolean(truthy={"true"}, falsy={"false"}, **kwargs)


class Instant(fields.AwareDateTime):
    """An RFC 3339 instant that must carry its offset; loads to aware UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("invalid", obj_type="datetime") from None
