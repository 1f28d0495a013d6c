"""Period boundaries: midnight UTC, Mondays, month ends of 28, 29, 30 and 31 days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.invoicing.periods import (
    last_ended_period,
    next_billing_at,
    next_period_start,
    period_start,
)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("frequency", "now", "start", "end"),
    [
        ("daily", at(2026, 11, 24, 2, 0), at(2026, 11, 23), at(2026, 11, 24)),
        ("daily", at(2026, 11, 24, 0, 0), at(2026, 11, 23), at(2026, 11, 24)),
        ("daily", at(2026, 11, 23, 23, 59, 59), at(2026, 11, 22), at(2026, 11, 23)),
        ("daily", at(2027, 1, 1, 2), at(2026, 12, 31), at(2027, 1, 1)),
        ("weekly", at(2026, 11, 23, 3), at(2026, 11, 16), at(2026, 11, 23)),  # a Monday
        ("weekly", at(2026, 11, 29, 23), at(2026, 11, 16), at(2026, 11, 23)),  # Sunday
        ("monthly", at(2026, 12, 1, 4), at(2026, 11, 1), at(2026, 12, 1)),  # 30 days
        ("monthly", at(2026, 3, 1, 4), at(2026, 2, 1), at(2026, 3, 1)),  # 28 days
        ("monthly", at(2028, 3, 1, 4), at(2028, 2, 1), at(2028, 3, 1)),  # 29 days (leap)
        ("monthly", at(2026, 2, 1, 4), at(2026, 1, 1), at(2026, 2, 1)),  # 31 days
        ("monthly", at(2027, 1, 15), at(2026, 12, 1), at(2027, 1, 1)),
    ],
)
def test_the_last_ended_period(
    frequency: str, now: datetime, start: datetime, end: datetime
) -> None:
    assert last_ended_period(frequency, now) == (start, end)


def test_next_billing_is_the_close_time_after_the_running_period() -> None:
    now = at(2026, 11, 24, 10)  # a Tuesday
    assert next_billing_at("daily", now) == at(2026, 11, 25, 2)
    assert next_billing_at("weekly", now) == at(2026, 11, 30, 3)
    assert next_billing_at("monthly", now) == at(2026, 12, 1, 4)
    assert next_billing_at("threshold", now) is None


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2100, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
)
def test_periods_tile_time_without_gaps(moment: datetime) -> None:
    for frequency in ("daily", "weekly", "monthly"):
        start = period_start(frequency, moment)
        end = next_period_start(frequency, start)
        assert start <= moment < end
        assert period_start(frequency, end) == end
        assert start.hour == start.minute == start.second == 0
    assert period_start("weekly", moment).weekday() == 0
    assert period_start("monthly", moment).day == 1


@pytest.mark.parametrize(
    ("micros", "currency", "rounded"),
    [
        (34_000, "USD", 30_000),
        (35_000, "USD", 40_000),  # half up
        (34_999, "USD", 30_000),
        (1, "USD", 0),
        (5_000, "USD", 10_000),
        (1_499_999, "JPY", 1_000_000),
        (1_500_000, "JPY", 2_000_000),
        (1_234_500, "BHD", 1_235_000),
        (0, "EUR", 0),
    ],
)
def test_invoice_totals_round_half_up_to_the_minor_unit(
    micros: int, currency: str, rounded: int
) -> None:
    from billing.invoicing.closing import round_half_up

    assert round_half_up(micros, currency) == rounded


def test_the_last_close_time_follows_the_schedule() -> None:
    from billing.invoicing.periods import last_close_time

    assert last_close_time("daily", at(2026, 11, 24, 1, 59)) == at(2026, 11, 23, 2)
    assert last_close_time("daily", at(2026, 11, 24, 2, 0)) == at(2026, 11, 24, 2)
    assert last_close_time("weekly", at(2026, 11, 24, 10)) == at(2026, 11, 23, 3)  # Monday
    assert last_close_time("weekly", at(2026, 11, 23, 2)) == at(2026, 11, 16, 3)
    assert last_close_time("monthly", at(2026, 12, 1, 3, 59)) == at(2026, 11, 1, 4)


def test_the_embedded_scheduler_runs_each_close_once_per_close_time() -> None:
    from jobs.embedded import EmbeddedScheduler

    now = [at(2026, 11, 24, 1, 0)]
    ran: list[str] = []
    scheduler = EmbeddedScheduler(lambda: now[0], run=ran.append, sweeps=(), daily=None)
    assert scheduler.tick() == ["daily", "weekly", "monthly", "threshold"]  # catch-up at start
    now[0] = at(2026, 11, 24, 1, 0, 30)
    assert scheduler.tick() == []
    now[0] = at(2026, 11, 24, 2, 0, 10)
    assert scheduler.tick() == ["daily", "threshold"]
    now[0] = at(2026, 11, 24, 2, 0, 40)
    assert scheduler.tick() == []
    now[0] = at(2026, 11, 30, 3, 1)
    assert scheduler.tick() == ["daily", "weekly", "threshold"]


def test_the_embedded_scheduler_reconciles_once_each_morning_and_sweeps_every_tick() -> None:
    from jobs.embedded import EmbeddedScheduler

    now = [at(2026, 11, 24, 4, 59)]
    swept: list[str] = []
    scheduler = EmbeddedScheduler(
        lambda: now[0],
        run=lambda _: None,
        sweeps=(lambda: swept.append("sweep"),),
        daily=lambda: swept.append("reconcile"),
    )
    assert "reconcile" not in scheduler.tick()
    now[0] = at(2026, 11, 24, 5, 0)
    assert "reconcile" in scheduler.tick()
    now[0] = at(2026, 11, 24, 23, 0)
    assert "reconcile" not in scheduler.tick()
    now[0] = at(2026, 11, 25, 6, 0)
    assert "reconcile" in scheduler.tick()
    assert swept.count("sweep") == 4 and swept.count("reconcile") == 2
