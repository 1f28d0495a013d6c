"""The operators' tools in deploy/ stay true to the app: the alert rules pass `promtool check
rules` and their unit tests (`promtool test rules`), every metric the rules, their tests and
the Grafana dashboard name is one the real app's `/metrics` exports, and every alert's runbook
link lands on a heading of docs/operations.md."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.client import ApiClient

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "smsledger.json"
OPERATIONS = ROOT / "docs" / "operations.md"
METRIC = re.compile(r"\bsmsledger_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, (
        "promtool is missing: `make test` installs it (Debian's `prometheus` package), or "
        "`apt-get install prometheus` yourself"
    )
    return subprocess.run(
        [found, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=300
    )


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_fires_when_it_should_and_stays_quiet_otherwise() -> None:
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_for_a_severity_a_summary_and_a_runbook_heading() -> None:
    headings = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    rules = alert_rules()
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert rules and {rule["alert"] for rule in rules} == tested
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        path, _, anchor = notes["runbook_url"].partition("#")
        assert path == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in headings, f"docs/operations.md has no heading for {rule['alert']}"


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = []
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            exprs.append(target["expr"])
    return exprs


def test_the_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(p["title"] for p in json.loads(DASHBOARD.read_text())["panels"])
    for needed in (
        "Ingestion rate",
        "Pre-send check latency",
        "Invoices by status",
        "Charge outcomes",
        "Sippy latency by method",
        "Job durations",
        "backlogs",
    ):
        assert needed in titles, needed
    assert any('endpoint="/api/usage/check"' in expr for expr in dashboard_exprs())


def exported_names(api: ApiClient) -> set[str]:
    """Every series name `/metrics` can answer, with each type's suffixes (a labelled metric
    nothing has counted yet is still announced by its HELP and TYPE lines)."""
    answer = api.anonymous().get("/metrics")
    assert answer.status_code == 200
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("_count", "_sum", "_created"),
    }
    names = set()
    for family in text_string_to_metric_families(answer.data.decode()):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.postgres
def test_every_metric_the_rules_and_the_dashboard_use_is_exported(api: ApiClient) -> None:
    exported = exported_names(api)
    used = {
        "alerts.yml": {n for rule in alert_rules() for n in METRIC.findall(rule["expr"])},
        "alerts_test.yml": set(METRIC.findall(RULE_TESTS.read_text())),
        "smsledger.json": {n for expr in dashboard_exprs() for n in METRIC.findall(expr)},
    }
    for where, names in used.items():
        assert names, where
        assert not names - exported, f"{where} uses metrics /metrics lacks: {names - exported}"
