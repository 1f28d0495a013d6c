"""Reconciliation against the simulator over HTTP: a day with every kind of difference (a charge
Sippy applied that the ledger missed after a timeout, a settlement Sippy has no record of, an
amount off by one minor unit, a duplicated debit, another currency) is reported line by line;
accepting the proposals and re-running reports the day reconciled."""

from __future__ import annotations

import csv
import io
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from billing.customers import create_customer
from billing.payments.charge_runner import charge_invoice
from billing.payments.charging import ChargePolicy
from billing.payments.sippy_client import ChargeOutcome, SippyClient
from billing.tables import invoices
from ledger.checks import check_ledger
from ledger.db import run_in_transaction, unit_of_work
from ledger.money import Money
from reconciliation.proposals import resolve
from reconciliation.runs import reconcile, run_items
from reconciliation.statements import fetch_statement, parse_statement_csv
from sippy_simulator.server import SimulatorHandle
from tests.conftest import Clock
from tests.scenarios import DEFAULTS, at, close, load_rates, post, rows, sms

pytestmark = pytest.mark.postgres

DAY_START, DAY_END = at(2026, 11, 24), at(2026, 11, 25)
CHARGED_AT = at(2026, 11, 24, 3)
CASES = ("normal", "timeout", "phantom", "overcharged", "duplicated", "euro")


class Scripted:
    """A gateway that does to Sippy what a case needs, then says what the engine hears."""

    def __init__(self, client: SippyClient, case: str) -> None:
        self.client, self.case = client, case

    def debit(self, account_id: int, amount: Money, reference: str, when: datetime) -> Any:
        if self.case == "phantom":  # the ledger settles, Sippy never hears of it
            return ChargeOutcome("accepted")
        if self.case == "overcharged":
            amount = Money(amount.micros + 10_000, amount.currency)
        if self.case == "euro":
            amount = Money(amount.micros, "EUR")
        outcome = self.client.debit(account_id, amount, reference, when)
        if self.case == "duplicated":
            self.client.debit(account_id, amount, reference, when)
        return ChargeOutcome("accepted") if self.case != "timeout" else outcome

    def find_debit(self, *args: Any) -> Any:
        return self.client.find_debit(*args)


@pytest.fixture
def sim(sim: SimulatorHandle) -> SimulatorHandle:
    """The shared simulator, with a EUR account (2001) beside its default ones."""
    sim.state.put_account(
        {
            "i_account": 2001,
            "username": "euro",
            "currency": "EUR",
            "balance": "100",
            "credit_limit": "0",
        }
    )
    return sim


@pytest.fixture
def client(sim: SimulatorHandle) -> SippyClient:
    return SippyClient(sim.xmlapi_url, "smsledger", "secret", timeout_s=0.5)


@pytest.fixture
def day(
    sessions: sessionmaker[Session], sim: SimulatorHandle, client: SippyClient, clock: Clock
) -> dict[str, uuid.UUID]:
    """One invoice of 0.02 USD per case, charged at 03:00 the way the case says."""
    load_rates(sessions)
    accounts = {case: str(1001 + n) for n, case in enumerate(CASES)}
    accounts["euro"] = "2001"
    with unit_of_work(sessions) as session:
        for case in CASES:
            create_customer(session, case, "USD", at(2026, 11, 1), sippy_account_id=accounts[case])
    post(
        sessions,
        at(2026, 11, 23, 23),
        *(sms(f"{c}-{n}", at(2026, 11, 23, 12), user=c) for c in CASES for n in range(3)),
    )
    close(sessions, "daily", at(2026, 11, 24, 2))
    clock.now = CHARGED_AT
    sim.state.inject_fault(
        method="accountDebit", i_account=1002, kind="timeout_after_apply", delay_s=1.5
    )
    invoice_of = {row.customer_id: row.id for row in rows(sessions, invoices)}
    for case in CASES:
        charge_invoice(
            sessions, Scripted(client, case), invoice_of[case], clock, DEFAULTS, ChargePolicy()
        )
    return invoice_of


def run(sessions: sessionmaker[Session], client: SippyClient, clock: Clock) -> Any:
    statement = fetch_statement(client, DAY_START, DAY_END)
    return run_in_transaction(
        sessions,
        lambda s: reconcile(s, statement, "sippy", DAY_START, DAY_END, "test", clock(), 600),
    )


