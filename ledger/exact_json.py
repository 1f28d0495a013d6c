"""JSON text with exact decimals: what the engine stores in JSON columns and what webhooks
send. A `Decimal` is written as its string, so no metadata number ever passes through float."""

from __future__ import annotations

import json
from decimal import Decimal


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_json(value: object) -> str:
    """Compact JSON text of `value`; `Decimal` as its exact string."""
    return json.dumps(value, default=_json_default, separators=(",", ":"))
