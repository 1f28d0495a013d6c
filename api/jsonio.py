"""JSON in and out: numbers are parsed as Decimal, never float, so money in a JSON number is
exact (SPEC §3); NaN and Infinity are refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask.json.provider import DefaultJSONProvider


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)


class ExactJSONProvider(DefaultJSONProvider):
    sort_keys = False

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)
