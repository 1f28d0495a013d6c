"""RFC 3339 instants from text, as usage events and rate sheets carry them: an offset is
required (a time without one names no instant), and the result is UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_instant(text: object) -> datetime | None:
    """The UTC instant `text` names, or None when it is not an RFC 3339 time with an offset."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None
