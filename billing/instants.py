"""RFC 3339 instants from text, as usage events and rate sheets carry them: an offset is
required (a time without one names no instant), and the result is UTC. Range bounds typed by
people (`--from 2026-11-01`) may also be plain dates: UTC midnight."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

_PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_instant(text: object) -> datetime | None:
    """The UTC instant `text` names, or None when it is not an RFC 3339 time with an offset."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None


def parse_bound(text: object) -> datetime | None:
    """A range bound: an RFC 3339 instant, or a plain `YYYY-MM-DD` date meaning its midnight
    UTC (as an accountant types a month: `--from 2026-11-01 --to 2026-12-01`)."""
    if isinstance(text, str) and _PLAIN_DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parse_instant(text)
