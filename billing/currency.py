"""ISO 4217 through babel: which codes are currencies, and how many minor units each has."""

from __future__ import annotations

import functools

from babel.numbers import get_currency_precision, is_currency

from ledger.errors import InvalidCurrency
from ledger.money import check_currency


def validate_currency(code: object) -> str:
    """Return `code` when ISO 4217 knows it.

    Raises: InvalidCurrency.
    """
    check_currency(code)
    assert isinstance(code, str)
    if not is_currency(code):
        raise InvalidCurrency(f"{code} is not an ISO 4217 currency", currency=code)
    return code


@functools.cache
def minor_units(code: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, BHD 3)."""
    return int(get_currency_precision(code))
