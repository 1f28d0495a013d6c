"""Marshmallow fields for the wire format: money as exact decimal strings, times as RFC 3339
UTC. The only place the API turns text into micro-units and back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields

from billing.currency import minor_units
from ledger.errors import InvalidAmount
from ledger.money import format_micros, parse_micros


class Money(fields.Field[int]):
    """Money in: a decimal string or a JSON number (parsed as Decimal), at most 6 decimals;
    loads to integer micro-units. Never a float."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's documented extension point
        "invalid_amount": "Not a valid amount: use a decimal string with at most 6 decimals.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise self.make_error("invalid_amount")
        try:
            return parse_micros(value)
        except InvalidAmount as error:
            raise ValidationError(error.message) from None

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
