"""JSON in and out: numbers are parsed as Decimal, never float, so money in a JSON number is
exact (SPEC §3); NaN and Infinity are refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask.json.provider import DefaultJSONProvider


class NulCharacter(ValueError):
    """A JSON string holds a NUL: valid JSON, but nothing PostgreSQL can store or compare."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    """Parse a request body. Raises ValueError (JSONDecodeError is one) for anything that is not
    JSON the database can store: NaN, Infinity, or a NUL character in any string (NulCharacter)."""
    document = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    _refuse_nul(document)
    return document


def _refuse_nul(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise NulCharacter("NUL characters are not accepted")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class ExactJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)
