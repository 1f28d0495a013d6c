"""Billing periods (SPEC §6): where each frequency's periods start and end, and when they close.

Periods are half-open UTC intervals [start, end): days from midnight, weeks from Monday
midnight, months from the 1st at midnight. A period closes a little after it ends (daily at
02:00, weekly on Monday at 03:00, monthly on the 1st at 04:00) so usage sent just before
midnight has time to arrive; usage arriving even later lands in the next invoice.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SCHEDULED = ("daily", "weekly", "monthly")
CLOSE_DELAY = {
    "daily": timedelta(hours=2),
    "weekly": timedelta(hours=3),
    "monthly": timedelta(hours=4),
}


def _midnight(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def period_start(frequency: str, moment: datetime) -> datetime:
    """Start of the `frequency` period that contains `moment`."""
    day = _midnight(moment)
    if frequency == "daily":
        return day
    if frequency == "weekly":
        return day - timedelta(days=day.weekday())
    if frequency == "monthly":
        return day.replace(day=1)
    raise ValueError(f"{frequency!r} has no calendar periods")


def next_period_start(frequency: str, start: datetime) -> datetime:
    """The start of the period after the one starting at `start`."""
    if frequency == "daily":
        return start + timedelta(days=1)
    if frequency == "weekly":
        return start + timedelta(days=7)
    if frequency == "monthly":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    raise ValueError(f"{frequency!r} has no calendar periods")


def last_ended_period(frequency: str, now: datetime) -> tuple[datetime, datetime]:
    """The most recent complete period [start, end) with end <= now."""
    end = period_start(frequency, now)
    previous = period_start(frequency, end - timedelta(microseconds=1))
    return previous, end


def next_billing_at(frequency: str, now: datetime) -> datetime | None:
    """When the period running at `now` will be closed (None for threshold billing)."""
    if frequency not in SCHEDULED:
        return None
    end = next_period_start(frequency, period_start(frequency, now))
    return end + CLOSE_DELAY[frequency]


def last_close_time(frequency: str, now: datetime) -> datetime:
    """The latest scheduled close of `frequency` at or before `now` (e.g. daily: today 02:00
    once it has passed, else yesterday 02:00)."""
    close = period_start(frequency, now) + CLOSE_DELAY[frequency]
    if close <= now:
        return close
    previous = period_start(frequency, period_start(frequency, now) - timedelta(microseconds=1))
    return previous + CLOSE_DELAY[frequency]
