"""Server time of the pages on PostgreSQL: the billing tab's first page with 100,000 invoices,
and the end user's billing widget.

    .venv/bin/python -m bench.pages [--invoices 100000] [--customers 10000] [--requests 300]

Starts a throwaway PostgreSQL as the tests do, provisions the customers through the service and
writes the invoices with set-based SQL over the last 90 days (mostly paid, 2 % pending, 1 %
failed). Timed in process, through the WSGI app (routing, session lookup, the service queries,
Jinja rendering, headers; no socket): `--requests` GETs of each page after a warm-up, p50 and
p99. Beside each, its floor measured in the same run: the same service calls in one unit of
work without the page around them (the database's part), so the ratio shows what the page adds.
Targets: billing tab p99 <= 100 ms, widget p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.repeated import load, provision
from billing.access.api_keys import create_key
from billing.access.user_tokens import mint_user_token
from billing.invoicing.invoices import list_invoices
from billing.invoicing.stats import billing_overview
from billing.invoicing.summaries import billing_summary
from infra.config import Config
from ledger.db import run_in_transaction, unit_of_work
from tests.pgserver import migrated_database

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
SECRET = "a-user-token-secret-for-the-bench!"

LOAD = """
INSERT INTO invoices (id, customer_id, status, frequency, period_start, period_end, currency,
                      amount_micros, created_at, usage_micros, attempts, message_count, segments)
SELECT gen_random_uuid(), 'c' || (g % :customers),
       CASE WHEN g % 100 < 2 THEN 'pending' WHEN g % 100 = 2 THEN 'failed' ELSE 'paid' END,
       'daily', at - interval '1 day', at, 'USD', 10000 * (1 + g % 7), at,
       10000 * (1 + g % 7), 1, 1 + g % 7, 1 + g % 7
FROM (SELECT g, :now - make_interval(secs => (g * 7776000.0 / :invoices)) AS at
      FROM generate_series(1, :invoices) g) s;
ANALYZE invoices
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(requests: int, work: Callable[[], Any]) -> list[float]:
    for _ in range(max(10, requests // 10)):  # warm-up: pools, caches, templates compiled
        work()
    samples = []
    for _ in range(requests):
        began = time.perf_counter()
        work()
        samples.append(time.perf_counter() - began)
    return samples


def page_getter(client: Any, path: str) -> Callable[[], Any]:
    def get() -> Any:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        return answer

    return get


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    from api import create_app

    with migrated_database() as (url, pg_version):
        config = Config(database_url=url, user_token_secret=SECRET, secret_key="bench" * 8)
        app = create_app(config, clock=lambda: NOW)
        state = app.extensions["smsledger"]
        started = time.perf_counter()
        with unit_of_work(state.sessions) as session:
            provision(session, args.customers, NOW - timedelta(days=91), "sippy:clearing:USD")
            load(
                session, LOAD, {"customers": args.customers, "invoices": args.invoices, "now": NOW}
            )
            key, _ = create_key(session, "admin", "bench", NOW)
        load_seconds = time.perf_counter() - started

        staff = app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', staff.get("/admin/sms").text)
        assert token is not None
        staff.post("/admin/sms/sign-in", data={"api_key": key, "csrf_token": token.group(1)})
        user = app.test_client()
        user_token = mint_user_token(SECRET, "c7", datetime.now(UTC), timedelta(hours=1))
        assert user.get(f"/widget/billing?token={user_token}").status_code == 303

        month = datetime(NOW.year, NOW.month, 1, tzinfo=UTC)
        figures = {
            "billing tab, first page (50 of all invoices + overview)": (
                timed(args.requests, page_getter(staff, "/admin/sms?tab=billing")),
                timed(
                    args.requests,
                    lambda: run_in_transaction(
                        state.sessions,
                        lambda s: (list_invoices(s, limit=50), billing_overview(s, month, NOW)),
                    ),
                ),
            ),
            "billing widget": (
                timed(args.requests, page_getter(user, "/widget/billing")),
                timed(
                    args.requests,
                    lambda: run_in_transaction(
                        state.sessions,
                        lambda s: billing_summary(s, "c7", config.billing, NOW),
                    ),
                ),
            ),
        }
        state.engine.dispose()

    print(f"command: python -m bench.pages {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, python {platform.python_version()},")
    print(f"  PostgreSQL {pg_version}")
    print(f"load (setup, not measured): {load_seconds:.1f} s; {args.invoices:,} invoices")
    print("| page | p50 | p99 | floor p50 (service calls alone) | page / floor (p50) |")
    print("|---|---|---|---|---|")
    for label, (page, floor) in figures.items():
        p50, p99, f50 = (
            statistics.median(page) * 1e3,
            percentile(page, 0.99) * 1e3,
            statistics.median(floor) * 1e3,
        )
        print(f"| {label} | {p50:.1f} ms | {p99:.1f} ms | {f50:.1f} ms | {p50 / f50:.2f} |")


if __name__ == "__main__":
    main()
