"""Where single usage posts spend the gunicorn workers' time under 16 connections: py-spy
samples every worker while `wrk` posts, and the samples are summed per function of ours.

    .venv/bin/python -m bench.profile_http [--seconds 10]

Same stack as `bench.usage_http` (throwaway PostgreSQL, gunicorn 2 x 8 threads, wrk on the same
machine). py-spy (a dev dependency; sampling another process needs root or ptrace rights) records
idle threads too, so waiting on PostgreSQL shows as time in the driver's calls. Prints the share
of all samples under each of our functions (inclusive) and the leaf functions that hold the most
samples (self).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

from bench.http_load import (
    CUSTOMERS,
    GUNICORN,
    POST_ONE,
    billing_database,
    ensure_wrk,
    run_wrk,
    start_gunicorn,
    warm_up,
)

OURS = ("api/", "billing/", "ledger/", "jobs/", "wsgi.py")


def summarise(raw: str, top: int) -> list[str]:
    """Inclusive share per function of ours and self share per leaf, from py-spy's raw
    (collapsed) output: `frame;frame;... count` per line, frames as `name (file:line)`."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";")]
        leaf[frames[-1]] += count
        for frame in set(frames):
            if any(part in frame for part in OURS):
                inclusive[frame] += count
    lines = [f"samples: {total:,}", "| ours, inclusive | share |", "|---|---|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in inclusive.most_common(top)]
    lines += ["", "| leaf (self) | share |", "|---|---|"]
    lines += [f"| {name} | {n / total:.1%} |" for name, n in leaf.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--on-cpu",
        action="store_true",
        help="sample only threads running on a core (no --idle): where the CPU time goes",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    py_spy = Path(sys.executable).parent / "py-spy"
    with billing_database() as (url, _, key):
        env = {**os.environ, "DATABASE_URL": url, "LOG_FORMAT": "json"}
        gunicorn, base = start_gunicorn(GUNICORN, "wsgi:app", env, "/healthz")
        try:
            warm_up(base, key)
            with tempfile.TemporaryDirectory() as out:
                raw_path = Path(out) / "samples.txt"
                values = {"run": uuid.uuid4().hex[:8], "key": key, "customers": CUSTOMERS}
                load = threading.Thread(
                    target=run_wrk, args=(wrk, POST_ONE % values, base, 16, args.seconds + 2)
                )
                load.start()
                subprocess.run(
                    [
                        str(py_spy),
                        "record",
                        "--pid",
                        str(gunicorn.pid),
                        "--subprocesses",
                        *([] if args.on_cpu else ["--idle"]),
                        "--duration",
                        str(args.seconds),
                        "--format",
                        "raw",
                        "--output",
                        str(raw_path),
                    ],
                    check=True,
                    capture_output=True,
                )
                load.join()
                raw = raw_path.read_text()
        finally:
            gunicorn.terminate()
            gunicorn.wait(timeout=20)
    print(f"command: python -m bench.profile_http {' '.join(sys.argv[1:])}".rstrip())
    sampled = "on-CPU samples only" if args.on_cpu else "py-spy --idle"
    print(f"gunicorn {GUNICORN}, wrk 16 connections posting single events, {sampled}")
    print("\n".join(summarise(raw, args.top)))


if __name__ == "__main__":
    main()