def accept(sessions: sessionmaker[Session], run_id: uuid.UUID, item_id: int, clock: Clock) -> Any:
    return run_in_transaction(
        sessions,
        lambda s: resolve(s, run_id, item_id, "accept", "accountant", "fixed", clock(), DEFAULTS),
    )


def items_of(sessions: sessionmaker[Session], run_id: uuid.UUID) -> list[Any]:
    with unit_of_work(sessions) as session:
        return run_items(session, run_id, differences_only=False)


def test_every_kind_of_difference_is_reported_line_by_line_and_resolving_reconciles(
    sessions: sessionmaker[Session],
    client: SippyClient,
    clock: Clock,
    day: dict[str, uuid.UUID],
) -> None:
    first = run(sessions, client, clock)
    assert first.status == "differences"
    items = items_of(sessions, first.id)
    by_case = Counter((i.customer_id, i.kind) for i in items)
    assert by_case == {
        ("normal", "matched"): 1,
        ("timeout", "missing_in_ledger"): 1,
        ("phantom", "missing_in_sippy"): 1,
        ("overcharged", "amount_mismatch"): 1,
        ("duplicated", "matched"): 1,
        ("duplicated", "missing_in_ledger"): 1,
        ("euro", "amount_mismatch"): 1,
    }
    assert {
        k: first.totals[k]
        for k in ("matched", "mismatched", "missing_in_sippy", "missing_in_ledger")
    } == {
        "matched": 2,
        "mismatched": 2,
        "missing_in_sippy": 1,
        "missing_in_ledger": 2,
    }
    usd = next(c for c in first.totals["by_currency"] if c["currency"] == "USD")
    # Ledger: 5 settlements of 0.02 (the timeout's is missing). Sippy in USD: normal, timeout,
    # overcharged 0.03, duplicated twice.
    assert (usd["ledger"], usd["sippy"], usd["difference"]) == ("0.10", "0.11", "0.01")
    actions = {i.customer_id + ":" + i.kind: i.proposal["action"] for i in items if i.proposal}
    assert actions == {
        "timeout:missing_in_ledger": "settle_invoice",
        "phantom:missing_in_sippy": "reverse",
        "overcharged:amount_mismatch": "adjust_amount",
        "duplicated:missing_in_ledger": "record_receipt",
        "euro:amount_mismatch": "replace",
    }
    over = next(i for i in items if i.customer_id == "overcharged")
    assert over.proposal["delta"] == "0.01" and over.reference.startswith("smsledger:")
    dup = next(i for i in items if i.customer_id == "duplicated" and i.kind != "matched")
    assert "duplicate" in dup.reason
    timeout = next(i for i in items if i.customer_id == "timeout" and i.kind != "matched")
    assert timeout.reason == "Sippy debited; the ledger has no settlement for it"

    clock.now = at(2026, 11, 26, 9)
    for item in items:
        if item.kind != "matched":
            run_in_transaction(
                sessions,
                lambda s, i=item: resolve(
                    s, first.id, i.id, "accept", "accountant", "fixed", clock(), DEFAULTS
                ),
            )
    with pytest.raises(Exception, match="already"):
        run_in_transaction(
            sessions, lambda s: resolve(s, first.id, dup.id, "accept", "a", None, clock(), DEFAULTS)
        )

    second = run(sessions, client, clock)
    assert second.status == "reconciled", [
        (i.customer_id, i.kind, i.reason)
        for i in items_of(sessions, second.id)
        if i.kind != "matched"
    ]
    assert second.totals["matched"] == 6
    status = {row.customer_id: row.status for row in rows(sessions, invoices)}
    assert status["timeout"] == "paid" and status["phantom"] == "failed"
    with unit_of_work(sessions) as session:
        assert check_ledger(session) == []


def statement_csv(sim: SimulatorHandle, **rename: str) -> bytes:
    out = io.StringIO()
    columns = ["i_payment", "i_account", "payment_time", "amount", "currency", "notes", "type"]
    writer = csv.writer(out)
    writer.writerow([rename.get(c, c) for c in columns])
    for p in sim.state.payments():
        writer.writerow(
            [
                p["i_payment"],
                p["i_account"],
                p["payment_time"].isoformat(),
                p["amount"],
                p["currency"],
                p["notes"],
                p["type"],
            ]
        )
    return out.getvalue().encode()


