"""The suite reads figures out of the benchmarks' printed tables and writes its summary into
docs/benchmarks.md between markers: both on reports shaped exactly as the benchmarks print."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suite import (
    END,
    START,
    ServerRow,
    check_figures,
    check_rows,
    figure,
    growth_row,
    latency_figures,
    median_figure,
    peer_rates,
    server_rows,
    warning_lines,
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

SERVERS = """command: python -m bench.wsgi_servers --seconds 10
servers:
  gunicorn-gthread-2x8: gunicorn -w 2 -k gthread --threads 8
  granian-2x8: granian --interface wsgi --workers 2 --blocking-threads 8 --backpressure 8
transfers at the end: 40213; ledger check: ok
| server | app events/s | do-nothing req/s | ratio | app p50 / p99 ms | errors |
|---|---|---|---|---|---|
| gunicorn-gthread-2x8 | 615 | 3,282 | 0.19 | 23.4 / 49.2 | none |
| granian-2x8 | 1,073 | 13,494 | 0.08 | 11.7 / 23.9 | app: 3 non-2xx |
highest app rate: granian-2x8; highest ratio to its do-nothing rate: gunicorn-gthread-2x8
WARNING errors: granian-2x8: app: 3 non-2xx
"""

OPEN_LOOP = """command: python -m bench.open_loop --seconds 10
  posts at half saturation: offered 235.7/s, achieved 234.8/s (-0.4%); 0 of 2412 slots late
| measure | figure |
|---|---|
| single-event posts, saturation (16 connections) | 471 events/s |
| posts offered at half saturation (open loop), achieved | 235 events/s (offered 236/s) |
| pre-send check at half saturation, p50 / p99 | 7.6 / 24.2 ms |
| pre-send check at saturation, p50 / p99 | 12.4 / 42.4 ms |
| reserving pre-send check at half saturation, p50 / p99 | not available yet (422) |
|   posts at half saturation, their latency p50 / p99 | 6.1 / 19.0 ms |
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


def test_each_servers_row_is_read_with_its_errors() -> None:
    assert server_rows(SERVERS) == [
        ServerRow("gunicorn-gthread-2x8", 615, 3_282, 0.19, 23.4, 49.2, "none"),
        ServerRow("granian-2x8", 1_073, 13_494, 0.08, 11.7, 23.9, "app: 3 non-2xx"),
    ]
    with pytest.raises(ValueError, match="no server rows"):
        server_rows(HTTP)


def test_the_checks_latency_is_read_and_a_measure_not_there_yet_says_so() -> None:
    assert latency_figures(OPEN_LOOP, "pre-send check at half saturation") == (7.6, 24.2)
    assert latency_figures(OPEN_LOOP, "pre-send check at saturation") == (12.4, 42.4)
    assert latency_figures(OPEN_LOOP, "reserving pre-send check") is None
    with pytest.raises(ValueError, match="no row"):
        latency_figures(HTTP, "pre-send check at saturation")
    with pytest.raises(ValueError, match="no p50 / p99"):
        latency_figures(OPEN_LOOP, "single-event posts, saturation")
    assert figure(OPEN_LOOP, "single-event posts, saturation", "events/s") == 471
    assert figure(OPEN_LOOP, "half saturation (open loop), achieved", "events/s") == 235


def test_the_summary_rows_of_the_check_name_the_load_and_the_target() -> None:
    assert check_rows(OPEN_LOOP) == [
        "| posts offered at half saturation (open loop, 235 of 471 events/s) | 7.6 / 24.2 ms"
        " | p99 at most 10 ms |",
        "| posts at saturation (16 connections) | 12.4 / 42.4 ms | none |",
        "| reserving check, posts at half saturation | not available yet | none |",
    ]


def test_every_warning_of_the_reports_is_collected_once() -> None:
    assert warning_lines([SERVERS, OPEN_LOOP, SERVERS]) == [
        "WARNING errors: granian-2x8: app: 3 non-2xx"
    ]
    assert warning_lines([HTTP]) == []
