"""Exact money: integer micro-units (10^-6 of a currency unit), never a float.

One parser and one formatter, so every path in and out of the ledger agrees on what a decimal
string means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from ledger.errors import InvalidAmount, InvalidCurrency, TooManyDecimals

MICROS_PER_UNIT = 1_000_000
MICRO_PLACES = 6
_CURRENCY_SHAPE = re.compile(r"^[A-Z]{3}$")
# The ledger stores BIGINT: keep every amount well inside it so sums of many cannot overflow.
MAX_MICROS = 10**15
MAX_UNIT_DIGITS = 10  # checked before any arithmetic, so no Decimal operation can overflow


def check_currency(currency: object) -> str:
    """Return the code when it is shaped like ISO 4217 (three capitals).

    Raises: InvalidCurrency.
    """
    if not isinstance(currency, str) or not _CURRENCY_SHAPE.match(currency):
        raise InvalidCurrency(f"{currency!r} is not a three-letter ISO 4217 currency code")
    return currency


def parse_micros(value: object) -> int:
    """Parse a decimal string, an int or a Decimal into micro-units, exactly.

    More than six decimals is an error, never a silent rounding. Floats and bools are refused:
    a float has already lost the exact value.

    Raises: InvalidAmount; TooManyDecimals (one of them) for digits beyond the sixth place.
    """
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount(f"{value!r}: money must be a decimal string, never a float")
    if isinstance(value, int):
        decimal = Decimal(value)
    elif isinstance(value, Decimal):
        decimal = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or text != value or "_" in text:
            raise InvalidAmount(f"{value!r} is not a decimal number")
        try:
            decimal = Decimal(text)
        except InvalidOperation:
            raise InvalidAmount(f"{value!r} is not a decimal number") from None
    else:
        raise InvalidAmount(f"{value!r} is not a decimal number")
    if not decimal.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number")
    if decimal and decimal.adjusted() >= MAX_UNIT_DIGITS:
        raise InvalidAmount(f"{value!r} is too large")
    exponent = decimal.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MICRO_PLACES:
        # 1.500000000 is still exact: only digits that carry value count.
        if decimal != decimal.quantize(Decimal(1).scaleb(-MICRO_PLACES)):
            raise TooManyDecimals(f"{value!r} has more than {MICRO_PLACES} decimal places")
    micros = int(decimal.scaleb(MICRO_PLACES))
    if abs(micros) > MAX_MICROS:
        raise InvalidAmount(f"{value!r} is too large")
    return micros


def format_micros(micros: int, min_places: int = 2) -> str:
    """Render micro-units as a decimal string: at least `min_places` decimals, no trailing
    zeros beyond them (0.0075, 12.34, 1.50, 0.00 for a two-decimal currency)."""
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise TypeError(f"micros must be int, got {type(micros).__name__}")
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0")
    if len(digits) < min_places:
        digits = digits.ljust(min_places, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency."""

    micros: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.micros, bool) or not isinstance(self.micros, int):
            raise TypeError(f"Money.micros must be int, got {type(self.micros).__name__}")
        check_currency(self.currency)

    @classmethod
    def parse(cls, value: object, currency: str) -> Money:
        """Money from a decimal string, int or Decimal (see `parse_micros`)."""
        return cls(parse_micros(value), currency)

    def format(self, min_places: int = 2) -> str:
        return format_micros(self.micros, min_places)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.micros + other.micros, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.micros - other.micros, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.micros, self.currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise InvalidCurrency(f"cannot combine {self.currency} with {other.currency}")
