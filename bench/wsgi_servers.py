"""Single usage posts on each WSGI server, the real app beside a do-nothing endpoint under the
same server settings (issue 17: the per-SMS path near the physical limit).

    .venv/bin/python -m bench.wsgi_servers [--seconds 10] [--warmup 2] [--servers a,b]

One throwaway PostgreSQL for the whole run, set up as `bench.usage_http` sets it up (migrated,
`examples/rates.csv`, a service API key, 50 customers). For each configuration of
`bench.http_load.SERVERS` in turn (the machine has 2 cores):
- the server on `bench.trivial_app:app`, wrk posting usage_http's small body to /ok with 16
  connections: the do-nothing rate, the HTTP limit of that server;
- the server on `wsgi:app`, one batch provisioning the 50 customers, then wrk posting single
  events with 16 connections (usage_http's script): events/s and their p50/p99 latency.
Each measurement follows `--warmup` seconds of the same load. Each server is stopped by its PID
and its processes and its port are gone before the next one starts, so nothing else runs beside
the one measured (PostgreSQL apart, idle for the do-nothing endpoint). The configurations run in
the table's order on one database, so each later one posts into a ledger a few thousand rows
larger. Every response must be 2xx: non-2xx answers and socket errors are counted in the
`errors` column and printed as `WARNING errors:` lines; the ledger is checked at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import uuid
from importlib import metadata

import sqlalchemy as sa

from bench.http_load import (
    CUSTOMERS,
    POST_ONE,
    SERVERS,
    TRIVIAL_POST,
    WRK_THREADS,
    Server,
    billing_database,
    ensure_wrk,
    errors_of,
    run_wrk,
    served,
    warm_up,
)
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work

CONNECTIONS = 16


def measure(
    wrk: str, server: Server, env: dict[str, str], key: str, seconds: int, warmup: int
) -> dict[str, dict[str, float]]:
    """The do-nothing endpoint's and the app's figures on `server`, and the warm-ups'."""
    found: dict[str, dict[str, float]] = {}
    with served(server, "bench.trivial_app:app", dict(os.environ), "/ok") as (_, base):
        if warmup:
            found["trivial warm-up"] = run_wrk(wrk, TRIVIAL_POST, base, CONNECTIONS, warmup)
        found["trivial"] = run_wrk(wrk, TRIVIAL_POST, base, CONNECTIONS, seconds)
    with served(server, "wsgi:app", env, "/healthz") as (_, base):
        warm_up(base, key)
        values = {"run": uuid.uuid4().hex[:8], "key": key, "customers": CUSTOMERS}
        if warmup:
            found["app warm-up"] = run_wrk(wrk, POST_ONE % values, base, CONNECTIONS, warmup)
        values["run"] = uuid.uuid4().hex[:8]
        found["app"] = run_wrk(wrk, POST_ONE % values, base, CONNECTIONS, seconds)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="each measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="before each (default 2, 0: none)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, of: {', '.join(SERVERS)} (default: all)",
    )
    args = parser.parse_args()
    chosen = [SERVERS[name.strip()] for name in args.servers.split(",") if name.strip()]
    wrk = ensure_wrk()

    results: dict[str, dict[str, dict[str, float]]] = {}
    with billing_database() as (url, pg_version, key):
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
        for server in chosen:
            print(f"measuring {server.name}", file=sys.stderr, flush=True)
            results[server.name] = measure(wrk, server, env, key, args.seconds, args.warmup)
        engine = make_engine(url)
        with unit_of_work(make_session_factory(engine)) as session:
            problems = check_ledger(session)
            rows = session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
        engine.dispose()

    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("gunicorn", "waitress", "granian")
    )
    print(f"command: python -m bench.wsgi_servers {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores,")
    print(f"  python {platform.python_version()}, PostgreSQL {pg_version}, {versions},")
    print(
        f"  wrk on the same machine ({WRK_THREADS} threads, {CONNECTIONS} connections,"
        f" {args.seconds} s after {args.warmup} s of warm-up)"
    )
    print("servers:")
    for server in chosen:
        print(f"  {server.name}: {server.describe()}")
    print(f"transfers at the end: {rows}; ledger check: {'ok' if not problems else problems[:3]}")
    print("| server | app events/s | do-nothing req/s | ratio | app p50 / p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    warnings = []
    for name, found in results.items():
        app, trivial = found["app"], found["trivial"]
        failed = {what: errors_of(figures) for what, figures in found.items()}
        errors = "; ".join(f"{what}: {text}" for what, text in failed.items() if text)
        print(
            f"| {name} | {app['rps']:,.0f} | {trivial['rps']:,.0f} |"
            f" {app['rps'] / trivial['rps']:.2f} |"
            f" {app['p50_ms']:.1f} / {app['p99_ms']:.1f} | {errors or 'none'} |"
        )
        if errors:
            warnings.append(f"WARNING errors: {name}: {errors}")
    best_rate = max(results, key=lambda name: results[name]["app"]["rps"])
    best_ratio = max(
        results, key=lambda name: results[name]["app"]["rps"] / results[name]["trivial"]["rps"]
    )
    print(f"highest app rate: {best_rate}; highest ratio to its do-nothing rate: {best_ratio}")
    for warning in warnings:
        print(warning)
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
