"""The browsable docs page (served from packaged assets, no CDN) and `/metrics` in Prometheus'
format with the counts SPEC §7 asks for."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.client import ApiClient, Caller

pytestmark = pytest.mark.postgres


def samples(client: Caller) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    found = {}
    for family in text_string_to_metric_families(answer.data.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_docs_page_loads_its_assets_from_this_server(api: ApiClient) -> None:
    client = api.anonymous()
    page = client.get("/docs")
    assert page.status_code == 200 and b"/openapi.json" in page.data
    sources = re.findall(rb'(?:src|href)="([^"]+)"', page.data)
    assert sources and not [s for s in sources if s.startswith((b"http:", b"https:", b"//"))]
    for source in sources:
        with client.get(source.decode()) as asset:  # a file response: close it
            assert asset.status_code == 200, source
    assert client.get("/docs/assets/../../pyproject.toml").status_code == 404


def test_metrics_count_requests_usage_and_invoices(api: ApiClient) -> None:
    before = samples(api.anonymous())
    event = {
        "message_id": "metrics-1",
        "user_id": "42",
        "destination": "+12025550123",
        "segments": 1,
        "cost": "0.01",
    }
    service = api.as_role("service")
    assert service.post("/api/usage", event).status_code == 201
    assert service.post("/api/usage", event).status_code == 200
    after = samples(api.anonymous())

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("smsledger_usage_events_total", outcome="posted") == 1
    assert grew("smsledger_usage_events_total", outcome="duplicate") == 1
    assert (
        grew("smsledger_http_requests_total", method="POST", endpoint="/api/usage", status="201")
        == 1
    )
    assert (
        grew("smsledger_http_request_duration_seconds_count", method="POST", endpoint="/api/usage")
        == 2
    )
    assert after[("smsledger_invoices", (("status", "pending"),))] == 0
