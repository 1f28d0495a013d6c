"""Where the two cores go per request: CPU time of the server, PostgreSQL and wrk for the
do-nothing endpoint, the one-write endpoint and single usage posts, under the same server and
16 connections.

    .venv/bin/python -m bench.cpu_per_request [--seconds 10] [--servers a,b]

The ratio the issue asks about (single posts against the do-nothing endpoint) compares a request
that stores a transfer with one that stores nothing. `bench.one_write_app` is the limit of a
request that must store one row (the do-nothing endpoint plus one autocommitted `INSERT` of a
transfer-shaped row into a table with `transfers`' indexes); this benchmark measures all three
in one run on one throwaway PostgreSQL and splits each request's cost by process, from
`/proc/<pid>/stat` (user + system time of the server's and PostgreSQL's processes, live and
reaped; wrk's from `RUSAGE_CHILDREN`) and the machine's idle time from `/proc/stat`.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from bench.http_load import (
    CUSTOMERS,
    POST_ONE,
    SERVERS,
    TRIVIAL_POST,
    _descendants,
    billing_database,
    ensure_wrk,
    errors_of,
    run_wrk,
    served,
    warm_up,
)
from bench.one_write_app import CREATE_TABLE

CONNECTIONS = 16
WRITE_POST = TRIVIAL_POST.replace('"/ok"', '"/write"')
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system time of `pid` and of its reaped children (a postmaster reaps its
    backends, a gunicorn arbiter its workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command: state is field 0; utime, stime, cutime, cstime are 11..14
    return sum(int(value) for value in fields[11:15]) / TICK


def _tree_seconds(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in [pid, *_descendants(pid)])


def _idle_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICK  # idle + iowait, all cores


def _prepare(url: str) -> int:
    """The one-write endpoint's table made, and the PID of the database's postmaster."""
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(CREATE_TABLE))
        data = connection.execute(sa.text("SHOW data_directory")).scalar_one()
    engine.dispose()
    return int((Path(data) / "postmaster.pid").read_text().split()[0])


def measure(
    wrk: str, script: str, base: str, server_pid: int, postmaster: int, seconds: int
) -> dict[str, float]:
    """wrk's figures for `script` and the CPU milliseconds per request of each part."""
    before = (
        _tree_seconds(server_pid),
        _tree_seconds(postmaster),
        resource.getrusage(resource.RUSAGE_CHILDREN),
        _idle_seconds(),
        time.monotonic(),
    )
    figures = run_wrk(wrk, script, base, CONNECTIONS, seconds)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = _tree_seconds(server_pid) - before[0]
    database = _tree_seconds(postmaster) - before[1]
    client = (after_children.ru_utime + after_children.ru_stime) - (
        before[2].ru_utime + before[2].ru_stime
    )
    idle = _idle_seconds() - before[3]
    elapsed = time.monotonic() - before[4]
    requests = figures.get("requests") or figures["rps"] * elapsed
    per = 1000.0 / requests
    figures.update(
        server_ms=server * per,
        database_ms=database * per,
        client_ms=client * per,
        other_ms=max(0.0, (os.cpu_count() or 1) * elapsed - idle - server - database - client)
        * per,
        idle_ms=idle * per,
    )
    return figures


def _script(endpoint: str, key: str) -> str:
    """wrk's script for `endpoint`; usage posts with message ids no earlier run used."""
    if endpoint == "do-nothing":
        return TRIVIAL_POST
    if endpoint == "one write":
        return WRITE_POST
    return POST_ONE % {"run": uuid.uuid4().hex[:8], "key": key, "customers": CUSTOMERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--servers", default="gunicorn-gthread-2x8,granian-2x32")
    args = parser.parse_args()
    wrk = ensure_wrk()
    rows: list[tuple[str, str, dict[str, float]]] = []
    with billing_database() as (url, pg_version, key):
        postmaster = _prepare(url)
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
        endpoints = [
            ("do-nothing", "bench.trivial_app:app", dict(os.environ), "/ok"),
            ("one write", "bench.one_write_app:app", env, "/healthz"),
            ("single posts", "wsgi:app", env, "/healthz"),
        ]
        for name in args.servers.split(","):
            for endpoint, app, app_env, ready in endpoints:
                with served(SERVERS[name], app, app_env, ready) as (process, base):
                    if endpoint == "single posts":
                        warm_up(base, key)
                    # 2 s of the same load first; posts get fresh message ids for the measure
                    run_wrk(wrk, _script(endpoint, key), base, CONNECTIONS, 2)
                    figures = measure(
                        wrk, _script(endpoint, key), base, process.pid, postmaster, args.seconds
                    )
                    rows.append((name, endpoint, figures))
    print(f"command: python -m bench.cpu_per_request {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; PostgreSQL {pg_version}; {CONNECTIONS} connections, "
        f"{args.seconds} s each"
    )
    print(
        "| server | endpoint | req/s | p50 / p99 ms | CPU ms per request: server | PostgreSQL"
        " | wrk | other | idle | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, endpoint, f in rows:
        print(
            f"| {name} | {endpoint} | {f['rps']:,.0f} | {f['p50_ms']:.1f} / {f['p99_ms']:.1f} |"
            f" {f['server_ms']:.2f} | {f['database_ms']:.2f} | {f['client_ms']:.2f} |"
            f" {f['other_ms']:.2f} | {f['idle_ms']:.2f} | {errors_of(f) or 'none'} |"
        )
    by = {(name, endpoint): f["rps"] for name, endpoint, f in rows}
    for name in args.servers.split(","):
        posts = by[name, "single posts"]
        print(
            f"{name}: single posts / do-nothing {posts / by[name, 'do-nothing']:.2f},"
            f" single posts / one write {posts / by[name, 'one write']:.2f},"
            f" one write / do-nothing {by[name, 'one write'] / by[name, 'do-nothing']:.2f}"
        )


if __name__ == "__main__":
    main()
