"""The suite reads figures out of the benchmarks' printed tables and writes its summary into
docs/benchmarks.md between markers: both on reports shaped exactly as the benchmarks print."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suite import (
    END,
    START,
    check_figures,
    figure,
    growth_row,
    median_figure,
    peer_rates,
    write_summary,
)

HTTP = """command: python -m bench.usage_http --seconds 10
| measure | figure |
|---|---|
| single-event posts, 1 connection | 241 events/s |
| single-event posts, 16 connections | 539 events/s |
|   their latency p50 / p99 | 26.1 / 56.9 ms |
| pre-send check during those 16-connection posts, p50 / p99 | 15.2 / 36.4 ms |
| batches of 1,000 events, 2 clients | 10,768 events/s |
| trivial Flask endpoint, same gunicorn, 16 connections (the HTTP limit) | 1,700 requests/s |
"""

HORDAK = """| postings | smsledger | django-hordak 2.0.0 | ratio |
|---|---|---|---|
| 5,000 one per transaction | 591/s | 499/s | 1.2 times |
| 5,000 batches of 1,000 | 9,002/s | 625/s | 14.4 times |
"""


def test_a_figure_is_the_first_number_of_its_row_after_the_label() -> None:
    assert figure(HTTP, "single-event posts, 16 connections |", "events/s") == 539
    assert figure(HTTP, "single-event posts, 1 connection", "events/s") == 241
    assert figure(HTTP, "batches of 1,000 events", "events/s") == 10_768
    assert figure(HORDAK, "batches of", "/s") == 9_002
    assert check_figures(HTTP) == ("15.2", "36.4")
    assert peer_rates(HORDAK) == [499.0, 625.0]


def test_a_missing_figure_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="no row"):
        figure(HTTP, "no such row")
    with pytest.raises(ValueError, match="no figure"):
        figure(HTTP, "their latency", "events/s")
    with pytest.raises(ValueError):
        check_figures("| measure | figure |")


def test_repeated_reports_give_the_median() -> None:
    reports = [HTTP.replace("539 events", f"{n} events") for n in (900, 539, 100)]
    assert median_figure(reports, "single-event posts, 16 connections |", "events/s") == 539


def test_growth_shows_each_tenfold_steps_factor() -> None:
    row = growth_row("close", {1_000_000: 11.61, 10_000: 0.17, 100_000: 1.51})
    assert row == "| close | 10,000: 0.17, 100,000: 1.51, 1,000,000: 11.61 | 8.9, 7.7 |"


def test_the_summary_replaces_only_what_is_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\n## History\nkept\n")
    write_summary(doc, ["| new | table |"])
    write_summary(doc, ["| newer | table |"])
    assert doc.read_text() == (
        f"# Benchmarks\n\nintro\n\n{START}\n| newer | table |\n{END}\n\n## History\nkept\n"
    )