def test_an_uploaded_statement_gives_the_same_report_as_the_api(
    sessions: sessionmaker[Session],
    sim: SimulatorHandle,
    client: SippyClient,
    clock: Clock,
    day: dict[str, uuid.UUID],
) -> None:
    from_api = run(sessions, client, clock)
    mapping = {"notes": "Reference", "amount": "Amount"}
    statement = parse_statement_csv(
        statement_csv(sim, notes="Reference", amount="Amount"), mapping, "day.csv"
    )
    from_file = run_in_transaction(
        sessions,
        lambda s: reconcile(s, statement, "statement", DAY_START, DAY_END, "test", clock(), 600),
    )
    assert {
        k: from_file.totals[k]
        for k in ("matched", "mismatched", "missing_in_sippy", "missing_in_ledger")
    } == {
        k: from_api.totals[k]
        for k in ("matched", "mismatched", "missing_in_sippy", "missing_in_ledger")
    }
    assert from_file.inputs["sha256"] and from_file.inputs["file"] == "day.csv"
    assert from_file.inputs["mapping"] == mapping


def test_matching_falls_back_to_account_amount_and_time(
    sessions: sessionmaker[Session],
    client: SippyClient,
    clock: Clock,
    day: dict[str, uuid.UUID],
    sim: SimulatorHandle,
) -> None:
    """A debit whose notes were lost (a statement typed by hand) still matches its settlement
    when account, amount and currency agree within the window."""
    raw = statement_csv(sim).decode().replace(f"smsledger:{day['normal']}", "typed-by-hand")
    statement = parse_statement_csv(raw.encode())
    result = run_in_transaction(
        sessions,
        lambda s: reconcile(s, statement, "statement", DAY_START, DAY_END, "t", clock(), 600),
    )
    normal = [i for i in items_of(sessions, result.id) if i.customer_id == "normal"]
    assert [(i.kind, i.match_rule) for i in normal] == [("matched", "account_amount_time")]
    late = parse_statement_csv(raw.replace("T03:00:00", "T03:30:00").encode())
    for window, kinds in ((600, ["missing_in_ledger", "missing_in_sippy"]), (3600, ["matched"])):
        result = run_in_transaction(
            sessions,
            lambda s, w=window: reconcile(
                s, late, "statement", DAY_START, DAY_END, "t", clock(), w
            ),
        )
        normal = [i for i in items_of(sessions, result.id) if i.customer_id == "normal"]
        assert sorted(i.kind for i in normal) == kinds, window


def test_an_invoice_reversed_by_reconciliation_then_charged_by_hand_settles_and_matches(
    sessions: sessionmaker[Session], client: SippyClient, clock: Clock, day: dict[str, uuid.UUID]
) -> None:
    """Sippy never had the phantom charge: accepting reverses its settlement and fails the
    invoice; an operator then charges it by hand in Sippy with the invoice's reference shape (no
    attempt of ours): the next run proposes settling it, and the run after matches."""
    first = run(sessions, client, clock)
    (phantom,) = [i for i in items_of(sessions, first.id) if i.customer_id == "phantom"]
    clock.now = at(2026, 11, 24, 6)
    accept(sessions, first.id, phantom.id, clock)
    (invoice,) = rows(sessions, invoices, invoices.c.customer_id == "phantom")
    assert invoice.status == "failed" and invoice.next_retry_at is None
    reference = f"smsledger:{invoice.id}:{uuid.uuid4()}"
    assert client.debit(1003, Money(20_000, "USD"), reference, clock()).status == "accepted"
    second = run(sessions, client, clock)
    (item,) = [i for i in items_of(sessions, second.id) if i.reference == reference]
    assert item.kind == "missing_in_ledger" and item.proposal["action"] == "settle_invoice"
    accept(sessions, second.id, item.id, clock)
    (invoice,) = rows(sessions, invoices, invoices.c.customer_id == "phantom")
    assert invoice.status == "paid" and invoice.attempts == 2
    third = run(sessions, client, clock)
    matched = [i for i in items_of(sessions, third.id) if i.customer_id == "phantom"]
    assert [(i.kind, i.match_rule) for i in matched] == [("matched", "reference")]
    with unit_of_work(sessions) as session:
        assert check_ledger(session) == []
