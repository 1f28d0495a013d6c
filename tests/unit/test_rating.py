"""Rating: segments, destinations, longest prefix, validity windows, plans, rate sheets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.errors import InvalidRate
from billing.usage.rate_sheets import ALWAYS, parse_sheet
from billing.usage.rating import Rate, RateTable, count_segments, parse_destination

JAN = datetime(2026, 1, 1, tzinfo=UTC)
JUN = datetime(2026, 6, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("length", "encoding", "segments"),
    [
        (0, "gsm7", 1),
        (160, "gsm7", 1),
        (161, "gsm7", 2),
        (306, "gsm7", 2),
        (307, "gsm7", 3),
        (70, "ucs2", 1),
        (71, "ucs2", 2),
        (134, "ucs2", 2),
        (135, "ucs2", 3),
    ],
)
def test_segments_follow_single_and_concatenated_part_sizes(
    length: int, encoding: str, segments: int
) -> None:
    assert count_segments(length, encoding) == segments


def test_gsm7_extension_characters_count_twice_when_given_in_septets() -> None:
    # 150 characters of which 6 are from the extension table (€, [, ], {, }, ~) = 156 septets.
    assert count_segments(150 + 6, "gsm7") == 1
    # 158 such characters with 4 extension ones = 162 septets: two parts.
    assert count_segments(158 + 4, "gsm7") == 2


def test_destinations_are_validated_and_normalised() -> None:
    gb = parse_destination("+447400123456")
    assert gb is not None and (gb.e164, gb.country, gb.calling_code) == (
        "+447400123456",
        "GB",
        "44",
    )
    assert parse_destination("+44 7400 123456") == gb
    assert parse_destination("+999") is None
    assert parse_destination("447400123456") is None
    assert parse_destination("+4474001234567890") is None


def rate(id: int, prefix: str, price: int, **kw: object) -> Rate:
    values: dict = {
        "plan": "default",
        "country": None,
        "currency": "USD",
        "valid_from": ALWAYS,
        "valid_to": None,
    }
    values.update(kw)
    return Rate(
        plan=values["plan"],
        prefix=prefix,
        country=values["country"],
        currency=values["currency"],
        price_micros=price,
        valid_from=values["valid_from"],
        valid_to=values["valid_to"],
        id=id,
    )


def test_the_longest_matching_prefix_wins() -> None:
    table = RateTable([rate(1, "44", 40_000), rate(2, "447", 7_500), rate(3, "4474", 7_000)])
    assert table.find("447400123456", "USD", JUN).id == 3  # type: ignore[union-attr]
    assert table.find("447700123456", "USD", JUN).id == 2  # type: ignore[union-attr]
    assert table.find("442071234567", "USD", JUN).id == 1  # type: ignore[union-attr]
    assert table.find("33612345678", "USD", JUN) is None
    assert table.find("447400123456", "EUR", JUN) is None


def test_validity_windows_decide_which_version_applies() -> None:
    table = RateTable(
        [
            rate(1, "447", 7_500, valid_to=JUN),
            rate(2, "447", 8_000, valid_from=JUN),
            rate(3, "4474", 6_000, valid_from=DEC),
        ]
    )
    assert table.find("447400123456", "USD", JAN).id == 1  # type: ignore[union-attr]
    assert table.find("447400123456", "USD", JUN).id == 2  # type: ignore[union-attr] # to is exclusive
    assert table.find("447400123456", "USD", DEC).id == 3  # type: ignore[union-attr]


def test_a_customer_plan_overrides_the_default_and_falls_back_to_it() -> None:
    table = RateTable(
        [rate(1, "447", 7_500), rate(2, "1", 6_000), rate(3, "447", 5_000, plan="wholesale")]
    )
    assert table.find("447400123456", "USD", JUN, "wholesale").id == 3  # type: ignore[union-attr]
    assert table.find("12025550123", "USD", JUN, "wholesale").id == 2  # type: ignore[union-attr]
    assert table.find("447400123456", "USD", JUN).id == 1  # type: ignore[union-attr]


def test_a_rate_sheet_loads_with_defaults() -> None:
    (only,) = parse_sheet("prefix,price,currency\n447,0.0075,USD\n")
    assert (only.plan, only.prefix, only.price_micros, only.valid_from, only.valid_to) == (
        "default",
        "447",
        7_500,
        ALWAYS,
        None,
    )


def test_a_bad_rate_sheet_names_every_bad_line() -> None:
    sheet = (
        "prefix,price,currency,country,valid_from\n"
        "447,0.0075,USD,GB,\n"
        "abc,0.0075,USD,,\n"
        "33,0.00000001,USD,,\n"
        "49,0.08,XYZ,,\n"
        "1,0,USD,,\n"
        "1,0.006,USD,ZZ,\n"
        "1,0.006,USD,US,2026-01-01T00:00:00\n"
    )
    with pytest.raises(InvalidRate) as raised:
        parse_sheet(sheet)
    assert [e["line"] for e in raised.value.details["errors"]] == [3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("sheet", ["", "prefix,price\n447,0.1\n", "prefix,price,currency\n"])
def test_empty_or_incomplete_sheets_are_refused(sheet: str) -> None:
    with pytest.raises(InvalidRate):
        parse_sheet(sheet)
