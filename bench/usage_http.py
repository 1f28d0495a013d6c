"""Usage ingestion and the pre-send check through the real HTTP stack (gunicorn) on PostgreSQL.

    .venv/bin/python -m bench.usage_http [--seconds 15] [--batches 30]

Starts a throwaway PostgreSQL as the tests do, migrates it, loads `examples/rates.csv`, starts
gunicorn (2 workers x 8 threads, the machine has 2 cores) and drives it with `wrk` (installed
from Debian's packages when missing and running as root):
- single-event posts with 1 and with 16 connections;
- the pre-send check's latency (p50/p99) from 2 more connections *while* 16 connections post;
- batches of 1,000 events from 2 concurrent Python clients.
Every request must answer 2xx; the ledger is checked at the end (`ledger check`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid

import requests
import sqlalchemy as sa

from bench.http_load import (
    CHECK,
    CUSTOMERS,
    GUNICORN,
    POST_ONE,
    ROOT,
    TRIVIAL_POST,
    ensure_wrk,
    run_wrk,
    start_gunicorn,
    stop_server,
    warm_up,
)
from billing.access.api_keys import create_key
from billing.usage.rate_sheets import add_rates, parse_sheet
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work
from tests.conftest import NOW
from tests.pgserver import migrated_database


def measure_trivial(wrk: str, options: str, seconds: int) -> dict[str, float]:
    """The same gunicorn settings serving a Flask endpoint that does nothing: the HTTP limit."""
    gunicorn, base = start_gunicorn(options, "bench.trivial_app:app", dict(os.environ), "/ok")
    try:
        return run_wrk(wrk, TRIVIAL_POST, base, 16, seconds)
    finally:
        stop_server(gunicorn, base)


def post_batches(base: str, key: str, batches: int, clients: int) -> float:
    def client(index: int) -> None:
        session = requests.Session()
        for n in range(batches // clients):
            events = [
                {
                    "message_id": f"batch-{index}-{n}-{k}",
                    "user_id": f"c{k % CUSTOMERS}",
                    "destination": "+447400123456",
                    "segments": 1,
                }
                for k in range(1000)
            ]
            response = session.post(
                f"{base}/api/usage",
                data=json.dumps({"events": events}),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                timeout=120,
            )
            assert response.status_code == 201, response.text[:300]

    started = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (batches // clients) * clients * 1000 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument(
        "--gunicorn", default=GUNICORN, help=f"gunicorn worker options (default: {GUNICORN})"
    )
    args = parser.parse_args()
    wrk = ensure_wrk()

    gunicorn = None
    with migrated_database() as (url, pg_version):
        try:
            engine = make_engine(url)
            sessions = make_session_factory(engine)
            with unit_of_work(sessions) as session:
                add_rates(session, parse_sheet((ROOT / "examples" / "rates.csv").read_text()), NOW)
                key, _ = create_key(session, "service", "bench", NOW)

            trivial = measure_trivial(wrk, args.gunicorn, args.seconds)
            env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
            gunicorn, base = start_gunicorn(args.gunicorn, "wsgi:app", env, "/healthz")
            warm_up(base, key)

            values = {"run": uuid.uuid4().hex[:8], "key": key, "customers": CUSTOMERS}
            single_1 = run_wrk(wrk, POST_ONE % values, base, 1, args.seconds)
            values["run"] = uuid.uuid4().hex[:8]
            results: dict[str, dict[str, float]] = {}

            def checks() -> None:
                time.sleep(1)
                results["check"] = run_wrk(wrk, CHECK % values, base, 2, args.seconds - 2)

            checker = threading.Thread(target=checks)
            checker.start()
            single_16 = run_wrk(wrk, POST_ONE % values, base, 16, args.seconds)
            checker.join()
            check_idle = run_wrk(wrk, CHECK % values, base, 2, 5)
            batch_rate = post_batches(base, key, args.batches, 2)

            with unit_of_work(sessions) as session:
                problems = check_ledger(session)
                rows = session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
            engine.dispose()
        finally:
            if gunicorn is not None:
                stop_server(gunicorn, base)

    print(f"command: python -m bench.usage_http {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores,")
    print(f"  python {platform.python_version()}, PostgreSQL {pg_version},")
    print(f"  gunicorn {args.gunicorn}, wrk on the same machine")
    print(f"transfers at the end: {rows}; ledger check: {'ok' if not problems else problems[:3]}")
    check = results["check"]
    rows_out = [
        ("single-event posts, 1 connection", f"{single_1['rps']:,.0f} events/s"),
        ("single-event posts, 16 connections", f"{single_16['rps']:,.0f} events/s"),
        (
            "  their latency p50 / p99",
            f"{single_16['p50_ms']:.1f} / {single_16['p99_ms']:.1f} ms",
        ),
        (
            "pre-send check during those 16-connection posts, p50 / p99",
            f"{check['p50_ms']:.1f} / {check['p99_ms']:.1f} ms",
        ),
        (
            "pre-send check alone (2 connections), p50 / p99",
            f"{check_idle['p50_ms']:.1f} / {check_idle['p99_ms']:.1f} ms"
            f" ({check_idle['rps']:,.0f}/s)",
        ),
        ("batches of 1,000 events, 2 clients", f"{batch_rate:,.0f} events/s"),
        (
            "trivial Flask endpoint, same gunicorn, 16 connections (the HTTP limit)",
            f"{trivial['rps']:,.0f} requests/s",
        ),
        (
            "single-event posts, 16 connections / the HTTP limit",
            f"{single_16['rps'] / trivial['rps']:.0%}",
        ),
    ]
    print("| measure | figure |")
    print("|---|---|")
    for label, figure in rows_out:
        print(f"| {label} | {figure} |")
    for name, figures in (
        ("single 1", single_1),
        ("single 16", single_16),
        ("check", check),
        ("check idle", check_idle),
        ("trivial", trivial),
    ):
        if figures["non_2xx"] or figures["socket_errors"]:
            print(
                f"WARNING {name}: non-2xx {figures['non_2xx']:.0f},"
                f" socket errors {figures['socket_errors']}"
            )


if __name__ == "__main__":
    main()
