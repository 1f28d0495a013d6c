"""JSON text with exact decimals (ledger/exact_json.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger.exact_json import dump_json


def test_a_decimal_is_written_as_its_exact_string() -> None:
    assert dump_json({"price": Decimal("0.000001"), "n": 1}) == '{"price":"0.000001","n":1}'


def test_a_value_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError, match="datetime is not JSON serialisable"):
        dump_json({"at": datetime(2026, 1, 1, tzinfo=UTC)})
