"""Reconciliation on PostgreSQL: N statement lines against N settlements of C customers.

    .venv/bin/python -m bench.reconcile [--lines 100000] [--customers 10000] [--repeat 3]

Starts a throwaway PostgreSQL as the tests do, provisions the customers through the service,
writes the month's invoices, charge attempts and settlement transfers with set-based SQL (shaped
as charging writes them, cached balances moved), then builds Sippy's statement as a CSV: every
settlement's debit, except that 1 % of the lines lose their reference (matched by account,
amount and time instead), 0.5 % are one cent off, 0.5 % of the settlements have no line and 0.5 %
of extra lines have no settlement. Timed: parsing the CSV plus the run (matching, storing every
item, proposals, totals) in one unit of work, `--repeat` times (all but the last rolled back);
the median is the figure.
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from bench.repeated import keyed_insert, load, provision, settle, timed_runs
from ledger.db import make_engine, make_session_factory, unit_of_work
from reconciliation.runs import reconcile
from reconciliation.statements import parse_statement_csv
from tests.pgserver import migrated_database

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)

TRANSFER_COLUMNS = (
    "id, journal_id, kind, idempotency_key, leg, fingerprint, debit_account_id,"
    " credit_account_id, amount, currency, effective_at, posted_at, metadata"
)
NEW_TRANSFERS = """
SELECT gen_random_uuid(), gen_random_uuid(), 'settlement',
       'settlement:smsledger:' || i.id || ':' || i.attempt, 0,
       md5(i.id::text),
       :clearing, r.id, i.amount, 'USD', i.at, i.at,
       jsonb_build_object('invoice_id', i.id::text,
                          'reference', 'smsledger:' || i.id || ':' || i.attempt)
FROM bench_invoices i
JOIN accounts r ON r.code = 'customer:' || i.customer || chr(58) || 'receivable'
"""
LOAD = (
    """
UPDATE customers SET sippy_account_id = (100000 + substr(user_id, 2)::int)::text;
CREATE TEMP TABLE bench_invoices AS
  SELECT gen_random_uuid() AS id, gen_random_uuid() AS attempt, 'c' || (g % :customers) AS customer,
         g, 10000 * (1 + g % 7) AS amount,
         :start + make_interval(secs => (g * 2592000.0 / :lines)) AS at
  FROM generate_series(1, :lines) g;
INSERT INTO invoices (id, customer_id, status, frequency, period_start, period_end, currency,
                      amount_micros, created_at, usage_micros, attempts)
SELECT id, customer, 'paid', 'daily', at - interval '1 day' - make_interval(secs => g),
       at - make_interval(secs => g), 'USD', amount, at, amount, 1
FROM bench_invoices;
INSERT INTO payment_attempts (id, invoice_id, attempt_no, reference, customer_id,
                              sippy_account_id, amount_micros, currency, status, started_at,
                              finished_at)
SELECT attempt, id, 1, 'smsledger:' || id || ':' || attempt, customer,
       (100000 + substr(customer, 2)::int)::text, amount, 'USD', 'accepted', at, at
FROM bench_invoices;
"""
    + keyed_insert(TRANSFER_COLUMNS, NEW_TRANSFERS)
    + """;
UPDATE balances b SET credits = b.credits + s.total
  FROM (SELECT credit_account_id, sum(amount) AS total FROM transfers GROUP BY 1) s
  WHERE b.account_id = s.credit_account_id AND b.slot = 0;
UPDATE balances SET debits = debits + (SELECT sum(amount) FROM transfers)
  WHERE account_id = :clearing AND slot = 0
"""
)


def statement_csv(connection: sa.Connection) -> tuple[bytes, int]:
    """Sippy's view of the month, with the differences described in the module docstring."""
    rows = connection.execute(
        sa.text(
            "SELECT a.reference, a.sippy_account_id, a.amount_micros, a.started_at"
            " FROM payment_attempts a ORDER BY a.started_at"
        )
    ).all()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["i_payment", "i_account", "payment_time", "amount", "currency", "notes"])
    lines = 0
    for n, (reference, account, micros, at) in enumerate(rows):
        if n % 200 == 7:
            continue  # missing in Sippy
        if n % 200 == 11:
            micros += 10_000  # a cent off
        notes = "" if n % 100 == 3 else reference
        amount = f"{micros / 1_000_000:.2f}" if micros % 10_000 == 0 else str(micros)
        writer.writerow([n + 1, account, at.isoformat(), amount, "USD", notes])
        lines += 1
        if n % 200 == 13:  # a debit Sippy made that the ledger never asked for
            writer.writerow([f"x{n}", account, at.isoformat(), "1.00", "USD", ""])
            lines += 1
    return out.getvalue().encode(), lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with migrated_database() as (url, pg_version):
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        with unit_of_work(sessions) as session:
            clearing = provision(session, args.customers, START, "sippy:clearing:USD")
            params = {"customers": args.customers, "lines": args.lines, "start": START}
            load(session, LOAD, {**params, "clearing": clearing})
        with engine.connect() as connection:
            raw, lines = statement_csv(connection)
        settle(engine)
        load_seconds = time.perf_counter() - started

        parse_times: list[float] = []

        def parse_and_reconcile(session: Session) -> dict[str, Any]:
            began = time.perf_counter()
            parsed = parse_statement_csv(raw, name="bench.csv")
            parse_times.append(time.perf_counter() - began)
            return dict(reconcile(session, parsed, "statement", START, END, "bench", END).totals)

        runs, totals = timed_runs(sessions, args.repeat, parse_and_reconcile)
        engine.dispose()

    median = statistics.median(runs)
    print(f"command: python -m bench.reconcile {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {pg_version}")
    print(f"load (setup, not measured): {load_seconds:.1f} s")
    print("| measure | figure |")
    print("|---|---|")
    print(
        f"| reconcile {lines:,} statement lines against {args.lines:,} settlements"
        f" ({args.customers:,} customers), median of {len(runs)} | {median:.2f} s"
        f" ({lines / median:,.0f} lines/s) |"
    )
    print(f"| each run (the last committed) | {', '.join(f'{r:.2f} s' for r in runs)} |")
    print(f"| of which parsing the CSV | {statistics.median(parse_times):.2f} s |")
    print(
        f"| items | matched {totals['matched']:,}, amount mismatches {totals['mismatched']:,},"
        f" missing in Sippy {totals['missing_in_sippy']:,}, missing in ledger"
        f" {totals['missing_in_ledger']:,} |"
    )


if __name__ == "__main__":
    main()
