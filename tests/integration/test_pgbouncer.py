"""The API tests through PgBouncer in transaction mode (docs/deploy.md): every transaction may
land on another server connection, so anything smsledger kept in a session would fail here.

The suite's own API tests run once in a child pytest whose every test database is reached
through a real pgbouncer; the cluster and pgbouncer are this test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pgbouncer import PgBouncer
from tests.pgserver import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.pgbouncer]

ROOT = Path(__file__).resolve().parents[2]


def test_the_api_tests_pass_through_pgbouncer_in_transaction_mode(tmp_path: Path) -> None:
    server = PostgresServer()
    admin_url = server.start()
    pooler = PgBouncer(server, pool_size=8)
    try:
        pooler.start()
        environment = {
            **os.environ,
            "SMSLEDGER_TEST_PG_ADMIN_URL": admin_url,
            "SMSLEDGER_TEST_PG_VIA": pooler.host_port(),
        }
        report = tmp_path / "report.txt"
        with report.open("w") as out:
            finished = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "tests/api",
                    "-m",
                    "postgres",
                    # the fuzzer walks every operation at random: it proves no 500s, not pooling
                    "--ignore=tests/api/test_openapi_fuzz.py",
                    "-p",
                    "no:cacheprovider",
                    "--no-cov",
                    "-q",
                    "-x",
                    "-W",
                    "error",
                ],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1500,
                check=False,
            )
        output = report.read_text()
        assert finished.returncode == 0, output[-6000:] + pooler.log_tail()
        passed = int(output.rsplit(" passed", 1)[0].rsplit(maxsplit=1)[-1])
        assert passed > 100, output[-2000:]
        pooled = pooler.transactions()
        test_databases = [name for name in pooled if name.startswith("test_")]
        # every test database was reached through the pooler, not around it
        assert len(test_databases) > 50, pooled
        assert sum(pooled[name] for name in test_databases) > 1000, pooled
    finally:
        pooler.stop()
        server.stop()
