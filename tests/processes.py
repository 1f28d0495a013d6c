"""Real processes for the fault tests: `smsledger worker` and `smsledger scheduler` started as
subprocesses (`Launcher`, the `launch` fixture of tests/conftest.py), each with its output in a
log file and stopped by its PID; their environment (`smsledger_env`); what they run on (`Rig`,
the `rig` fixture); and waiting for a condition that may meet a Redis still down
(`wait_until`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from sippy_simulator.server import SimulatorHandle
from tests.redisserver import RedisServer

COMMAND = str(Path(sys.executable).parent / "smsledger")
"""The `smsledger` console script of the interpreter running the tests."""


def wait_until(condition: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    """Whether `condition()` became true within `seconds`, asked every `interval` seconds; a
    call that raises `OSError` counts as false."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except OSError:  # redis-py's ConnectionError is one: Redis is still down
            pass
        time.sleep(interval)
    return False


def smsledger_env(
    database_url: str, redis_url: str, sim: SimulatorHandle, **extra: str
) -> dict[str, str]:
    """The environment of a `smsledger` process on this PostgreSQL, Redis and Sippy simulator
    (its default credentials), with `extra` over it."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SIPPY_URL": sim.xmlapi_url,
        "SIPPY_USERNAME": "smsledger",
        "SIPPY_PASSWORD": "secret",
        **extra,
    }


class Launcher:
    """`launch(name, *args, **env)`: `smsledger *args` run in `directory`, with `env` over this
    process's environment (and text logs), its output in `directory/name.log`. `stop_all()`
    stops each one still running by its PID (SIGTERM, then SIGKILL after 10 s) and prints the
    end of its log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [COMMAND, *args],
                cwd=self.directory,
                env={**os.environ, "LOG_FORMAT": "text", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        return process

    def log(self, name: str) -> str:
        """What the process launched as `name` wrote so far."""
        return (self.directory / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for process, log in self.started:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            print(f"--- {log.name} (exit {process.returncode})\n{log.read_text()[-4000:]}")


class Rig(NamedTuple):
    """What `smsledger` processes run on in a fault test: the test's database (`sessions`), a
    Redis to stop and start again (`server`) and a client of it (`redis`), a Sippy simulator on
    real time, and the environment that names them (`env`, see `smsledger_env`)."""

    sessions: sessionmaker[Session]
    server: RedisServer
    redis: Redis
    sim: SimulatorHandle
    launch: Launcher
    env: dict[str, str]

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """`smsledger *args` on the rig, with `env` over the rig's, its output in `name.log`."""
        return self.launch(name, *args, **{**self.env, **env})
