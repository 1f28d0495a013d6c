"""A throwaway PgBouncer in transaction mode in front of a test PostgreSQL cluster, run as
the same unprivileged user as the cluster, on 127.0.0.1 and a free port; stopped by its PID.

Transaction pooling hands each transaction whichever server connection is free, so anything
that lives in a session (SET without LOCAL, session advisory locks, LISTEN, prepared
statements, temporary tables that outlive a transaction, WITH HOLD cursors) would break: the
API tests run through it (tests/integration/test_pgbouncer.py) prove smsledger needs none.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.pgserver import SERVICE_USER, PostgresServer, _free_port


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise RuntimeError("pgbouncer not found: install pgbouncer (make system-deps)")
    return found


class PgBouncer:
    def __init__(self, server: PostgresServer, pool_size: int = 20) -> None:
        self.server = server
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="smsledger-pgbouncer-"))
        self.pool_size = pool_size
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Transaction pooling for every database of `server` (`* =`), trust authentication
        as the cluster has; returns once the port accepts connections."""
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host=127.0.0.1 port={self.server.port}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = trust",
                    "admin_users = postgres",
                    f"auth_file = {self.root / 'users.txt'}",
                    "pool_mode = transaction",
                    # the tests' apps leave their pools to the garbage collector: idle clients
                    # of finished tests are closed after a while, and there is room for many
                    "max_client_conn = 10000",
                    "client_idle_timeout = 120",
                    f"default_pool_size = {self.pool_size}",
                    "server_reset_query =",
                    f"logfile = {self.root / 'pgbouncer.log'}",
                    "",
                ]
            )
        )
        command = [find_pgbouncer(), str(self.root / "pgbouncer.ini")]
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVICE_USER)
            for path in [self.root, *self.root.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            command.insert(1, f"--user={SERVICE_USER}")  # pgbouncer refuses to run as root
        # `--quiet`: its log goes to the logfile only. A pipe nobody reads fills after 64 KiB of
        # log lines and blocks pgbouncer in write(2), so new clients would time out silently.
        command.insert(1, "--quiet")
        errors = (self.root / "stderr.log").open("wb")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        errors.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {(self.root / 'stderr.log').read_text()}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not listen within 20 s")

    def transactions(self) -> dict[str, int]:
        """Transactions pooled so far, per database (the admin console's `SHOW STATS`)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="pgbouncer"
        )
        connection.autocommit = True  # the console takes no transactions
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW STATS")
                names = [column.name for column in cursor.description]
                return {
                    row[0]: int(row[names.index("total_xact_count")]) for row in cursor.fetchall()
                }
        finally:
            connection.close()

    def log_tail(self, characters: int = 4000) -> str:
        """The end of pgbouncer's log, for a failing assertion's message."""
        path = self.root / "pgbouncer.log"
        return path.read_text()[-characters:] if path.exists() else "(no pgbouncer log)"

    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGINT (pgbouncer's safe shutdown) to the process by its PID, then SIGKILL if it is
        still there after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)
