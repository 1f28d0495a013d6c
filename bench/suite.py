"""Every benchmark in one run, side by side with the physical limits and the peer ledger
(issue 8): the summary table into `docs/benchmarks.md` (between its `bench.suite` markers), the
summary and every raw report into `docs/benchmarks-suite.md`.

    .venv/bin/python -m bench.suite [--quick] [--repeat 3]

Runs each benchmark module as its own process (each starts its own throwaway PostgreSQL the way
the tests do), reads the figures from the table it prints, and puts them next to the limits:
batch ingestion against `COPY` of the same rows, single posts against a do-nothing Flask endpoint
under the same gunicorn settings, posting against django-hordak, and the close and the
reconciliation at growing sizes (linear or worse). `--quick` divides every size by ten.

The throughput benchmarks (HTTP, django-hordak) run `--repeat` times and every figure is the
median of those runs; the limits, the close and the reconciliation repeat inside their own
process (three runs each, median reported). The WSGI server comparison (single posts against
each server's own do-nothing endpoint) and the pre-send check under an open-loop load (its p99
at half the posts' saturation, and at saturation; the reserving check beside it) run once each,
10 s per measurement (3 s with `--quick`). Every `WARNING` line of a report is repeated in the
summary.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks-suite.md"
SUMMARY = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench.suite: start -->", "<!-- bench.suite: end -->"
# Row labels of the HTTP report that the summary reads more than once.
SINGLE_16, TRIVIAL = "single-event posts, 16 connections |", "trivial Flask endpoint"
LIBRARIES = ("Flask", "SQLAlchemy", "psycopg2-binary", "gunicorn", "waitress", "granian")


def run(module: str, *args: str) -> str:
    """The benchmark's printed report (its stderr is left on the terminal)."""
    command = [sys.executable, "-m", module, *args]
    print("running:", " ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def figure(report: str, label: str, unit: str = "") -> float:
    """The first number after `label` in a report's table row."""
    row = next((line for line in report.splitlines() if label in line), None)
    if row is None:
        raise ValueError(f"no row {label!r} in the report")
    cells = row.split("|")[2:] if row.startswith("|") else [row]
    found = re.search(r"([\d,]+(?:\.\d+)?)\s*" + re.escape(unit), "|".join(cells))
    if found is None:
        raise ValueError(f"no figure for {label!r} in: {row}")
    return float(found.group(1).replace(",", ""))


def median_figure(reports: list[str], label: str, unit: str = "") -> float:
    """The median over repeated reports of one figure."""
    return statistics.median(figure(report, label, unit) for report in reports)


def growth_row(label: str, seconds: dict[int, float]) -> str:
    """Seconds per size and the factor of each tenfold step (10 or less: linear)."""
    sizes = sorted(seconds)
    figures = ", ".join(f"{n:,}: {seconds[n]:.2f}" for n in sizes)
    steps = ", ".join(f"{seconds[b] / seconds[a]:.1f}" for a, b in itertools.pairwise(sizes))
    return f"| {label} | {figures} | {steps} |"


def check_figures(report: str) -> tuple[str, str]:
    """The pre-send check's p50 and p99 under ingestion load, from a `usage_http` report."""
    found = re.search(r"during those 16-connection posts, p50 / p99 \| ([\d.]+) / ([\d.]+)", report)
    if found is None:
        raise ValueError("no pre-send check figures in the HTTP report")
    return found.group(1), found.group(2)


class ServerRow(NamedTuple):
    """One server of a `wsgi_servers` report."""

    name: str
    app: float
    trivial: float
    ratio: float
    p50: float
    p99: float
    errors: str


def server_rows(report: str) -> list[ServerRow]:
    """Every server's row of a `wsgi_servers` report, in its order (none: an error)."""
    found = re.findall(
        r"^\| (\S+) \| ([\d,]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \| (.*) \|$",
        report,
        re.M,
    )
    if not found:
        raise ValueError("no server rows in the WSGI server report")

    def number(text: str) -> float:
        return float(text.replace(",", ""))

    return [
        ServerRow(name, number(app), number(trivial), float(ratio), float(p50), float(p99), errors)
        for name, app, trivial, ratio, p50, p99, errors in found
    ]


NOT_AVAILABLE = "not available yet"


def latency_figures(report: str, label: str) -> tuple[float, float] | None:
    """p50 and p99 (ms) of the row `label` in a report; None when the row says the measure is
    not available yet (a missing row or figure is an error)."""
    row = next((line for line in report.splitlines() if label in line), None)
    if row is None:
        raise ValueError(f"no row {label!r} in the report")
    found = re.search(r"\| ([\d.]+) / ([\d.]+) ms", row)
    if found:
        return float(found.group(1)), float(found.group(2))
    if NOT_AVAILABLE in row:
        return None
    raise ValueError(f"no p50 / p99 for {label!r} in: {row}")


def warning_lines(reports: list[str]) -> list[str]:
    """The `WARNING` lines of the reports (errors, a schedule not kept), each once."""
    found = (line.strip() for r in reports for line in r.splitlines())
    return list(dict.fromkeys(line for line in found if line.startswith("WARNING")))


def check_rows(report: str) -> list[str]:
    """The pre-send check's table rows of the summary, from a `bench.open_loop` report."""
    half = figure(report, "posts offered at half saturation (open loop), achieved", "events/s")
    saturation = figure(report, "single-event posts, saturation", "events/s")
    rows = []
    for label, load, target in (
        (
            "pre-send check at half saturation",
            f"posts offered at half saturation (open loop, {half:,.0f} of {saturation:,.0f}"
            " events/s)",
            "p99 at most 10 ms",
        ),
        ("pre-send check at saturation", "posts at saturation (16 connections)", "none"),
        (
            "reserving pre-send check at half saturation",
            "reserving check, posts at half saturation",
            "none",
        ),
    ):
        figures = latency_figures(report, label)
        shown = f"{figures[0]:.1f} / {figures[1]:.1f} ms" if figures else NOT_AVAILABLE
        rows.append(f"| {load} | {shown} | {target} |")
    return rows


def peer_rates(report: str) -> list[float]:
    """django-hordak's rates (singles, batches) from a `vs_hordak` report."""
    return [float(x.replace(",", "")) for x in re.findall(r"\| ([\d,]+)/s \| [\d.]+ times", report)]


def versions(copy: str, hordak: str) -> str:
    """PostgreSQL's, the libraries' on the measured path, and the peer's, as one line."""
    server = re.search(r"PostgreSQL ([\d.]+)", copy)
    peer = re.search(r"peer: (.*) \(", hordak)
    ours = ", ".join(f"{name} {metadata.version(name)}" for name in LIBRARIES)
    return (
        f"PostgreSQL {server.group(1) if server else '?'}; {ours};"
        f" peer: {peer.group(1) if peer else '?'}"
    )


def write_summary(path: Path, summary: list[str]) -> None:
    """The summary into `path` between its markers, the rest of the file untouched (markers
    missing: appended at the end)."""
    text = path.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    path.write_text(before + START + "\n" + "\n".join(summary) + "\n" + END + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every size divided by ten")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each throughput benchmark (median)"
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    started = time.perf_counter()

    copy = run("bench.copy_limit", "--rows", str(100_000 // scale))
    https = [run("bench.usage_http", "--seconds", "10") for _ in range(args.repeat)]
    seconds = "3" if args.quick else "10"
    servers = run("bench.wsgi_servers", "--seconds", seconds)
    open_loop = run("bench.open_loop", "--seconds", seconds)
    hordaks = [
        run("bench.peer.vs_hordak", "--postings", str(5_000 // scale)) for _ in range(args.repeat)
    ]
    posting = run(
        "bench.ledger_posting",
        "--batches",
        "10",
        "--singles",
        "800",
        "--grow",
        str(1_000_000 // scale),
    )
    sizes = (10_000 // scale, 100_000 // scale, 1_000_000 // scale)
    closes = {
        n: run("bench.close_period", "--transfers", str(n), "--customers", str(max(n // 100, 10)))
        for n in sizes
    }
    reconciles = {
        n: run("bench.reconcile", "--lines", str(n), "--customers", str(max(n // 10, 10)))
        for n in sizes
    }

    copy_rate = figure(copy, "COPY", "rows/s")
    one_row_floor = figure(copy, "one per transaction", "rows/s")
    batch_rate = median_figure(https, "batches of 1,000 events", "events/s")
    single_16 = median_figure(https, SINGLE_16, "events/s")
    single_1 = median_figure(https, "single-event posts, 1 connection", "events/s")
    trivial = median_figure(https, TRIVIAL, "requests/s")
    check_p50 = statistics.median(float(check_figures(r)[0]) for r in https)
    check_p99 = statistics.median(float(check_figures(r)[1]) for r in https)
    ours_single = median_figure(hordaks, "one per transaction", "/s")
    ours_batch = median_figure(hordaks, "batches of", "/s")
    # Ratios of figures measured side by side in one process: the median of each run's ratio
    # (the machine's phases move both sides of a pair together).
    single_vs_trivial = statistics.median(
        figure(r, SINGLE_16, "events/s") / figure(r, TRIVIAL, "requests/s") for r in https
    )
    vs_peer = [
        statistics.median(figure(r, label, "/s") / peer_rates(r)[kind] for r in hordaks)
        for kind, label in ((0, "one per transaction"), (1, "batches of"))
    ]
    theirs = [statistics.median(peer_rates(report)[kind] for report in hordaks) for kind in (0, 1)]
    as_of = figure(posting, "balance read as_of p50 ms")
    posting_at = {
        int(mark.replace(",", "")): float(rate.replace(",", ""))
        for mark, rate in re.findall(r"passes ([\d,]+) rows \| ([\d,]+) entries/s", posting)
    }
    close_s = {n: figure(r, "median of", "s") for n, r in closes.items()}
    recon_s = {n: figure(r, "median of", "s") for n, r in reconciles.items()}

    rows = [
        (
            "usage batches of 1,000 over HTTP",
            f"{batch_rate:,.0f} events/s",
            f"COPY {copy_rate:,.0f} rows/s",
            batch_rate / copy_rate,
            "at least 0.25",
        ),
        (
            "single posts over HTTP, 16 connections",
            f"{single_16:,.0f} events/s",
            f"do-nothing endpoint {trivial:,.0f} req/s",
            single_vs_trivial,
            "none",
        ),
        (
            "posting, one per transaction",
            f"{ours_single:,.0f}/s",
            f"django-hordak {theirs[0]:,.0f}/s",
            vs_peer[0],
            "at least 5",
        ),
        (
            "posting, one per transaction",
            f"{ours_single:,.0f}/s",
            f"one-row INSERT + COMMIT {one_row_floor:,.0f}/s",
            ours_single / one_row_floor,
            "none (the floor)",
        ),
        (
            "posting, batches of 1,000",
            f"{ours_batch:,.0f}/s",
            f"django-hordak {theirs[1]:,.0f}/s",
            vs_peer[1],
            "at least 5",
        ),
    ]
    check_line = (
        f"Single posts over HTTP with 1 connection: {single_1:,.0f} events/s. "
        f"Pre-send check during the 16-connection posts: p50 / p99 {check_p50:.1f} /"
        f" {check_p99:.1f} ms. django-hordak against the one-row floor:"
        f" {theirs[0] / one_row_floor:.2f} (a ledger committing each posting alone can be at most"
        f" {one_row_floor / theirs[0]:.1f} times django-hordak here). "
    )
    server_table = [
        "| single posts, 16 connections, by WSGI server | events/s | do-nothing req/s | ratio"
        " | p50 / p99 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {r.name} | {r.app:,.0f} | {r.trivial:,.0f} | {r.ratio:.2f} |"
            f" {r.p50:.1f} / {r.p99:.1f} |"
            for r in server_rows(servers)
        ),
        "",
        "Servers: "
        + "; ".join(
            f"{name} `{command}`"
            for name, command in re.findall(r"^  (\S+): (.+)$", servers, re.M)
            if name in {r.name for r in server_rows(servers)}
        )
        + ".",
    ]
    check_table = [
        "| pre-send check beside single posts (bench.open_loop) | p50 / p99 | target |",
        "|---|---|---|",
        *check_rows(open_loop),
    ]
    reports = (
        copy,
        *https,
        servers,
        open_loop,
        *hordaks,
        posting,
        *closes.values(),
        *reconciles.values(),
    )
    warnings = warning_lines(list(reports))
    summary = [
        f"Latest suite run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC:"
        f" `python -m bench.suite{' --quick' if args.quick else ''}`"
        f" ({time.perf_counter() - started:,.0f} s); machine: {platform.machine()},"
        f" {os.cpu_count()} cores, python {platform.python_version()};"
        f" {versions(copy, hordaks[0])}. Every figure comes from this one run, each benchmark in"
        " its own process on its own throwaway PostgreSQL started as the tests start it; HTTP and"
        f" django-hordak figures are medians of {args.repeat} runs of their benchmark (their"
        " ratios the median of each run's ratio), the others medians of the benchmark's own"
        " repetitions. Raw reports: `docs/benchmarks-suite.md`.",
        "",
        "| measure | smsledger | reference | ratio | target |",
        "|---|---|---|---|---|",
        *(f"| {m} | {o} | {r} | {x:.2f} | {t} |" for m, o, r, x, t in rows),
        "",
        f"{check_line}Balance read `as_of`: p50 {as_of:.2f} ms.",
        "",
        *server_table,
        "",
        *check_table,
        "",
        "| growth (seconds) | sizes | each size ten times the last |",
        "|---|---|---|",
        growth_row("period close", close_s),
        growth_row("reconciliation", recon_s),
        "",
        "Batch posting (1,000 entries per unit of work) as the ledger grows: "
        + ", ".join(f"{rate:,.0f} entries/s at {mark:,} rows" for mark, rate in posting_at.items())
        + (
            f" (slowest / fastest: {min(posting_at.values()) / max(posting_at.values()):.2f})."
            if posting_at
            else "."
        ),
        "",
        "Sizes are the issue's (a tenth with `--quick`); a step factor of 10 or less is linear.",
        *(
            ["", "Warnings in the reports (see `docs/benchmarks-suite.md`):"]
            + [f"- {w}" for w in warnings]
            if warnings
            else []
        ),
    ]
    OUT.write_text(
        "\n".join(
            [
                "# Benchmark suite: the reports as printed",
                "",
                *summary,
                "",
                *(f"```\n{report.strip()}\n```\n" for report in reports),
            ]
        )
        + "\n"
    )
    write_summary(SUMMARY, summary)
    print("\n".join(summary))
    print(f"written: {SUMMARY.relative_to(ROOT)}, {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
