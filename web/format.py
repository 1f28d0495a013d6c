"""How the pages write money, instants and counts: the same exact decimal text as the API
(micro-units padded to the currency's minor unit), times in UTC to the minute."""

from __future__ import annotations

from datetime import UTC, datetime

from babel.numbers import format_decimal

from billing.currency import minor_units
from ledger.money import format_micros


def money(micros: int | None, currency: str) -> str:
    """`12.34 USD`; an em dash for nothing."""
    if micros is None:
        return "—"
    return f"{format_micros(micros, minor_units(currency))} {currency}"


def amount(micros: int | None, currency: str) -> str:
    """The bare decimal text (form values, CSV cells)."""
    if micros is None:
        return ""
    return format_micros(micros, minor_units(currency))


def instant(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def count(value: int | None) -> str:
    return "—" if value is None else format_decimal(value, locale="en_US")


def short_id(value: object) -> str:
    """The last 8 characters of an id: smsledger's ids are UUIDv7, whose first characters are
    the creation time and so the same for everything made the same day."""
    return str(value)[-8:]


FILTERS = {
    "short_id": short_id,
    "money": money,
    "amount": amount,
    "instant": instant,
    "day": day,
    "count": count,
}
