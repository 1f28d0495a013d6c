"""Money parsing and formatting: exact, six decimals at most, never a float."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidAmount, InvalidCurrency, TooManyDecimals
from ledger.money import MAX_MICROS, Money, format_micros, parse_micros


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0.0075", 7_500),
        ("1.50", 1_500_000),
        ("12.3400", 12_340_000),
        ("1", 1_000_000),
        ("0.000001", 1),
        ("-2.5", -2_500_000),
        ("1.500000000", 1_500_000),
        ("1e2", 100_000_000),
    ],
)
def test_decimal_strings_parse_exactly(text: str, micros: int) -> None:
    assert parse_micros(text) == micros


def test_json_numbers_arrive_as_decimals_and_parse_exactly() -> None:
    assert parse_micros(Decimal("0.0075")) == 7_500
    assert parse_micros(3) == 3_000_000


@pytest.mark.parametrize(
    "bad", ["1.0000001", "0.00000001", "abc", "", " 1", "1_000", "NaN", "Infinity"]
)
def test_malformed_or_too_precise_amounts_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_micros(bad)


@pytest.mark.parametrize("bad", ["1.0000001", "0.00000001", Decimal("1.00000001"), "1e-7"])
def test_too_many_decimals_has_its_own_type(bad: object) -> None:
    with pytest.raises(TooManyDecimals) as raised:
        parse_micros(bad)
    assert isinstance(raised.value, InvalidAmount)  # every `except InvalidAmount` still holds


@pytest.mark.parametrize("bad", ["abc", "decimal places", "NaN", 0.1, True, "1e20"])
def test_other_bad_amounts_are_not_too_many_decimals(bad: object) -> None:
    with pytest.raises(InvalidAmount) as raised:
        parse_micros(bad)
    assert not isinstance(raised.value, TooManyDecimals)


@pytest.mark.parametrize("bad", [0.1, True, None, [1], {"a": 1}])
def test_floats_and_non_numbers_are_refused(bad: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_micros(bad)


def test_amounts_beyond_the_storage_bound_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        parse_micros(str(MAX_MICROS // 1_000_000 + 1))


@pytest.mark.parametrize(
    ("micros", "places", "text"),
    [
        (7_500, 2, "0.0075"),
        (12_340_000, 2, "12.34"),
        (1_500_000, 2, "1.50"),
        (0, 2, "0.00"),
        (5_000_000, 0, "5"),
        (-1, 2, "-0.000001"),
        (1_234_500, 3, "1.2345"),
    ],
)
def test_formatting_pads_to_the_minor_unit_and_trims_the_rest(
    micros: int, places: int, text: str
) -> None:
    assert format_micros(micros, places) == text


@given(st.integers(min_value=-MAX_MICROS, max_value=MAX_MICROS), st.integers(0, 6))
def test_format_then_parse_round_trips(micros: int, places: int) -> None:
    assert parse_micros(format_micros(micros, places)) == micros


def test_money_refuses_floats_and_mixed_currencies() -> None:
    with pytest.raises(TypeError):
        Money(1.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(InvalidCurrency):
        Money(1, "usd")
    with pytest.raises(InvalidCurrency):
        Money(1, "USD") + Money(1, "EUR")
    assert Money.parse("1.25", "USD") + Money(750_000, "USD") == Money(2_000_000, "USD")
    assert (-Money(5, "EUR")).micros == -5
