"""Usage event validation: every problem of every event is reported with its index."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.errors import InvalidUsage
from billing.usage import ingestion
from billing.usage.ingestion import MAX_BATCH, validate_events
from billing.usage.problems import Problem, check_user_id
from billing.usage.rating import parse_destination

EVENT = {
    "message_id": "msg-0001",
    "user_id": "42",
    "destination": "+447400123456",
    "segments": 1,
    "sent_at": "2026-11-24T10:00:00Z",
}


def problems(*events: Any) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidUsage) as raised:
        validate_events(list(events))
    return [(e["index"], e["field"], e["code"]) for e in raised.value.details["errors"]]


def test_a_valid_event_is_normalised() -> None:
    (event,) = validate_events(
        [{**EVENT, "destination": "+44 7400 123456", "cost": Decimal("0.0075")}]
    )
    assert event.destination.e164 == "+447400123456"
    assert event.cost == 7_500 and event.segments == 1
    assert event.sent_at is not None and event.sent_at.tzinfo is not None


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"destination": "+999"}, "destination", "invalid_destination"),
        ({"destination": "07400123456"}, "destination", "invalid_destination"),
        ({"destination": None}, "destination", "required"),
        ({"segments": 0}, "segments", "invalid_segments"),
        ({"segments": 1.5}, "segments", "invalid_segments"),
        ({"segments": True}, "segments", "invalid_segments"),
        ({"segments": None}, "segments", "segments_required"),
        ({"segments": None, "text_length": 10}, "encoding", "invalid_encoding"),
        (
            {"segments": None, "text_length": -1, "encoding": "gsm7"},
            "text_length",
            "invalid_text_length",
        ),
        ({"cost": "0.0000001"}, "cost", "too_many_decimals"),
        ({"cost": "0"}, "cost", "invalid_cost"),
        ({"cost": 0.5}, "cost", "invalid_cost"),
        ({"currency": "dollars"}, "currency", "invalid_currency"),
        ({"country": "FR"}, "country", "country_mismatch"),
        ({"prefix": "33"}, "prefix", "prefix_mismatch"),
        ({"sent_at": "yesterday"}, "sent_at", "invalid_sent_at"),
        ({"sent_at": "2026-11-24T10:00:00"}, "sent_at", "invalid_sent_at"),
        ({"message_id": ""}, "message_id", "required"),
        ({"message_id": "x" * 201}, "message_id", "required"),
        ({"user_id": "a:b"}, "user_id", "invalid_user_id"),
        ({"text": "hello"}, "text", "unknown_field"),
    ],
)
def test_each_bad_field_has_a_code(change: dict[str, Any], field: str, code: str) -> None:
    assert (0, field, code) in problems({**EVENT, **change})


def test_a_batch_reports_every_bad_event_by_index() -> None:
    found = problems(EVENT, {**EVENT, "segments": 0}, EVENT, {**EVENT, "destination": "+1"}, "x")
    assert found == [
        (1, "segments", "invalid_segments"),
        (3, "destination", "invalid_destination"),
        (4, "", "invalid_type"),
    ]


def test_batches_are_bounded() -> None:
    assert problems(*([EVENT] * (MAX_BATCH + 1))) == [(None, "events", "batch_too_large")]
    assert problems() == [(None, "events", "required")]


def test_segments_are_counted_from_length_and_encoding() -> None:
    (event,) = validate_events(
        [{**EVENT, "segments": None, "text_length": 161, "encoding": "gsm7"}]
    )
    assert event.segments == 2


def test_too_many_decimals_is_told_by_type_not_by_message_text() -> None:
    # A malformed amount whose text happens to mention decimals is still only invalid.
    assert problems({**EVENT, "cost": "decimal places"}) == [(0, "cost", "invalid_cost")]
    assert problems({**EVENT, "cost": Decimal("0.00000001")}) == [(0, "cost", "too_many_decimals")]


def test_problems_of_one_event_come_in_field_order_with_their_messages() -> None:
    bad = {
        "zz": 1,
        "aa": 2,
        "message_id": "",
        "user_id": "a:b",
        "destination": "+447400123456",
        "segments": None,
        "text_length": -1,
        "encoding": "utf8",
        "sent_at": "yesterday",
        "cost": "0.0000001",
        "currency": "dollars",
        "country": "FR",
        "prefix": "33",
    }
    with pytest.raises(InvalidUsage) as raised:
        validate_events([bad])
    assert raised.value.details["errors"] == [
        {"index": 0, "field": field, "code": code, "message": message}
        for field, code, message in [
            ("aa", "unknown_field", "aa is not a usage field"),
            ("zz", "unknown_field", "zz is not a usage field"),
            ("message_id", "required", "message_id must be 1-200 characters"),
            ("user_id", "invalid_user_id", "user_id must be 1-64 letters, digits, . _ -"),
            ("encoding", "invalid_encoding", "encoding must be gsm7 or ucs2"),
            ("text_length", "invalid_text_length", "text_length must be a count >= 0"),
            ("sent_at", "invalid_sent_at", "sent_at must be an RFC 3339 instant with offset"),
            ("cost", "too_many_decimals", "'0.0000001' has more than 6 decimal places"),
            ("currency", "invalid_currency", "currency must be an ISO 4217 code"),
            ("country", "country_mismatch", "the number is in GB, not 'FR'"),
            ("prefix", "prefix_mismatch", "prefix must be leading digits of destination"),
        ]
    ]


def test_country_and_prefix_are_not_checked_against_a_bad_number() -> None:
    found = problems({**EVENT, "destination": "+999", "country": "FR", "prefix": "33"})
    assert found == [(0, "destination", "invalid_destination")]


# Each field checker alone: the value it parsed, and the problems it reports.
@pytest.mark.parametrize(
    ("checker", "raw", "value", "codes"),
    [
        (ingestion._check_message_id, {"message_id": "m-1"}, "m-1", []),
        (ingestion._check_message_id, {}, None, ["required"]),
        (check_user_id, {"user_id": "42"}, "42", []),
        (check_user_id, {"user_id": 42}, None, ["invalid_user_id"]),
        (ingestion._check_destination, {}, None, ["required"]),
        (ingestion._check_destination, {"destination": "+1"}, None, ["invalid_destination"]),
        (ingestion._check_segments, {"segments": 3}, 3, []),
        (ingestion._check_segments, {"segments": 256}, None, ["invalid_segments"]),
        (ingestion._check_segments, {}, None, ["segments_required"]),
        (ingestion._check_segments, {"text_length": 71, "encoding": "ucs2"}, 2, []),
        (ingestion._check_segments, {"text_length": 10}, None, ["invalid_encoding"]),
        (
            ingestion._check_segments,
            {"text_length": "x", "encoding": "x"},
            None,
            ["invalid_encoding", "invalid_text_length"],
        ),
        (ingestion._check_segments, {"segments": 1, "encoding": "x"}, 1, []),
        (ingestion._check_sent_at, {}, None, []),
        (ingestion._check_sent_at, {"sent_at": 5}, None, ["invalid_sent_at"]),
        (ingestion._check_cost, {}, None, []),
        (ingestion._check_cost, {"cost": "0.25"}, 250_000, []),
        (ingestion._check_cost, {"cost": "1.0000001"}, None, ["too_many_decimals"]),
        (ingestion._check_cost, {"cost": "-1"}, None, ["invalid_cost"]),
        (ingestion._check_cost, {"cost": "abc"}, None, ["invalid_cost"]),
        (ingestion._check_currency, {"currency": "EUR"}, "EUR", []),
        (ingestion._check_currency, {"currency": "XYZ"}, None, ["invalid_currency"]),
    ],
)
def test_each_checker_reports_its_own_problem(
    checker: Any, raw: dict[str, Any], value: object, codes: list[str]
) -> None:
    parsed, found = checker(raw)
    assert parsed == value
    assert [p.code for p in found] == codes
    assert all(isinstance(p, Problem) and p.message for p in found)


def test_the_checkers_that_report_without_a_value() -> None:
    number = parse_destination("+447400123456")
    assert ingestion._check_unknown_fields({"b": 1, "a": 2, "cost": 1}) == (
        Problem("a", "unknown_field", "a is not a usage field"),
        Problem("b", "unknown_field", "b is not a usage field"),
    )
    assert ingestion._check_country({"country": "GB"}, number) == ()
    assert [p.code for p in ingestion._check_country({"country": "FR"}, number)] == [
        "country_mismatch"
    ]
    assert ingestion._check_prefix({"prefix": "4474"}, number) == ()
    assert [p.code for p in ingestion._check_prefix({"prefix": ""}, number)] == ["prefix_mismatch"]
    assert ingestion._check_prefix({"prefix": "33"}, None) == ()
