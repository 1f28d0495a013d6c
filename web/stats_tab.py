"""`?tab=stats`: the billing statistics of `billing_stats` for a range typed into the URL
(`from`/`to`, default the last 30 days up to now) as tables, and a plot of the daily billed
amount and messages: an SVG drawn on the server by pygal (`/admin/sms/stats/daily.svg`, shown
through `<img>`: the page's CSP forbids the inline `<style>` pygal writes) with its JavaScript
off and every `<script>` removed, its figures repeated in a table under it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pygal
from flask import Response, render_template, request
from flask.typing import ResponseReturnValue

from billing.invoicing.stats import DailyBilling, billing_stats, daily_billing
from infra.runtime import now, report
from ledger.money import MICROS_PER_UNIT, parse_micros
from web.auth import staff_only
from web.blueprints import admin_pages
from web.filters import Filters
from web.tabs import page_context, tab

DEFAULT_DAYS = 30
MAX_FILLED_DAYS = 366
"""Up to this many days the daily figures list every day, zeros included; a longer range lists
only the days that had invoices."""

# pygal appends to `sys.meta_path` a finder for its map plugins that has no `find_spec`: every
# later import that misses (Flask looks for its app's package so) then raises an ImportWarning.
# The pages draw no maps: take it out again.
sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, pygal.PluginImportFixer)]

TOP_USERS = 10
LATEST_FAILURES = 5


@dataclass(frozen=True, slots=True)
class Range:
    start: datetime
    end: datetime


def stats_range(args: Any) -> tuple[Filters, Range | None]:
    """The range of `from`/`to` (a date or an RFC 3339 time each); None with the problems
    recorded in the filters when they do not make one."""
    filters = Filters(args)
    start = filters.bound("from", "From")
    end = filters.bound("to", "To")
    if filters.problems:
        return filters, None
    try:
        end = end or now()
        start = start or end - timedelta(days=DEFAULT_DAYS)
    except OverflowError:
        filters.problems.append("The range must lie within the years 1 to 9999.")
        return filters, None
    if end <= start:
        filters.problems.append("To must be after From.")
        return filters, None
    return filters, Range(start, end)


def filled(days: list[DailyBilling], span: Range) -> list[DailyBilling]:
    """Every UTC day of the range, with zeros for the days without invoices (ranges of up to
    MAX_FILLED_DAYS days; a longer one keeps only the days found)."""
    first = span.start.replace(hour=0, minute=0, second=0, microsecond=0)
    count = -(-(span.end - first) // timedelta(days=1))  # the days the range touches
    if count > MAX_FILLED_DAYS:
        return days
    found = {d.day: d for d in days}
    out: list[DailyBilling] = []
    for n in range(count):
        day = first + timedelta(days=n)
        out.append(found.get(day) or DailyBilling(day, 0, 0, {}))
    return out


def currencies_of(days: Iterable[DailyBilling]) -> list[str]:
    return sorted({currency for d in days for currency in d.amounts_micros})


def as_micros(amounts: dict[str, str]) -> dict[str, int]:
    """The stats' decimal texts back to exact micro-units, so that the page writes them through
    the `money` filter with each currency's minor unit."""
    return {currency: parse_micros(text) for currency, text in amounts.items()}


def present(found: dict[str, Any]) -> dict[str, Any]:
    """`billing_stats`' figures with every amount as micro-units."""
    for entry in found["invoices"]["by_status"].values():
        entry["amounts"] = as_micros(entry["amounts"])
    found["average_invoice"] = as_micros(found["average_invoice"])
    failed = found["failed_payments"]
    failed["amounts"] = as_micros(failed["amounts"])
    for item in [*failed["latest"], *found["high_volume_users"], *found["usage_by_country"]]:
        item["amount"] = parse_micros(item["amount"])
    return found


@tab("stats", "Statistics", roles=("admin",))
def stats() -> ResponseReturnValue:
    filters, span = stats_range(request.args)
    context = page_context("Statistics", "stats")
    if span is None:
        return render_template("admin/stats.html", **context, filters=filters, span=None), 400

    def load(session: Any) -> tuple[dict[str, Any], list[DailyBilling]]:
        figures = billing_stats(
            session, span.start, span.end, top=TOP_USERS, latest=LATEST_FAILURES
        )
        return figures, daily_billing(session, span.start, span.end)

    figures, days = report(load)
    days = filled(days, span)
    return render_template(
        "admin/stats.html",
        **context,
        filters=filters,
        span=span,
        figures=present(figures),
        days=days,
        currencies=currencies_of(days),
        plot_args={k: v for k, v in filters.values.items() if k in ("from", "to")},
    )


def plot(days: list[DailyBilling]) -> str:
    """The daily billed amount per currency (left axis) and messages (right axis) as SVG text,
    with no JavaScript: pygal's own config script is removed too."""
    chart = pygal.Line(
        js=[],
        width=960,
        height=420,
        title="Daily billed amount and messages",
        x_title="Day (UTC)",
        x_label_rotation=30,
        show_minor_x_labels=False,
        x_labels_major_every=max(1, len(days) // 12),
        legend_at_bottom=True,
        include_x_axis=True,
        dots_size=2,
        no_data_text="No invoices in this range",
        value_formatter=_axis_label,
    )
    chart.add_xml_filter(_without_scripts)
    chart.x_labels = [d.day.strftime("%Y-%m-%d") for d in days]
    for currency in currencies_of(days):
        # Drawing only: pygal plots floats. The figures stay integer micro-units everywhere
        # else (the table under the plot writes them exactly).
        chart.add(
            f"Billed ({currency})",
            [float(Decimal(d.amounts_micros.get(currency, 0)) / MICROS_PER_UNIT) for d in days],
        )
    if days:
        chart.add("Messages", [d.messages for d in days], secondary=True)
    rendered: Any = chart.render(is_unicode=True)
    return str(rendered)


def _axis_label(value: float) -> str:
    """An axis figure short enough to read: 113, 8.07, 0.014."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _without_scripts(root: Any) -> Any:
    """pygal writes a `<script>` with its config even with `js=[]`: drop every one."""
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


@admin_pages.get("/stats/daily.svg")
@staff_only("admin")
def daily_plot() -> ResponseReturnValue:
    filters, span = stats_range(request.args)
    if span is None:
        return Response(" ".join(filters.problems) + "\n", 400, mimetype="text/plain")
    days = filled(report(lambda s: daily_billing(s, span.start, span.end)), span)
    return Response(plot(days), mimetype="image/svg+xml")
