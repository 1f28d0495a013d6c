"""`smsledger export` on the embedded default (SQLite): the Beancount journal loads without an
error and agrees with the trial balance, the CSV balances, and journal entries stream whole
whatever the batch size."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from beancount import loader
from beancount.core import data, realization

from api import create_app
from billing.chart import ensure_chart
from infra.config import Config
from ledger.balances import trial_balance
from ledger.db import unit_of_work
from ledger.export import accounts_by_id, journal_entries
from ledger.model import EntryRequest, Kind, Leg
from ledger.posting import post_entries, reverse_transfer
from tests.conftest import NOW, Clock


def test_the_export_works_on_sqlite(sqlite_url: str) -> None:
    app = create_app(Config(database_url=sqlite_url), clock=Clock())
    sessions = app.extensions["smsledger"].sessions
    with unit_of_work(sessions) as session:
        ensure_chart(session, "42", "USD", NOW)
        ensure_chart(session, "7", "EUR", NOW)
        posted = post_entries(
            session,
            [
                EntryRequest(
                    Kind.USAGE, "m1", (Leg("customer:42:unbilled", "revenue:sms:USD", 7_000),)
                ),
                EntryRequest(
                    Kind.USAGE, "m2", (Leg("customer:42:unbilled", "revenue:sms:USD", 7_500),)
                ),
                EntryRequest(
                    Kind.USAGE, "e1", (Leg("customer:7:unbilled", "revenue:sms:EUR", 6_800),)
                ),
                EntryRequest(
                    Kind.INVOICE,
                    "i1",
                    (
                        Leg("customer:42:receivable", "customer:42:unbilled", 14_500),
                        Leg("customer:42:receivable", "rounding:USD", 5_500),
                    ),
                    description="invoice i1",
                ),
            ],
            NOW,
        )
        reverse_transfer(session, posted[2].transfers[0].id, "void:e1", NOW)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["export", "--format", "beancount"])
    assert result.exit_code == 0, result.output
    entries, errors, _ = loader.load_string(result.stdout)
    assert errors == [], [e.message for e in errors]
    names = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    with unit_of_work(sessions) as session:
        trial = trial_balance(session)
        codes = {i: a.code for i, a in accounts_by_id(session).items()}
        whole = [[t.id for t in e] for e in journal_entries(session, codes, None, None)]
        one_by_one = [[t.id for t in e] for e in journal_entries(session, codes, None, None, 1)]
    ours = {b.account.code: b.debits - b.credits for b in trial.accounts}
    currency = {b.account.code: b.account.currency for b in trial.accounts}
    root = realization.realize(entries)
    theirs = {
        code: realization.get(root, name).balance.get_currency_units(currency[code]).number
        for name, code in names.items()
    }
    assert theirs == {code: Decimal(micros).scaleb(-6) for code, micros in ours.items()}
    assert whole == one_by_one and [len(e) for e in whole].count(2) == 1

    table = runner.invoke(args=["export", "--format", "csv", "--from", "2026-11-24"])
    assert table.exit_code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout, newline="")))
    assert len(rows) == 2 * 6
    for currency in ("USD", "EUR"):
        mine = [r for r in rows if r["currency"] == currency]
        debits = sum(Decimal(r["debit"]) for r in mine if r["debit"])
        credits = sum(Decimal(r["credit"]) for r in mine if r["credit"])
        assert debits == credits > 0
    app.extensions["smsledger"].engine.dispose()
