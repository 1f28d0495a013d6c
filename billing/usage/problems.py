"""What a field checker of the usage and pre-send bodies reports: problem records, not
exceptions (the way beancount's validation returns error tuples), so one pass over a body
collects every problem and each is reported with its field and a code a client can act on."""

from __future__ import annotations

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

_INVALID_USER_ID = (
    Problem("user_id", "invalid_user_id", "user_id must be 1-64 letters, digits, . _ -"),
)


def check_user_id(body: dict[str, Any]) -> Checked[str]:
    """The sender (a usage event's or a check's), shaped like a customer id."""
    user_id = body.get("user_id")
    if isinstance(user_id, str) and CUSTOMER_ID.match(user_id):
        return user_id, ()
    return None, _INVALID_USER_ID
