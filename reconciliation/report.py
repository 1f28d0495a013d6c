"""A run as accountants read it: JSON (the API's answer), CSV (one row per item), a readable HTML
page and a short text summary for the terminal."""

from __future__ import annotations

import csv
import io
from typing import Any

from jinja2 import Environment

from ledger.money import format_micros

CSV_COLUMNS = (
    "item",
    "kind",
    "match_rule",
    "reason",
    "sippy_account_id",
    "customer_id",
    "reference",
    "ledger_transfer_id",
    "ledger_amount",
    "ledger_currency",
    "ledger_at",
    "statement_line",
    "sippy_payment_id",
    "sippy_amount",
    "sippy_currency",
    "sippy_at",
    "proposal",
    "resolution",
)


def _time(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _money(micros: int | None) -> str | None:
    return format_micros(micros) if micros is not None else None


def present_item(item: Any) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "match_rule": item.match_rule,
        "reason": item.reason,
        "sippy_account_id": item.sippy_account_id,
        "customer_id": item.customer_id,
        "reference": item.reference,
        "ledger": None
        if item.ledger_transfer_id is None
        else {
            "transfer_id": str(item.ledger_transfer_id),
            "amount": _money(item.ledger_amount_micros),
            "currency": item.ledger_currency,
            "at": _time(item.ledger_at),
        },
        "sippy": None
        if item.statement_line is None
        else {
            "line": item.statement_line,
            "payment_id": item.sippy_payment_id,
            "amount": _money(item.sippy_amount_micros),
            "currency": item.sippy_currency,
            "at": _time(item.sippy_at),
        },
        "proposal": item.proposal,
        "resolution": None
        if item.resolution is None
        else {
            "action": item.resolution,
            "by": item.resolved_by,
            "at": _time(item.resolved_at),
            "note": item.resolution_note,
        },
    }


def present_run(run: Any, items: list[Any], accounts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": str(run.id),
        "status": run.status,
        "source": run.source,
        "from": _time(run.range_from),
        "to": _time(run.range_to),
        "window_seconds": run.window_seconds,
        "created_at": _time(run.created_at),
        "created_by": run.created_by,
        "inputs": run.inputs,
        "totals": run.totals,
        "accounts": accounts,
        "items": [present_item(item) for item in items],
    }


def as_csv(items: list[Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow(
            [
                item.id,
                item.kind,
                item.match_rule,
                item.reason,
                item.sippy_account_id,
                item.customer_id,
                item.reference,
                item.ledger_transfer_id,
                _money(item.ledger_amount_micros),
                item.ledger_currency,
                _time(item.ledger_at),
                item.statement_line,
                item.sippy_payment_id,
                _money(item.sippy_amount_micros),
                item.sippy_currency,
                _time(item.sippy_at),
                (item.proposal or {}).get("description"),
                item.resolution,
            ]
        )
    return out.getvalue()


_HTML = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Reconciliation {{ run.id }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.reconciled { color: #1a7f37; } .differences { color: #b42318; }
</style></head><body>
<h1>Reconciliation {{ run.from }} to {{ run.to }}</h1>
<p>{{ note }}</p>
<p class="{{ run.status }}"><strong>{{ run.status }}</strong> — run {{ run.id }} by
{{ run.created_by }} at {{ run.created_at }}, source {{ run.source }}
(SHA-256 {{ run.inputs.sha256 }}), time window {{ run.window_seconds }} s.</p>
<table><tr><th>currency</th><th>ledger</th><th>Sippy</th><th>difference</th></tr>
{% for c in run.totals.by_currency %}<tr><td>{{ c.currency }}</td><td class="n">{{ c.ledger }}</td>
<td class="n">{{ c.sippy }}</td><td class="n">{{ c.difference }}</td></tr>{% endfor %}</table>
<p>matched {{ run.totals.matched }} · amount mismatches {{ run.totals.mismatched }} ·
missing in Sippy {{ run.totals.missing_in_sippy }} ·
missing in ledger {{ run.totals.missing_in_ledger }}</p>
{% if run.accounts %}<h2>Accounts that differ</h2>
<table><tr><th>Sippy account</th><th>currency</th><th>ledger</th><th>Sippy</th>
<th>difference</th></tr>
{% for a in run.accounts %}<tr><td>{{ a.sippy_account_id }}</td><td>{{ a.currency }}</td>
<td class="n">{{ a.ledger }}</td><td class="n">{{ a.sippy }}</td>
<td class="n">{{ a.difference }}</td></tr>{% endfor %}</table>{% endif %}
<h2>Items</h2>
<table><tr><th>#</th><th>kind</th><th>reference</th><th>account</th><th>ledger</th><th>Sippy</th>
<th>reason</th><th>proposal</th><th>resolution</th></tr>
{% for i in run["items"] %}<tr><td>{{ i.id }}</td><td>{{ i.kind }}</td>
<td>{{ i.reference or "" }}</td>
<td>{{ i.sippy_account_id or "" }}</td>
<td class="n">{% if i.ledger %}{{ i.ledger.amount }} {{ i.ledger.currency }}{% endif %}</td>
<td class="n">{% if i.sippy %}{{ i.sippy.amount }} {{ i.sippy.currency }}{% endif %}</td>
<td>{{ i.reason or "" }}</td><td>{{ i.proposal.description if i.proposal else "" }}</td>
<td>{{ i.resolution.action if i.resolution else "" }}</td></tr>{% endfor %}</table>
</body></html>
"""
)


def as_html(report: dict[str, Any]) -> str:
    return _HTML.render(run=report, note=RANGE_NOTE.capitalize() + ".")


RANGE_NOTE = (
    "charges are compared by when they were made (Sippy's payment time, the settlement's"
    " effective time), not by the period an invoice billed"
)
"""Said with every report: an invoice's own period holds none of its charge (it is charged
after the period closes)."""


def as_text(report: dict[str, Any]) -> str:
    totals = report["totals"]
    lines = [
        f"reconciliation {report['id']}: {report['status']} ({report['from']} to {report['to']})",
        f"  {RANGE_NOTE}",
        *(
            f"  {c['currency']}: ledger {c['ledger']}, sippy {c['sippy']},"
            f" difference {c['difference']}"
            for c in totals["by_currency"]
        ),
        f"  matched {totals['matched']}, amount mismatches {totals['mismatched']},"
        f" missing in sippy {totals['missing_in_sippy']},"
        f" missing in ledger {totals['missing_in_ledger']}",
    ]
    for item in report["items"]:
        if item["kind"] == "matched":
            continue
        side = item["sippy"] or item["ledger"]
        lines.append(
            f"  #{item['id']} {item['kind']}: {item['reference'] or '-'} account"
            f" {item['sippy_account_id'] or '-'} {side['amount']} {side['currency']}"
            f" — {item['reason']}; proposal: {(item['proposal'] or {}).get('description')}"
        )
    return "\n".join(lines) + "\n"
