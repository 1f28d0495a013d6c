"""The benchmarks still run and still report what the suite reads from them: each one at a tiny
size, in its own process with its own throwaway PostgreSQL, as `python -m bench.suite` runs them.
(The HTTP and django-hordak benchmarks need wrk and a PyPI install; they are left to the suite.)
Figures are not judged here: benchmarks measure, tests assert behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.suite import figure

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def report(module: str, *args: str) -> str:
    finished = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return finished.stdout


def test_the_close_bench_bills_everything_on_a_ledger_with_history() -> None:
    out = report(
        "bench.close_period", "--transfers", "2000", "--customers", "20", "--history-days", "1"
    )
    assert figure(out, "median of", "s") > 0
    assert "| invoices created | 20 |" in out
    assert "| usage rows billed | 4,000; unbilled left: 0 |" in out
    assert "| ledger check | ok |" in out


def test_the_reconciliation_bench_finds_the_differences_it_planted() -> None:
    out = report("bench.reconcile", "--lines", "2000", "--customers", "200", "--repeat", "2")
    assert figure(out, "median of", "s") > 0
    assert "amount mismatches 10, missing in Sippy 10, missing in ledger 10" in out


def test_the_limits_and_the_posting_bench_report_every_figure_the_suite_reads() -> None:
    limits = report("bench.copy_limit", "--rows", "2000", "--singles", "200", "--repeat", "1")
    assert figure(limits, "COPY", "rows/s") > 0
    assert figure(limits, "one per transaction", "rows/s") > 0
    posting = report("bench.ledger_posting", "--batches", "2", "--singles", "32", "--grow", "10000")
    assert figure(posting, "balance read as_of p50 ms") > 0
    assert "passes 10,000 rows" in posting
