"""Admin rate endpoints and `smsledger rates import`: the same rules for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.postgres

SAMPLE_RATES = Path(__file__).resolve().parents[2] / "examples" / "rates.csv"


def test_importing_the_sample_sheet_twice_adds_it_once(
    app_and_keys: tuple[Any, dict[str, str]],
) -> None:
    app, keys = app_and_keys
    runner = app.test_cli_runner()
    first = runner.invoke(args=["rates", "import", str(SAMPLE_RATES)])
    assert first.exit_code == 0 and "rates added: 19, already present: 0" in first.output
    second = runner.invoke(args=["rates", "import", str(SAMPLE_RATES)])
    assert "rates added: 0, already present: 19" in second.output
    listing = app.test_client().get(
        "/api/admin/rates",
        query_string={"plan": "wholesale"},
        headers={"Authorization": f"Bearer {keys['admin']}"},
    )
    assert listing.status_code == 200 and listing.json["total"] == 2
    assert {r["prefix"]: r["price"] for r in listing.json["items"]} == {
        "1": "0.0045",
        "447": "0.005",
    }


def test_a_bad_sheet_is_refused_whole_with_line_numbers(
    app_and_keys: tuple[Any, dict[str, str]], tmp_path: Path
) -> None:
    app, _ = app_and_keys
    sheet = tmp_path / "bad.csv"
    sheet.write_text("prefix,price,currency\n447,0.0075,USD\n33,-1,USD\n")
    result = app.test_cli_runner().invoke(args=["rates", "import", str(sheet)])
    assert result.exit_code == 1
    assert "line 3" in result.output


def test_admins_add_rate_versions_and_a_changed_price_needs_a_new_version(
    app_and_keys: tuple[Any, dict[str, str]],
) -> None:
    app, keys = app_and_keys
    client = app.test_client()
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    rate = {"prefix": "447", "price": "0.0075", "currency": "USD", "country": "GB"}
    added = client.post("/api/admin/rates", json={"rates": [rate]}, headers=admin)
    assert (added.status_code, added.json) == (201, {"added": 1, "unchanged": 0})
    changed = client.post(
        "/api/admin/rates", json={"rates": [{**rate, "price": "0.008"}]}, headers=admin
    )
    assert (changed.status_code, changed.json["error"]["code"]) == (422, "invalid_rate")
    newer = {**rate, "price": "0.008", "valid_from": "2026-12-01T00:00:00Z"}
    assert (
        client.post("/api/admin/rates", json={"rates": [newer]}, headers=admin).json["added"] == 1
    )
    bad = client.post("/api/admin/rates", json={"rates": [{**rate, "prefix": "x"}]}, headers=admin)
    assert bad.status_code == 422 and bad.json["error"]["details"]["errors"][0]["index"] == 0
    active = client.get(
        "/api/admin/rates",
        query_string={"active_at": "2026-12-02T00:00:00Z", "prefix": "447"},
        headers=admin,
    )
    assert [r["price"] for r in active.json["items"]] == ["0.008"]
    service = {"Authorization": f"Bearer {keys['service']}"}
    assert (
        client.post("/api/admin/rates", json={"rates": [rate]}, headers=service).status_code == 403
    )
    assert client.get("/api/admin/rates", headers=service).status_code == 403
