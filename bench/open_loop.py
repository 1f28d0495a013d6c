"""The pre-send check's latency while single usage posts are offered at a fixed rate (open loop)
of half their measured saturation, and while they saturate; the reserving check beside the plain
one (issue 17: "pre-send check p99 at most 10 ms while single-event ingestion is offered at half
of its measured saturation rate").

    .venv/bin/python -m bench.open_loop [--seconds 10] [--server gunicorn-gthread-2x8]
        [--check-rate 100] [--connections 32]

The same stack as `bench.usage_http` (a throwaway PostgreSQL, `examples/rates.csv`, a service
key, 50 customers provisioned by one batch; gunicorn `-w 2 -k gthread --threads 8` unless
`--server` names another configuration of `bench.wsgi_servers`), driven by `wrk` on the same 2
cores. After `--warmup` seconds of posts:
1. saturation: 16 connections post single events closed loop (each sends its next request when
   its answer arrives), as usage_http does, for `--seconds`: S events/s.
2. half saturation: posts offered at S/2 per second, open loop, over `--connections`
   connections, for `--seconds` + 2; from 1 s in and for `--seconds`, a second wrk sends the
   pre-send check at `--check-rate` per second, itself open loop over 16 connections: the
   check's p50 / p99. The posts achieved must be within 5 % of the offered rate (both printed;
   a `WARNING pacer:` line otherwise).
3. saturation: the same check client while 16 connections post closed loop.
4. the reserving check (`"reserve": true`, a `message_id` unique per request) beside posts at
   half saturation, as in 2. A server that does not know the field yet (422 on a probe) gets
   the row "not available yet" and no figure.

Open loop and coordinated omission. wrk2 is not in Debian; this uses plain wrk with a Lua pacer
(`bench.http_load.PACER`): each wrk thread keeps a fixed schedule of absolute send times (its
share of the rate, from the monotonic clock), and a connection that comes free takes the next
slot and waits for it, so sends follow the schedule whatever the responses do, as long as one of
the thread's connections is free at each slot. The load is given many more connections than the
rate needs (at 300/s and 30 ms, 9 in flight; 32 by default for posts, 16 for checks at 100/s),
so a slot is late only if latency stays above (connections per thread) x (interval) - over
100 ms here. The pacer counts every slot taken more than 1 ms after its time and the worst
lateness and the report prints them: wrk's latencies run from the actual send, so a late slot
would hide up to that lateness from the percentiles; with 0 late slots there is no omission to
correct. Every response must be 2xx: non-2xx answers and socket errors are printed as
`WARNING errors:` lines; the ledger is checked at the end.
"""

from __future__ import annotations

import argparse
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
    DEFAULT_SERVER,
    POST_ONE,
    RESERVING_CHECK,
    SERVERS,
    WRK_THREADS,
    billing_database,
    ensure_wrk,
    errors_of,
    pace,
    run_wrk,
    served,
    warm_up,
)
from ledger.checks import check_ledger
from ledger.db import make_engine, make_session_factory, unit_of_work

HOLD_TTL_S = 10
SATURATING = 16
CHECK_CONNECTIONS = 16
CHECK_BODY = {"user_id": "c1", "message_count": 1, "destination": "+447400123456"}


