"""The README's quick start, run as written: `make demo` (`examples/demo.sh`) on a fresh
SQLite, a real simulator and a real `smsledger serve`, ends with the invoice paid in Sippy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_readme_names_the_demo_and_the_demo_charges_an_invoice() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "PORT=8080 make run" in readme
    env = {
        **os.environ,
        "BIN": str(Path(sys.executable).parent),
        "PORT": str(_free_port()),
        "SIM_PORT": str(_free_port()),
        "DEMO_EXIT": "1",
    }
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        ["bash", "examples/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"invoices_created":1' in done.stdout
    assert "invoice of user 42: paid" in done.stdout
    assert '"type": "debit"' in done.stdout  # Sippy's side of the charge
    assert "/widget/billing?token=" in done.stdout


def test_the_command_line_describes_smsledger_not_flask(tmp_path: Path) -> None:
    smsledger = str(Path(sys.executable).parent / "smsledger")
    shown = subprocess.run([smsledger, "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0
    assert "smsledger serve" in shown.stdout and "export" in shown.stdout
    for flask_only in ("Show the Flask version", "  shell ", "  routes ", "  run "):
        assert flask_only not in shown.stdout
    quiet = subprocess.run(
        [smsledger, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )
    assert quiet.returncode == 0
    assert "alembic" not in quiet.stderr and "Context impl" not in quiet.stderr
