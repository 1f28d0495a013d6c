"""What a field checker of the usage and pre-send bodies reports: problem records, not
exceptions (the way beancount's validation returns error tuples), so one pass over a body
collects every problem and each is reported with its field and a code a client can act on."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias, TypeVar

from billing.chart import CUSTOMER_ID

_T = TypeVar("_T")


class Problem(NamedTuple):
    """One thing wrong with one field; the caller adds where (an event's index)."""

    field: str
    code: str
    message: str


Problems: TypeAlias = tuple[Problem, ...]
# What a field checker returns: the field's value (None when absent or refused) and its problems.
Checked: TypeAlias = tuple[_T | None, Problems]

MAX_SEGMENTS = 255
INVALID_SEGMENTS = (
    Problem("segments", "invalid_segments", f"segments must be 1 to {MAX_SEGMENTS}"),
)
"""A usage event's or a check's `segments`: an integer 1 to MAX_SEGMENTS (never a bool)."""


def is_segment_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SEGMENTS


_INVALID_USER_ID = (
    Problem("user_id", "invalid_user_id", "user_id must be 1-64 letters, digits, . _ -"),
)


def check_user_id(body: dict[str, Any]) -> Checked[str]:
    """The sender (a usage event's or a check's), shaped like a customer id."""
    user_id = body.get("user_id")
    if isinstance(user_id, str) and CUSTOMER_ID.match(user_id):
        return user_id, ()
    return None, _INVALID_USER_ID


# An amount on the wire (SPEC §3): a decimal string of at most 9 integer digits (no leading
# zeros, no sign: no amount a client sends may be negative) and at most 6 decimals, or a plain
# JSON number in that range. The OpenAPI document states the same pattern and bounds.
AMOUNT_PATTERN = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$"
POSITIVE_AMOUNT_PATTERN = (
    r"^([1-9][0-9]{0,8}(\.[0-9]{1,6})?|0\.(0{0,5}[1-9]|0{0,4}[1-9][0-9]|0{0,3}[1-9][0-9]{2}"
    r"|0{0,2}[1-9][0-9]{3}|0?[1-9][0-9]{4}|[1-9][0-9]{5}))$"
)
"""The same, above zero (the fields whose domain refuses zero say so with this pattern)."""
MAX_AMOUNT = Decimal("999999999.999999")
_AMOUNT_TEXT = re.compile(AMOUNT_PATTERN)


def amount_shape_problem(value: object) -> str | None:
    """Why `value` is not shaped like an amount the API accepts, or None when it is (or is not
    a string or number at all, which `ledger.money.parse_micros` refuses with its reason)."""
    if isinstance(value, str):
        if _AMOUNT_TEXT.fullmatch(value):
            return None
        return (
            f"{value!r} is not an amount: digits with at most 6 decimals, no sign, no leading"
            " zeros, at most 999999999.999999"
        )
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        if isinstance(value, Decimal) and not value.is_finite():
            return None
        if 0 <= value <= MAX_AMOUNT:
            return None
        return f"{value} is out of range: an amount is 0 to 999999999.999999"
    return None
