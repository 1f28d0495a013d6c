"""The rules of the code that import-linter cannot see: only the adapters and the runners end a
transaction. A service that committed inside a caller's unit of work would split it (a batch
ingest half written, a close without its outbox rows), so this fails on the first such call."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("billing", "reconciliation", "ledger")
# Where a unit of work may begin and end (decision 0013 for the runners; ledger.db defines it).
OWNERS = {"ledger/db.py"}
TRANSACTION_CALLS = {"commit", "rollback", "begin", "begin_nested"}


def _transaction_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.name}:{node.lineno} .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in TRANSACTION_CALLS
    ]


def _service_modules() -> list[Path]:
    return [
        path
        for package in SERVICES
        for path in sorted((ROOT / package).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in OWNERS and not path.stem.endswith("_runner")
    ]


def test_no_service_commits_or_rolls_back_a_transaction() -> None:
    found = [call for path in _service_modules() for call in _transaction_calls(path)]
    assert found == []


def test_the_check_sees_a_commit_when_there_is_one(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("def f(session):\n    session.commit()\n")
    assert _transaction_calls(planted) == ["planted.py:2 .commit()"]
    assert ROOT / "billing" / "invoicing" / "closing.py" in _service_modules()
    assert ROOT / "billing" / "payments" / "charge_runner.py" not in _service_modules()


def test_runners_are_the_modules_that_open_units_of_work() -> None:
    runners = sorted(
        str(path.relative_to(ROOT)) for path in (ROOT / "billing").rglob("*_runner.py")
    )
    assert runners == [
        "billing/invoicing/cycle_runner.py",
        "billing/notifications/delivery_runner.py",
        "billing/payments/charge_runner.py",
    ]
    for runner in runners:
        assert "from ledger.db import run_in_transaction" in (ROOT / runner).read_text()
