"""Period close on PostgreSQL: N usage transfers across C customers closed in one daily cycle.

    .venv/bin/python -m bench.close_period [--transfers 1000000] [--customers 10000]
                                           [--history-days 0]

Starts a throwaway PostgreSQL as the tests do, provisions the customers through the service
(accounts, counters), then loads the day's usage with one set-based SQL statement shaped exactly
like ingestion's rows (transfers with their metadata, cached balances, usage counters), and
times `close_periods(..., "daily", ...)`: `--repeat` closes of the same data, all but the last
rolled back, the last committed (its commit timed); the median is the figure. `ledger check`
runs afterwards. `--history-days K` first loads and closes K earlier days of the same usage, so
the measured close runs on a ledger with billed history, as in production.
Loading through HTTP would measure ingestion, which `bench.usage_http` does.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bench.repeated import keyed_insert, load, provision, settle, timed_runs
from billing.invoicing.closing import close_periods
from billing.settings import BillingDefaults
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.pgserver import migrated_database

DAY = datetime(2026, 11, 23, tzinfo=UTC)
CLOSE_AT = datetime(2026, 11, 24, 2, tzinfo=UTC)

TRANSFER_COLUMNS = (
    "id, journal_id, kind, idempotency_key, leg, fingerprint, debit_account_id,"
    " credit_account_id, amount, currency, effective_at, posted_at, metadata"
)
NEW_TRANSFERS = """
SELECT u, u, 'usage', 'bench-' || g, 0, md5(g::text), c.account_id, :revenue,
       7000 * (1 + g % 3), 'USD',
       :day + make_interval(secs => (g % 86400)), :day + make_interval(secs => (g % 86400) + 1),
       jsonb_build_object('user_id', c.customer_id, 'destination', '+447400123456',
                          'country', CASE WHEN g % 5 = 0 THEN 'US' ELSE 'GB' END,
                          'prefix', CASE WHEN g % 5 = 0 THEN '1' ELSE '4474' END,
                          'segments', 1 + g % 3, 'rate_id', 1, 'unit_price', 7000,
                          'priced_by', 'rate')
FROM (SELECT g,
             -- Shaped like the ledger's ids: UUIDv7, the posting time's milliseconds first
             -- (PostgreSQL 15 has no uuidv7()); rows arrive in posting order, as in production.
             (lpad(to_hex(((extract(epoch FROM :day) + g % 86400 + 1) * 1000)::bigint), 12, '0')
              || '7' || substr(md5(g::text), 1, 3) || '8' || substr(md5(g::text), 4, 15))::uuid AS u
      FROM generate_series(:first + 1, :first + :transfers) g ORDER BY g % 86400, g) s
JOIN bench_customers c ON c.n = s.g % :customers
"""
LOAD = (
    """
CREATE TEMP TABLE IF NOT EXISTS bench_customers AS
  SELECT row_number() OVER (ORDER BY a.id) - 1 AS n, a.id AS account_id, a.customer_id
  FROM accounts a WHERE a.code LIKE 'customer%unbilled';
"""
    + keyed_insert(TRANSFER_COLUMNS, NEW_TRANSFERS)
    + """;
CREATE TEMP TABLE bench_day AS
  SELECT debit_account_id, amount, metadata, effective_at FROM transfers
  WHERE kind = 'usage' AND effective_at >= :day AND effective_at < :day + interval '1 day';
UPDATE balances b SET debits = b.debits + s.total
  FROM (SELECT debit_account_id, sum(amount) AS total FROM bench_day GROUP BY 1) s
  WHERE b.account_id = s.debit_account_id AND b.slot = 0;
UPDATE balances SET credits = credits + (SELECT sum(amount) FROM bench_day)
  WHERE account_id = :revenue AND slot = 0;
UPDATE usage_counters u SET unbilled_messages = s.messages, unbilled_segments = s.segments,
       oldest_unbilled_at = s.oldest
  FROM (SELECT metadata->>'user_id' AS customer, count(*) AS messages,
               sum((metadata->>'segments')::int) AS segments, min(effective_at) AS oldest
        FROM bench_day GROUP BY 1) s
  WHERE u.customer_id = s.customer;
DROP TABLE bench_day;
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transfers", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="closes timed on the same data (all but the last rolled back)",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=0,
        help="days of the same usage loaded and closed before the measured one",
    )
    args = parser.parse_args()

    with migrated_database() as (url, pg_version):
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        started = time.perf_counter()
        with unit_of_work(sessions) as session:
            revenue = provision(session, args.customers, DAY, "revenue:sms:USD")
        params = {"transfers": args.transfers, "customers": args.customers, "revenue": revenue}
        # Earlier days, loaded and closed (committed) the same way: billed history in
        # `transfers` and `invoice_usage`, as a ledger in production has.
        for back in range(args.history_days, 0, -1):
            day = DAY - timedelta(days=back)
            with unit_of_work(sessions) as session:
                load(session, LOAD, {**params, "day": day, "first": back * args.transfers})
            with unit_of_work(sessions) as session:
                close_periods(session, "daily", day + (CLOSE_AT - DAY), BillingDefaults())
        with unit_of_work(sessions) as session:
            load(session, LOAD, {**params, "day": DAY, "first": 0})
        settle(engine)
        load_seconds = time.perf_counter() - started

        runs, summary = timed_runs(
            sessions,
            args.repeat,
            lambda session: close_periods(session, "daily", CLOSE_AT, BillingDefaults()),
        )
        close_seconds = statistics.median(runs)

        with unit_of_work(sessions) as session:
            problems = check_ledger(session)
            billed = session.execute(sa.text("SELECT count(*) FROM invoice_usage")).scalar_one()
            unbilled = session.execute(
                sa.text(
                    "SELECT coalesce(sum(b.debits - b.credits), 0) FROM balances b"
                    " JOIN accounts a ON a.id = b.account_id WHERE a.code LIKE '%unbilled'"
                )
            ).scalar_one()
        engine.dispose()

    print(f"command: python -m bench.close_period {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {pg_version}")
    print(f"load (setup, not measured): {load_seconds:.1f} s")
    if args.history_days:
        print(f"history: {args.history_days} earlier day(s) of the same usage, closed and billed")
    print("| measure | figure |")
    print("|---|---|")
    print(
        f"| close {args.transfers:,} usage transfers across {args.customers:,} customers,"
        f" median of {len(runs)} | {close_seconds:.2f} s"
        f" ({args.transfers / close_seconds:,.0f} transfers/s) |"
    )
    print(f"| each run (the last committed) | {', '.join(f'{r:.2f} s' for r in runs)} |")
    print(f"| invoices created | {summary.invoices_created:,} |")
    print(f"| usage rows billed | {billed:,}; unbilled left: {unbilled} |")
    print(f"| ledger check | {'ok' if not problems else problems[:3]} |")


if __name__ == "__main__":
    main()
