"""Admin rate endpoints and `smsledger rates import`: the same rules for both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.client import ApiClient
from tests.scenarios import SAMPLE_RATES

pytestmark = pytest.mark.postgres


def test_importing_the_sample_sheet_twice_adds_it_once(api: ApiClient) -> None:
    runner = api.app.test_cli_runner()
    first = runner.invoke(args=["rates", "import", str(SAMPLE_RATES)])
    assert first.exit_code == 0 and "rates added: 19, already present: 0" in first.output
    second = runner.invoke(args=["rates", "import", str(SAMPLE_RATES)])
    assert "rates added: 0, already present: 19" in second.output
    listing = api.as_role("admin").get("/api/admin/rates", query_string={"plan": "wholesale"})
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
    api: ApiClient,
) -> None:
    admin = api.as_role("admin")
    rate = {"prefix": "447", "price": "0.0075", "currency": "USD", "country": "GB"}
    added = admin.post("/api/admin/rates", {"rates": [rate]})
    assert (added.status_code, added.json) == (201, {"added": 1, "unchanged": 0})
    changed = admin.post("/api/admin/rates", {"rates": [{**rate, "price": "0.008"}]})
    assert (changed.status_code, changed.json["error"]["code"]) == (422, "invalid_rate")
    newer = {**rate, "price": "0.008", "valid_from": "2026-12-01T00:00:00Z"}
    assert admin.post("/api/admin/rates", {"rates": [newer]}).json["added"] == 1
    bad = admin.post("/api/admin/rates", {"rates": [{**rate, "prefix": "x"}]})
    assert bad.status_code == 422 and bad.json["error"]["details"]["errors"][0]["index"] == 0
    active = admin.get(
        "/api/admin/rates", query_string={"active_at": "2026-12-02T00:00:00Z", "prefix": "447"}
    )
    assert [r["price"] for r in active.json["items"]] == ["0.008"]
    service = api.as_role("service")
    assert service.post("/api/admin/rates", {"rates": [rate]}).status_code == 403
    assert service.get("/api/admin/rates").status_code == 403
