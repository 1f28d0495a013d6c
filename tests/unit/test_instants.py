"""Instants and range bounds from text (billing/instants.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.instants import parse_bound, parse_instant


def test_a_plain_date_bound_is_its_midnight_utc() -> None:
    assert parse_bound("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_bound("2026-11-01T12:00:00+02:00") == datetime(2026, 11, 1, 10, tzinfo=UTC)


def test_an_impossible_date_or_a_time_without_offset_is_no_bound() -> None:
    assert parse_bound("2026-02-30") is None
    assert parse_bound("2026-11-01T12:00:00") is None
    assert parse_bound(20261101) is None
    assert parse_instant("2026-11-01") is None  # usage events still need an instant