def under_load(
    wrk: str, base: str, posts: str, connections: int, checks: str, seconds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Posts (`posts` script, `connections`) for `seconds` + 2 and, from 1 s in and for
    `seconds`, the checks (`checks`, paced) from a separate wrk: both wrk reports."""
    found: dict[str, dict[str, float]] = {}

    def load() -> None:
        found["posts"] = run_wrk(wrk, posts, base, connections, seconds + 2)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(1)
    check = run_wrk(wrk, checks, base, CHECK_CONNECTIONS, seconds)
    loader.join()
    return found["posts"], check


def reserving_probe(base: str, key: str) -> str:
    """ "" when the server takes a reserving check, else why not (status and error codes)."""
    body = {**CHECK_BODY, "reserve": True, "message_id": f"probe-{uuid.uuid4().hex}"}
    answer = requests.post(
        f"{base}/api/usage/check",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if answer.ok:
        return ""
    try:
        error = answer.json().get("error", {})
        fields = error.get("details", {}).get("errors", [])
        codes = ", ".join(f"{e.get('code')}: {e.get('field')}" for e in fields) or error.get("code")
    except (ValueError, AttributeError):
        codes = answer.text[:100]
    return f"{answer.status_code} {codes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="each measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="posts before the first (default 2)")
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, choices=SERVERS, help=f"default: {DEFAULT_SERVER}"
    )
    parser.add_argument(
        "--check-rate", type=float, default=100.0, help="pre-send checks per second (default 100)"
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="of the open-loop posts (default 32)"
    )
    args = parser.parse_args()
    server = SERVERS[args.server]
    wrk = ensure_wrk()

    def values() -> dict[str, object]:
        return {"run": uuid.uuid4().hex[:8], "key": key, "customers": CUSTOMERS}

    with billing_database() as (url, pg_version, key):
        # A reserving check's hold is captured by its post in production; here no post follows
        # it, so holds live HOLD_TTL_S (a send's time in flight) instead of piling up.
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LOG_FORMAT": "json",
            "SMS_BILLING_HOLD_TTL_S": str(HOLD_TTL_S),
        }
        with served(server, "wsgi:app", env, "/healthz") as (_, base):
            warm_up(base, key)
            found: dict[str, dict[str, float]] = {}
            if args.warmup:
                found["warm-up"] = run_wrk(wrk, POST_ONE % values(), base, SATURATING, args.warmup)
            found["saturation"] = run_wrk(wrk, POST_ONE % values(), base, SATURATING, args.seconds)
            offered = found["saturation"]["rps"] / 2
            checks = pace(CHECK % values(), args.check_rate)
            found["idle check"] = run_wrk(wrk, checks, base, CHECK_CONNECTIONS, args.seconds)
            half = pace(POST_ONE % values(), offered)
            found["half posts"], found["half check"] = under_load(
                wrk, base, half, args.connections, checks, args.seconds
            )
            found["saturated posts"], found["saturated check"] = under_load(
                wrk, base, POST_ONE % values(), SATURATING, checks, args.seconds
            )
            unavailable = reserving_probe(base, key)
            if not unavailable:
                found["reserving posts"], found["reserving check"] = under_load(
                    wrk,
                    base,
                    pace(POST_ONE % values(), offered),
                    args.connections,
                    pace(RESERVING_CHECK % values(), args.check_rate),
                    args.seconds,
                )
        engine = make_engine(url)
        with unit_of_work(make_session_factory(engine)) as session:
            problems = check_ledger(session)
            rows = session.execute(sa.text("SELECT count(*) FROM transfers")).scalar_one()
        engine.dispose()

    def latency(figures: dict[str, float]) -> str:
        return f"{figures['p50_ms']:.1f} / {figures['p99_ms']:.1f} ms"

    warnings = []
    paced = [("posts at half saturation", found["half posts"], offered)]
    paced += [("pre-send checks alone", found["idle check"], args.check_rate)]
    paced += [("pre-send checks at half saturation", found["half check"], args.check_rate)]
    paced += [("pre-send checks at saturation", found["saturated check"], args.check_rate)]
    if not unavailable:
        paced += [("posts beside the reserving check", found["reserving posts"], offered)]
        paced += [("reserving checks", found["reserving check"], args.check_rate)]
    pacer_lines = []
    for what, figures, rate in paced:
        off = figures["rps"] / rate - 1
        kept = (
            f"offered {rate:,.1f}/s, achieved {figures['rps']:,.1f}/s ({off:+.1%});"
            f" {figures.get('late', 0):.0f} of {figures.get('slots', 0):.0f} slots late by more"
            f" than 1 ms, worst {figures.get('worst_late_ms', 0):.1f} ms"
        )
        pacer_lines.append(f"  {what}: {kept}")
        if abs(off) > 0.05 or figures.get("late", 0) > 0.01 * figures.get("slots", 0):
            warnings.append(f"WARNING pacer: {what}: schedule not kept: {kept}")

    reserving = (
        f"not available yet ({unavailable})" if unavailable else latency(found["reserving check"])
    )
    print(f"command: python -m bench.open_loop {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores,")
    print(f"  python {platform.python_version()}, PostgreSQL {pg_version},")
    print(f"  {args.server}: {server.describe()}, wrk on the same machine ({WRK_THREADS} threads)")
    print(
        f"open loop: posts over {args.connections} connections, pre-send checks at"
        f" {args.check_rate:,.0f}/s over {CHECK_CONNECTIONS} connections; {args.seconds} s each"
    )
    print("\n".join(pacer_lines))
    print(f"transfers at the end: {rows}; ledger check: {'ok' if not problems else problems[:3]}")
    rows_out = [
        (
            f"single-event posts, saturation ({SATURATING} connections)",
            f"{found['saturation']['rps']:,.0f} events/s",
        ),
        (
            "posts offered at half saturation (open loop), achieved",
            f"{found['half posts']['rps']:,.0f} events/s (offered {offered:,.0f}/s)",
        ),
        ("pre-send check alone (no posts), p50 / p99", latency(found["idle check"])),
        ("pre-send check at half saturation, p50 / p99", latency(found["half check"])),
        ("pre-send check at saturation, p50 / p99", latency(found["saturated check"])),
        ("reserving pre-send check at half saturation, p50 / p99", reserving),
        ("  posts at half saturation, their latency p50 / p99", latency(found["half posts"])),
        (
            f"  posts during the check at saturation ({SATURATING} connections)",
            f"{found['saturated posts']['rps']:,.0f} events/s",
        ),
    ]
    print("| measure | figure |")
    print("|---|---|")
    for label, figure in rows_out:
        print(f"| {label} | {figure} |")
    for name, figures in found.items():
        if problem := errors_of(figures):
            warnings.append(f"WARNING errors: {name}: {problem}")
    for warning in warnings:
        print(warning)
        print(warning, file=sys.stderr)


if __name__ == "__main__":
    main()
