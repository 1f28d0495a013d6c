"""A throwaway PostgreSQL cluster for the tests and benchmarks.

Started from the machine's PostgreSQL binaries in a temporary data directory, listening on
127.0.0.1 only, with durability switched off (the data is disposable). PostgreSQL refuses to run
as root, so as root it runs as the `postgres` user (created when missing).

    python -m tests.pgserver   # start one, print its URL, stop on Ctrl-C
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVICE_USER = "postgres"


def find_bin_dir() -> Path:
    """The directory holding initdb and pg_ctl, preferring PostgreSQL 15."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        # a symlink on PATH (this machine has /usr/local/bin/pg_ctl): the directory it points
        # into holds the other binaries too (pg_basebackup)
        return Path(on_path).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    preferred = [c for c in candidates if "/15/" in c]
    chosen = (preferred or candidates)[-1:] if (preferred or candidates) else []
    if not chosen:
        raise RuntimeError("PostgreSQL binaries not found: install postgresql-15")
    return Path(chosen[0])


def _version_key(path: str) -> int:
    part = path.split("/")[-2]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster: `start()` returns an admin URL; `restart()` does what an operator's restart
    does (every connection is terminated, the port refuses connections until the server is back);
    `stop()` removes every trace."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="smsledger-pg-"))
        self.data_dir = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._options = ""  # the server settings `start()` chose, reused by `restart()`

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _own_root(self) -> None:
        if self.as_root:
            _ensure_service_user()
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self._own_root()
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._options = self._server_options()
        self._pg_ctl("start")
        return self.url("postgres")

    def start_as_replica_of(self, primary: PostgresServer) -> str:
        """A hot standby of `primary`, streaming from it: `pg_basebackup` over a replication
        connection (`-R` writes `primary_conninfo` and `standby.signal`), then started with the
        same settings as a primary. Returns its admin URL; `pause_replay`/`resume_replay` on
        it hold back and release what it applies."""
        self._own_root()
        self._run(
            str(self.bin_dir / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        )
        self._options = self._server_options()
        self._pg_ctl("start")
        return self.url("postgres")

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def start_again(self) -> None:
        """Start a server `stop_now` stopped, with its data directory as it was."""
        self._pg_ctl("start")

    def stop_now(self) -> None:
        """SIGQUIT to the postmaster by its PID (an immediate shutdown, as a crash would end
        it), keeping the data directory; returns once the port refuses connections."""
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def _server_options(self) -> str:
        return " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=256MB",
                # Extra server settings for experiments, e.g. "-c work_mem=64MB".
                os.environ.get("SMSLEDGER_PG_OPTIONS", ""),
            ]
        )

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: sessions are terminated, the server shuts down and starts
        again with the same settings; returns once it accepts connections."""
        self._pg_ctl("restart", "-m", "fast")

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-o",
            self._options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            action,
            *args,
        )

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            self._run(
                str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"
            )
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_service_user() -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVICE_USER,
            ],
            check=True,
        )


if __name__ == "__main__":
    server = PostgresServer()
    print(server.start(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
        sys.exit(0)


@contextmanager
def migrated_database(name: str = "bench") -> Iterator[tuple[str, str]]:
    """A throwaway cluster with one database migrated to head: (url, server version)."""
    import sqlalchemy as sa

    import migrations

    # A benchmark stopped with SIGTERM (kill, a timeout) still stops its server: the default
    # action would exit without running the `finally` below and leave PostgreSQL running.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    server = PostgresServer()
    admin_url = server.start()
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
            version = str(connection.execute(sa.text("SHOW server_version")).scalar_one())
        admin.dispose()
        url = server.url(name)
        migrations.upgrade(url)
        yield url, version
    finally:
        server.stop()
