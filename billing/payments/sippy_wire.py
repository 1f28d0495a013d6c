"""Sippy's wire formats (sippy-api.md "Data formats"): its date strings and its `<double>`
amounts, shared by the client and the simulator so both sides read and write the same forms.

Dates are `09:57:29.000 GMT Wed Nov 18 2009`, always UTC with English names: built from fixed
tuples, never locale-dependent `strftime("%a %b")`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing.currency import minor_units
from ledger.money import MICRO_PLACES

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(instant: datetime) -> str:
    """An aware instant in Sippy's form (milliseconds always `.000`, as Sippy writes them)."""
    utc = instant.astimezone(UTC)
    return (
        f"{utc:%H:%M:%S}.000 GMT {_DAYS[utc.weekday()]} {_MONTHS[utc.month - 1]} "
        f"{utc.day:02d} {utc.year}"
    )


def parse_time(text: str) -> datetime:
    """Sippy's date string back to an aware UTC instant.

    Raises: ValueError when `text` is not in Sippy's form.
    """
    parts = text.strip().split()
    if len(parts) != 6 or parts[1] != "GMT" or parts[2] not in _DAYS or parts[3] not in _MONTHS:
        raise ValueError(f"not a Sippy date: {text!r}")
    clock, day, year = parts[0], int(parts[4]), int(parts[5])
    hour, minute, second = (int(float(piece)) for piece in clock.split(":"))
    return datetime(year, _MONTHS.index(parts[3]) + 1, day, hour, minute, second, tzinfo=UTC)


def to_double(micros: int, currency: str) -> float:
    """Micro-units as the `<double>` Sippy takes: the decimal amount in the currency's minor
    unit (an invoice total is always a whole number of minor units)."""
    amount = (
        Decimal(micros).scaleb(-MICRO_PLACES).quantize(Decimal(1).scaleb(-minor_units(currency)))
    )
    return float(amount)


def from_double(value: float | int | str, currency: str) -> int:
    """A Sippy `<double>` back to micro-units, through `repr` so 0.1 stays 0.1, quantised to
    the currency's minor unit."""
    text = repr(value) if isinstance(value, float) else str(value)
    amount = Decimal(text).quantize(Decimal(1).scaleb(-minor_units(currency)))
    return int(amount.scaleb(MICRO_PLACES))
