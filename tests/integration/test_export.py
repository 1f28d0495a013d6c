"""`smsledger export`: the ledger as a Beancount journal that the real beancount loads without a
single error and whose balances equal the trial balance to the micro-unit, for the whole ledger
and for a range carried in from before it; and as a general-ledger CSV whose debits equal its
credits. The ledger is a month's worth of billing in two currencies, posted through the API:
usage, a void, closes into invoices, a charge settled through the Sippy simulator, a pending
invoice, manual adjustments and the reversal of one, and customer ids whose Beancount names
would collide without the hash suffix."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from beancount import loader
from beancount.core import account as beancount_account
from beancount.core import data, realization

from billing.customers import update_customer
from ledger.balances import TrialBalance, trial_balance
from ledger.beancount_journal import beancount_names, plain_name, write_beancount
from ledger.db import unit_of_work
from ledger.export import accounts_by_id, before, journal_entries
from ledger.general_ledger_csv import COLUMNS
from ledger.model import Account, AccountType
from sippy_simulator.server import SimulatorHandle
from tests.client import ApiClient
from tests.conftest import Clock
from tests.scenarios import charge_at_once, charging_config, load_rates, sms

pytestmark = pytest.mark.postgres

RECORDS = "/api/admin/sms/billing"
MICROS = Decimal(1_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 20, 9, 0, tzinfo=UTC))


@pytest.fixture
def api(
    make_api: Callable[..., ApiClient],
    pg_url: str,
    clock: Clock,
    start_sim: Callable[..., SimulatorHandle],
) -> Iterator[ApiClient]:
    """Charges run at once against the simulator, as in production with a worker."""
    sim = start_sim(clock=clock)
    api = make_api(charging_config(pg_url, sim))
    load_rates(api.sessions, datetime(2026, 1, 1, tzinfo=UTC))
    charge_at_once(api, sim)
    state = api.runtime
    yield api
    state.extras.pop("dispatch_charges")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def build_ledger(api: ApiClient, clock: Clock) -> None:
    """Three weeks of billing for four customers in USD and EUR (see the module docstring)."""
    service, admin, cron = api.as_role("service"), api.as_role("admin"), api.as_cron()
    created = admin.post("/api/admin/customers", {"user_id": "eu-7", "currency": "EUR"})
    assert created.status_code == 201, created.json
    # Day 1: usage for everyone; "x.y" and "x_y" both sanitise to Assets:Customer:X-Y:….
    events = [
        sms("m-1", at(20, 9), user="42"),
        sms("m-2", at(20, 10), user="42", destination="+4915112345678", segments=3),
        sms("m-3", at(20, 11), user="42", destination="+12025550123"),
        sms("m-4", at(20, 12), user="42"),
        sms("e-1", at(20, 9, 30), user="eu-7"),
        sms("e-2", at(20, 13), user="eu-7", destination="+4915112345678", segments=2),
        sms("d-1", at(20, 14), user="x.y"),
        sms("d-2", at(20, 15), user="x_y", destination="+33612345678"),
    ]
    assert service.post("/api/usage", {"events": events}).status_code == 201
    assert service.post("/api/usage/m-4/void", {"reason": "send failed"}).status_code == 201
    with unit_of_work(api.sessions) as session:
        update_customer(session, "42", clock(), sippy_account_id="1001")
    # Day 2, 02:00: the daily close invoices day 1; 42's invoice is charged and settles at once.
    clock.now = at(21, 2)
    closed = cron.post("/api/cron/process-sms-billing?type=daily").json
    assert closed["invoices_created"] == 4, closed
    statuses = Counter(r["status"] for r in admin.get(RECORDS).json["items"])
    assert statuses["paid"] == 1, statuses
    # Day 2: a credit note by hand, one posted in error and reversed, and more usage.
    clock.now = at(21, 10)
    credit = {
        "idempotency_key": "goodwill-42",
        "kind": "adjustment",
        "description": 'Goodwill credit, "network outage" 20 Nov',
        "metadata": {"ticket": "OPS-118", "note": "line one\nline two \\ end"},
        "transfers": [
            {
                "debit_account": "adjustments:USD",
                "credit_account": "customer:42:receivable",
                "amount": "0.005000",
            }
        ],
    }
    assert admin.post("/api/ledger/transfers", credit).status_code == 201
    mistake = admin.post(
        "/api/ledger/transfers",
        {
            "idempotency_key": "opening-eu-7",
            "kind": "opening",
            "transfers": [
                {
                    "debit_account": "customer:eu-7:receivable",
                    "credit_account": "opening-balance:EUR",
                    "amount": "12.345678",
                },
                {
                    "debit_account": "customer:eu-7:receivable",
                    "credit_account": "opening-balance:EUR",
                    "amount": "0.000001",
                },
            ],
        },
    )
    assert mistake.status_code == 201, mistake.json
    wrong = mistake.json["transfers"][0]["id"]
    reversed_ = admin.post(f"/api/ledger/transfers/{wrong}/reverse", {"idempotency_key": "undo-1"})
    assert reversed_.status_code == 201, reversed_.json
    more = [
        sms("m-5", at(21, 12), user="42"),
        sms("m-6", at(21, 23, 59), user="42", destination="+919812345678"),
        sms("e-3", at(21, 16), user="eu-7"),
    ]
    clock.now = at(22, 0, 30)
    assert service.post("/api/usage", {"events": more}).status_code == 201
    # Day 3, 02:00: the second close; usage of day 3 stays unbilled.
    clock.now = at(22, 2)
    assert cron.post("/api/cron/process-sms-billing?type=daily").json["errors"] == 0
    clock.now = at(22, 9)
    assert service.post("/api/usage", sms("m-7", at(22, 8), user="42")).status_code == 201


def export(api: ApiClient, tmp_path: Path, *args: str) -> str:
    out = tmp_path / "export.out"
    result = api.app.test_cli_runner().invoke(args=["export", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported" in result.output
    return out.read_text(encoding="utf-8")


def load(text: str) -> tuple[list[Any], dict[str, str]]:
    """The journal's entries, checked by beancount (no error allowed), and each Beancount name's
    smsledger code (from its `open` directive's metadata)."""
    entries, errors, _options = loader.load_string(text)
    assert errors == [], "\n".join(str(e.message) for e in errors)
    names = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    return entries, names


def beancount_balances(entries: list[Any], names: dict[str, str]) -> dict[str, int]:
    """Debits minus credits per smsledger code, as Beancount's realization computes them."""
    real_root = realization.realize(entries)
    found = {}
    for name, code in names.items():
        inventory = realization.get(real_root, name).balance
        positions = list(inventory)
        assert len(positions) <= 1, (name, positions)
        number = positions[0].units.number if positions else Decimal(0)
        micros = number * MICROS
        assert micros == micros.to_integral_value(), (name, number)
        found[code] = int(micros)
    return found


def ledger_balances(trial: TrialBalance) -> dict[str, int]:
    return {b.account.code: b.debits - b.credits for b in trial.accounts}


def test_the_whole_ledger_loads_in_beancount_and_agrees_with_the_trial_balance(
    api: ApiClient, clock: Clock, tmp_path: Path
) -> None:
    build_ledger(api, clock)
    text = export(api, tmp_path, "--format", "beancount")
    entries, names = load(text)
    with unit_of_work(api.sessions) as session:
        trial = trial_balance(session)
        journals = session.execute(
            sa.text("SELECT count(DISTINCT journal_id) FROM transfers")
        ).scalar_one()
    ours = ledger_balances(trial)
    theirs = beancount_balances(entries, names)
    assert theirs == ours
    # The same through the function: one REPEATABLE READ snapshot, streamed in any batch size.
    with unit_of_work(api.sessions, commit=False) as session:
        buffer = io.StringIO()
        summary = write_beancount(session, buffer)
        isolation = session.execute(sa.text("SHOW transaction_isolation")).scalar_one()
        codes = {i: a.code for i, a in accounts_by_id(session).items()}
        streamed = [[t.id for t in e] for e in journal_entries(session, codes, None, None)]
        in_threes = [[t.id for t in e] for e in journal_entries(session, codes, None, None, 3)]
    assert buffer.getvalue() == text and isolation == "repeatable read"
    assert (summary.accounts, summary.entries) == (len(ours), journals)
    assert streamed == in_threes and len(streamed) == journals
    assert set(names.values()) == set(ours)  # every account opened, under one name each
    assert any(v != 0 for v in ours.values()) and set(trial.currencies) == {"EUR", "USD"}
    transactions = [e for e in entries if isinstance(e, data.Transaction)]
    assert len(transactions) == journals
    assert {t.meta["kind"] for t in transactions} >= {
        "usage",
        "invoice",
        "settlement",
        "reversal",
        "adjustment",
        "opening",
    }
    # Each transfer is two postings carrying its id; the journal id, kind, key on the entry.
    transfer_ids = Counter(p.meta["transfer_id"] for t in transactions for p in t.postings)
    assert set(transfer_ids.values()) == {2}
    opening = next(t for t in transactions if t.meta["idempotency_key"] == "opening-eu-7")
    assert (
        len(opening.postings) == 4 and len({p.meta["transfer_id"] for p in opening.postings}) == 2
    )
    goodwill = next(t for t in transactions if t.meta["idempotency_key"] == "goodwill-42")
    assert goodwill.narration == 'Goodwill credit, "network outage" 20 Nov'
    assert '"line one\\nline two \\\\ end"' in goodwill.postings[0].meta["metadata"]
    assert (
        "reverses_id"
        in next(t for t in transactions if t.meta["idempotency_key"] == "undo-1").postings[0].meta
    )
    # The names: by type, capitalised, and the two customers that sanitise alike kept apart.
    by_code = {code: name for name, code in names.items()}
    assert by_code["customer:42:receivable"] == "Assets:Customer:42:Receivable"
    assert by_code["revenue:sms:EUR"] == "Income:Revenue:Sms:EUR"
    assert by_code["opening-balance:EUR"] == "Equity:Opening-Balance:EUR"
    assert by_code["adjustments:USD"] == "Expenses:Adjustments:USD"
    assert by_code["customer:eu-7:unbilled"] == "Assets:Customer:Eu-7:Unbilled"
    dotted, underscored = by_code["customer:x.y:unbilled"], by_code["customer:x_y:unbilled"]
    assert dotted != underscored
    assert dotted.startswith("Assets:Customer:X-Y:Unbilled-") and len(dotted) == 37
    # The balance assertions are the ledger's, exact: one micro-unit off and bean-check fails.
    assertion_day = (max(t.date for t in transactions) + timedelta(days=1)).isoformat()
    asserted = [e for e in entries if isinstance(e, data.Balance)]
    assert len(asserted) == len(ours) and {e.date.isoformat() for e in asserted} == {assertion_day}
    line = next(ln for ln in text.splitlines() if " balance Income:Revenue:Sms:USD " in ln)
    number = line.split()[3]
    tampered = text.replace(line, line.replace(number, str(Decimal(number) - Decimal("0.000001"))))
    _, errors, _ = loader.load_string(tampered)
    assert [type(e).__name__ for e in errors] == ["BalanceError"]


def test_a_range_carries_earlier_balances_in_and_asserts_the_balances_at_its_end(
    api: ApiClient, clock: Clock, tmp_path: Path
) -> None:
    build_ledger(api, clock)
    text = export(
        api, tmp_path, "--format", "beancount", "--from", "2026-11-21", "--to", "2026-11-22"
    )
    entries, names = load(text)
    end = at(22, 0)
    with unit_of_work(api.sessions) as session:
        at_end = ledger_balances(trial_balance(session, as_of=before(end)))
        at_start = ledger_balances(trial_balance(session, as_of=before(at(21, 0))))
    theirs = beancount_balances(entries, names)
    assert theirs == {code: at_end[code] for code in names.values()}
    assert set(names.values()) == set(at_end)  # every account existed by then
    transactions = [e for e in entries if isinstance(e, data.Transaction)]
    carried, *in_range = transactions
    assert "carried-in" in carried.tags and carried.date.isoformat() == "2026-11-21"
    assert {names[p.account]: int(p.units.number * MICROS) for p in carried.postings} == {
        code: net for code, net in at_start.items() if net
    }
    assert {t.date.isoformat() for t in in_range} == {"2026-11-21"}
    effective = sorted(t.meta["effective_at"] for t in in_range)
    assert effective[0] >= "2026-11-21T00:00:00Z" and effective[-1] < "2026-11-22T00:00:00Z"
    assert "m-6" in {t.meta["idempotency_key"] for t in in_range}  # posted late, effective 21st
    assert "m-7" not in text  # effective after the range
    assert {e.date.isoformat() for e in entries if isinstance(e, data.Balance)} == {"2026-11-22"}
    # A range ending mid-day: the assertions fall on the next day and still agree.
    noon = export(
        api,
        tmp_path,
        "--format",
        "beancount",
        "--from",
        "2026-11-20T12:00:00Z",
        "--to",
        "2026-11-21T12:00:00+00:00",
    )
    entries, names = load(noon)
    with unit_of_work(api.sessions) as session:
        at_noon = ledger_balances(trial_balance(session, as_of=before(at(21, 12))))
    assert beancount_balances(entries, names) == {code: at_noon[code] for code in names.values()}
    refused = api.app.test_cli_runner().invoke(
        args=["export", "--format", "csv", "--from", "2026-11-22", "--to", "2026-11-21"]
    )
    assert refused.exit_code == 2 and "--to after --from" in refused.output


def test_the_general_ledger_csv_has_a_row_per_posting_and_balances(
    api: ApiClient, clock: Clock, tmp_path: Path
) -> None:
    build_ledger(api, clock)
    text = export(api, tmp_path, "--format", "csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = list(reader)
    with unit_of_work(api.sessions) as session:
        trial = trial_balance(session)
    totals: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    net: dict[str, int] = defaultdict(int)
    types = {b.account.code: b.account.type.value for b in trial.accounts}
    for row in rows:
        assert bool(row["debit"]) != bool(row["credit"])
        amount = row["debit"] or row["credit"]
        assert len(amount.split(".")[1]) == 6
        side = 0 if row["debit"] else 1
        totals[row["currency"]][side] += Decimal(amount)
        net[row["account"]] += int(Decimal(amount) * MICROS) * (1 if side == 0 else -1)
        assert row["account_type"] == types[row["account"]]
        assert row["date"] == row["effective_at"][:10]
    for currency, (debits, credits) in totals.items():
        assert debits == credits, currency
        cents = trial.currencies[currency]
        assert (debits * MICROS, credits * MICROS) == (cents.debits, cents.credits)
    ledger = {code: value for code, value in ledger_balances(trial).items() if value}
    assert {code: value for code, value in net.items() if value} == ledger
    per_transfer = Counter(row["transfer_id"] for row in rows)
    assert set(per_transfer.values()) == {2}
    goodwill = [row for row in rows if row["idempotency_key"] == "goodwill-42"]
    assert [r["account"] for r in goodwill] == ["adjustments:USD", "customer:42:receivable"]
    assert goodwill[0]["description"] == 'Goodwill credit, "network outage" 20 Nov'
    assert '"ticket":"OPS-118"' in goodwill[0]["metadata"]
    ranged = export(api, tmp_path, "--format", "csv", "--from", "2026-11-21", "--to", "2026-11-22")
    dates = {row["date"] for row in csv.DictReader(io.StringIO(ranged, newline=""))}
    assert dates == {"2026-11-21"}


def test_beancount_names_are_valid_and_never_shared_even_when_sanitising_collides() -> None:
    def acct(code: str, account_type: AccountType = AccountType.ASSET) -> Account:
        return Account(0, code, account_type, "USD", None, False, False, False)

    odd = ["customer:ab:x", "customer:Ab:x", "customer:a_b:x", "customer:a.b:x", "::", "é:-:_"]
    plain = plain_name("customer:a_b:x", AccountType.ASSET)
    # A code whose plain name is another code's hashed name: suffixed in turn.
    trap = f"customer:a-b:x-{hashlib.sha256(b'customer:a_b:x').hexdigest()[:8]}"
    found = [acct(code) for code in [*odd, trap]] + [acct("rounding:USD", AccountType.REVENUE)]
    names = beancount_names(found)
    assert len(set(names.values())) == len(found)
    assert all(beancount_account.is_valid(name) for name in names.values()), names
    assert names["rounding:USD"] == "Income:Rounding:USD"
    assert plain == "Assets:Customer:A-B:X" and names["::"].startswith("Assets:X:X:X-")
    assert names["customer:a_b:x"] != names[trap] and names[trap].startswith(plain + "-")
