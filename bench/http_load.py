"""What the HTTP benchmarks share (`bench.usage_http`, `bench.wsgi_servers`, `bench.open_loop`,
`bench.profile_http`): wrk (installed from Debian's packages when missing) and its Lua scripts,
parsing its report, the WSGI server configurations under comparison, and starting and stopping
one server by its PID.

An open-loop load (`PACER`): wrk sends on a fixed schedule, whatever the responses. Every wrk
thread keeps its own schedule of send times (slot k at its first call + k x interval, absolute
times from the monotonic clock through LuaJIT's FFI, so no drift accumulates); a connection that
comes free after its response (wrk calls `delay()` then) takes the next slot and waits until
it. A slot is sent late only when all of its thread's connections were busy at its time: the
benchmark gives the pacer several times the connections the rate needs (Little's law), counts
every slot taken more than 1 ms after its time and the worst lateness, and prints them
(`pacer: ...`), so coordinated omission, if any, is visible rather than hidden in the latency
figures (which wrk measures from the actual send).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CUSTOMERS = 50
WRK_THREADS = 2

POST_ONE = """
local counter = 0
local run = "%(run)s"
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"message_id":"%%s-%%s-%%d","user_id":"c%%d","destination":"+447400123456","segments":1}',
    run, tid, counter, counter %% %(customers)d)
  return wrk.format("POST", "/api/usage", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(key)s"}, body)
end
"""

CHECK = """
local counter = 0
function request()
  counter = counter + 1
  local body = string.format('{"user_id":"c%%d","message_count":1,"destination":"+447400123456"}',
    counter %% %(customers)d)
  return wrk.format("POST", "/api/usage/check", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(key)s"}, body)
end
"""

RESERVING_CHECK = """
local counter = 0
local run = "%(run)s"
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"user_id":"c%%d","message_count":1,"destination":"+447400123456","reserve":true,'
    .. '"message_id":"hold-%%s-%%s-%%d"}', (counter + tonumber(tid)) %% %(customers)d, run, tid,
    counter)
  return wrk.format("POST", "/api/usage/check", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(key)s"}, body)
end
"""

TRIVIAL_POST = """
request = function()
  return wrk.format("POST", "/ok", {["Content-Type"] = "application/json"},
    '{"message_id": "m", "user_id": "c1", "destination": "+447400123456", "segments": 1}')
end
"""

# Appended to a request script (plain Lua, no %-substitution: `pace` fills in the interval).
PACER = """
local ffi = require("ffi")
ffi.cdef[[
struct pacer_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct pacer_timespec *tp);
]]
local clock = ffi.new("struct pacer_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1000000
end
local interval = INTERVAL_MS -- between two sends of this wrk thread
local first, slot = nil, 0
slots, late, worst = 0, 0, 0 -- globals, read by done() through thread:get
function delay()
  local now = now_ms()
  if first == nil then first = now end
  local at = first + slot * interval
  slot = slot + 1
  slots = slot
  if now - at > 1 then
    late = late + 1
    if now - at > worst then worst = now - at end
    return 0
  end
  if at <= now then return 0 end
  return at - now -- wrk waits whole milliseconds (truncated): never late, at most 1 ms early
end
local pacer_threads = {}
local setup_request = setup
function setup(thread)
  if setup_request then setup_request(thread) end
  table.insert(pacer_threads, thread)
end
function done(summary, latency, requests)
  local total, behind, worst_ms = 0, 0, 0
  for _, thread in ipairs(pacer_threads) do
    total = total + thread:get("slots")
    behind = behind + thread:get("late")
    worst_ms = math.max(worst_ms, thread:get("worst"))
  end
  io.write(string.format("pacer: %d slots, %d late by more than 1 ms, worst %.1f ms\\n",
    total, behind, worst_ms))
end
"""


def pace(script: str, rate: float, threads: int = WRK_THREADS) -> str:
    """`script` sent at `rate` requests/s in all (open loop), split evenly over wrk's threads."""
    return script + PACER.replace("INTERVAL_MS", repr(1000.0 * threads / rate))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL
        )
        return shutil.which("wrk") or "wrk"
    raise SystemExit("wrk is needed: apt-get install wrk")


def run_wrk(wrk: str, script: str, url: str, connections: int, seconds: int) -> dict[str, float]:
    """wrk's figures (`parse_wrk`) for `connections` driving `script` for `seconds`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    threads = min(connections, WRK_THREADS)
    try:
        output = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                handle.name,
                url,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    return parse_wrk(output)


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50/p99 latency (ms), non-2xx-or-3xx count, socket errors (text, "" for
    none), `requests` completed, and the pacer's `late` and `worst_late_ms` when it printed."""

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M)
        if found:
            result[f"p{pct}_ms"] = ms(found.group(1))
    done = re.search(r"^\s*(\d+) requests in", output, re.M)
    if done:
        result["requests"] = float(done.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = float(bad.group(1)) if bad else 0.0
    errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = errors.group(1) if errors else ""  # type: ignore[assignment]
    pacer = re.search(
        r"pacer: (\d+) slots, (\d+) late by more than 1 ms, worst ([\d.]+) ms", output
    )
    if pacer:
        result["slots"] = float(pacer.group(1))
        result["late"] = float(pacer.group(2))
        result["worst_late_ms"] = float(pacer.group(3))
    return result


def errors_of(figures: dict[str, float]) -> str:
    """Empty when every response was 2xx (or 3xx) and no socket failed, else what went wrong."""
    problems = []
    if figures["non_2xx"]:
        problems.append(f"{figures['non_2xx']:.0f} non-2xx")
    if figures["socket_errors"]:
        problems.append(f"socket errors {figures['socket_errors']}")
    return ", ".join(problems)


@dataclass(frozen=True)
class Server:
    """One WSGI server configuration: `kind` is gunicorn, waitress or granian."""

    name: str
    kind: str
    options: str

    def command(self, app: str, port: int) -> list[str]:
        if self.kind == "gunicorn":
            listen = ["-b", f"127.0.0.1:{port}", "--log-level", "warning"]
            return [str(BIN / "gunicorn"), *self.options.split(), *listen, app]
        if self.kind == "waitress":
            return [str(BIN / "waitress-serve"), *self.options.split(), f"--port={port}", app]
        if self.kind == "granian":
            listen = ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            return [
                str(BIN / "granian"),
                "--interface",
                "wsgi",
                *self.options.split(),
                *listen,
                app,
            ]
        raise ValueError(f"unknown server kind {self.kind!r}")

    def describe(self) -> str:
        """The command line without the listening address and the app."""
        if self.kind == "granian":
            return f"granian --interface wsgi {self.options}"
        return f"{self.kind} {self.options}"


GUNICORN = "-w 2 -k gthread --threads 8"
# The machine has 2 cores: processes x threads around 16 for 16 connections.
SERVERS = {
    server.name: server
    for server in (
        Server("gunicorn-gthread-2x8", "gunicorn", GUNICORN),
        Server("gunicorn-gthread-2x32", "gunicorn", "-w 2 -k gthread --threads 32"),
        Server("gunicorn-gthread-4x4", "gunicorn", "-w 4 -k gthread --threads 4"),
        Server("gunicorn-sync-4", "gunicorn", "-w 4 -k sync"),
        Server("waitress-16", "waitress", "--host=127.0.0.1 --threads=16"),
        # One process, as `smsledger serve` runs (its jobs run in that process).
        Server("waitress-1x8", "waitress", "--host=127.0.0.1 --threads=8"),
        Server(
            "granian-1x8",
            "granian",
            "--http 1 --no-ws --workers 1 --runtime-threads 1 --blocking-threads 8"
            " --backpressure 32",
        ),
        Server(
            "granian-2x8",
            "granian",
            "--http 1 --no-ws --workers 2 --runtime-threads 1 --blocking-threads 8"
            " --backpressure 8",
        ),
        Server(
            "granian-2x32",
            "granian",
            "--http 1 --no-ws --workers 2 --runtime-threads 1 --blocking-threads 32"
            " --backpressure 32",
        ),
    )
}
DEFAULT_SERVER = "gunicorn-gthread-2x8"


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc's children lists)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# waitress logs a warning whenever a request waits for a thread: every few ms under load.
NOISE = re.compile(rb"waitress.queue.*Task queue depth is")


def _forward(process: subprocess.Popen[bytes]) -> None:
    """The server's output onto our stderr (the report is our stdout), less `NOISE`."""
    assert process.stdout is not None
    for line in process.stdout:
        if not NOISE.search(line):
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


def start_server(
    server: Server, app: str, env: dict[str, str], ready_path: str
) -> tuple[subprocess.Popen[bytes], str]:
    """`server` serving `app` on a free port, once `ready_path` answers (POST for /ok, else
    GET); raises if it exits or does not answer within 30 s."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        server.command(app, port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    threading.Thread(target=_forward, args=(process,), daemon=True).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {process.returncode} before answering")
        try:
            requests.request("POST" if ready_path == "/ok" else "GET", base + ready_path, timeout=1)
            return process, base
        except requests.RequestException:
            time.sleep(0.2)
    stop_server(process, base)
    raise RuntimeError(f"{server.name} did not answer {ready_path} within 30 s")


def stop_server(process: subprocess.Popen[bytes], base: str) -> None:
    """SIGTERM to the server's PID; then wait until it, every process it started and its port
    are gone (a process still there after 20 s is killed, by its PID)."""
    port = int(base.rsplit(":", 1)[1])
    children = _descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_alive(child) for child in children) or _port_open(port):
        if time.monotonic() > deadline:
            for child in children:
                if _alive(child):
                    os.kill(child, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)


def start_gunicorn(
    options: str, app: str, env: dict[str, str], ready_path: str
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn with `options` serving `app` on a free port, once `ready_path` answers."""
    return start_server(Server("gunicorn", "gunicorn", options), app, env, ready_path)


@contextmanager
def served(
    server: Server, app: str, env: dict[str, str], ready_path: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`start_server` for a `with` block, stopped (`stop_server`) at its end."""
    process, base = start_server(server, app, env, ready_path)
    try:
        yield process, base
    finally:
        stop_server(process, base)


def warm_up(base: str, key: str) -> None:
    """One event per customer: every customer provisioned, every cache warm."""
    warm = [
        {
            "message_id": f"warm-{n}",
            "user_id": f"c{n}",
            "destination": "+447400123456",
            "segments": 1,
        }
        for n in range(CUSTOMERS)
    ]
    requests.post(
        f"{base}/api/usage",
        json={"events": warm},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ).raise_for_status()


@contextmanager
def billing_database() -> Iterator[tuple[str, str, str]]:
    """A throwaway PostgreSQL migrated to head with `examples/rates.csv` loaded and a service
    API key, as `bench.usage_http` sets it up: (url, PostgreSQL version, key)."""
    from billing.access.api_keys import create_key
    from billing.usage.rate_sheets import add_rates, parse_sheet
    from ledger.db import make_engine, make_session_factory, unit_of_work
    from tests.conftest import NOW
    from tests.pgserver import migrated_database

    with migrated_database() as (url, pg_version):
        engine = make_engine(url)
        with unit_of_work(make_session_factory(engine)) as session:
            add_rates(session, parse_sheet((ROOT / "examples" / "rates.csv").read_text()), NOW)
            key, _ = create_key(session, "service", "bench", NOW)
        engine.dispose()
        yield url, pg_version, key
