"""Usage event validation: every problem of every event is reported with its index."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.errors import InvalidUsage
from billing.usage.ingestion import MAX_BATCH, validate_events

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
