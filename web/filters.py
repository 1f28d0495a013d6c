"""Filters typed into a page's URL, read leniently: a bad value is dropped with a message the
page shows next to the list (never a 500), and the rest of the filters still apply."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billing.instants import parse_bound

PAGE_SIZE = 50
WHOLE = re.compile(r"[0-9]{1,9}")
"""A whole number as people type it: ASCII digits only (`str.isdigit` also takes "²")."""
MAX_PAGE = 100_000


@dataclass
class Filters:
    """The values read so far and the problems found, in the order of the form."""

    args: Mapping[str, str]
    values: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def text(self, name: str) -> str:
        return (self.args.get(name) or "").strip()

    def choice(self, name: str, allowed: Iterable[str], label: str) -> str | None:
        value = self.text(name)
        options = list(allowed)
        if not value:
            return None
        if value not in options:
            self.problems.append(f"{label} must be one of {', '.join(options)}.")
            return None
        self.values[name] = value
        return value

    def matching(self, name: str, pattern: re.Pattern[str], label: str) -> str | None:
        value = self.text(name)
        if not value:
            return None
        if not pattern.match(value):
            self.problems.append(f"{label} may hold only letters, digits, dot, dash, underscore.")
            return None
        self.values[name] = value
        return value

    def bound(self, name: str, label: str) -> datetime | None:
        value = self.text(name)
        if not value:
            return None
        moment = parse_bound(value)
        if moment is None:
            self.problems.append(f"{label} must be a date (YYYY-MM-DD) or an RFC 3339 time.")
            return None
        self.values[name] = value
        return moment

    def page(self) -> int:
        value = self.text("page")
        if not value:
            return 1
        if not WHOLE.fullmatch(value) or not 1 <= int(value) <= MAX_PAGE:
            self.problems.append(f"Page must be a whole number from 1 to {MAX_PAGE}.")
            return 1
        return int(value)


def first_row(number: int) -> int:
    """The offset of page `number` (from 1)."""
    return (number - 1) * PAGE_SIZE


def listing(found: Any, number: int, filters: Filters) -> dict[str, Any]:
    """What a paginated list's template takes: the page's rows, the total, the pager and the
    filters (for their values and problems)."""
    return {
        "rows": found.items,
        "total": found.total,
        "pager": pages(found.total, number),
        "filters": filters,
    }


def pages(total: int, current: int) -> dict[str, int | None]:
    """Previous/next page numbers for a list of `total` rows (None at either end)."""
    last = max(1, -(-total // PAGE_SIZE))
    return {
        "current": current,
        "last": last,
        "previous": current - 1 if current > 1 else None,
        "next": current + 1 if current < last else None,
    }


def page_url(number: int) -> str:
    """This list's URL at page `number`, its other query arguments kept (as a query string:
    never as `url_for` options, which `?_external=` or `?_method=` would otherwise steer)."""
    from urllib.parse import urlencode

    from flask import request

    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "page"]
    return f"{request.script_root}{request.path}?{urlencode([*kept, ('page', str(number))])}"
