"""A throwaway Redis for the job tests: a temporary directory, 127.0.0.1 only, no persistence.

`RedisServer` can also be stopped and started again on the same port, as an outage and a
restart of a Redis without persistence look to its clients: the restarted server is empty.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One `redis-server` process at a time, on a port and in a directory that stay the same
    across `stop()` and `start()`."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: `make test` installs it (apt-get)")
        self.binary = binary
        self.directory = tempfile.mkdtemp(prefix="smsledger-redis-")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Start the server (empty: nothing is saved) and wait until it accepts; its URL.

        Raises: RuntimeError when it does not accept connections within 10 s.
        """
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server, by its PID; its data is gone."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """Start `redis-server`; yield its URL; stop it and remove its directory."""
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.remove()


@contextmanager
def restartable_redis() -> Iterator[RedisServer]:
    """Start `redis-server`; yield it, to stop and start again; stop it and remove its
    directory."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
