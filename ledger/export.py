"""Reading the whole ledger out for accountants' tools (docs/export.md): its accounts with the
day each opened, their balances at a range's bounds, and its journal entries in effective order.

A range is [start, end) on `effective_at`, either bound open. Everything is read in one
snapshot (`begin_snapshot`), so the balances agree with the transfers streamed after them even
while usage keeps being posted. The transfers come through a server-side cursor, a batch at a
time: a ledger of millions of transfers is never held in memory, only its accounts are.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.accounts import row_to_account
from ledger.balances import list_balances
from ledger.model import Account, Balance, Transfer
from ledger.posting import transfer_from
from ledger.tables import accounts, transfers

BATCH_SIZE = 2_000
"""Transfers fetched from the server-side cursor at a time."""

_ONE_TICK = timedelta(microseconds=1)
"""Both databases keep microseconds: inclusive `as_of` one tick before a bound is `< bound`."""


@dataclass(frozen=True, slots=True)
class ExportedAccount:
    """An account as an export declares it: when it opened (the UTC day of its creation or of
    its first effective transfer, whichever is earlier: usage may be effective before the
    account was created on its first post), and its debits and credits before the range's
    start (None without a start) and before its end."""

    account: Account
    opened_on: date
    opening: Balance | None
    closing: Balance


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote: accounts declared, journal entries and transfers."""

    accounts: int
    entries: int
    transfers: int


def begin_snapshot(session: Session) -> None:
    """Make the session's transaction one read-only snapshot (PostgreSQL: REPEATABLE READ).

    Call it on a fresh session, before any query. SQLite's transaction is a snapshot already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )


def before(bound: datetime) -> datetime:
    """The inclusive `as_of` that means "effective before `bound`"."""
    return bound - _ONE_TICK


def export_accounts(
    session: Session, start: datetime | None, end: datetime | None
) -> list[ExportedAccount]:
    """Every account that exists by the range's end (opened before `end`), by code, with its
    balances before `start` and before `end` (now, without an end)."""
    first_effective = _first_effective_by_account(session)
    created = dict(session.execute(sa.select(accounts.c.id, accounts.c.created_at)).all())
    closing = list_balances(session, as_of=before(end) if end else None).balances
    opening: dict[int, Balance] = {}
    if start is not None:
        opening = {b.account.id: b for b in list_balances(session, as_of=before(start)).balances}
    found = []
    for balance in closing:
        account = balance.account
        moments = [created[account.id], *filter(None, [first_effective.get(account.id)])]
        opened_at = min(moments)
        if end is not None and opened_at >= end:
            continue
        found.append(ExportedAccount(account, opened_at.date(), opening.get(account.id), balance))
    return found


def accounts_by_id(session: Session) -> dict[int, Account]:
    """Every account, by id."""
    return {row.id: row_to_account(row) for row in session.execute(sa.select(accounts))}


def _first_effective_by_account(session: Session) -> dict[int, datetime]:
    first: dict[int, datetime] = {}
    for side in (transfers.c.debit_account_id, transfers.c.credit_account_id):
        query = sa.select(side, sa.func.min(transfers.c.effective_at)).group_by(side)
        for account_id, moment in session.execute(query):
            if account_id not in first or moment < first[account_id]:
                first[account_id] = moment
    return first


def journal_entries(
    session: Session,
    codes: dict[int, str],
    start: datetime | None,
    end: datetime | None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[list[Transfer]]:
    """The journal entries effective in [start, end), oldest first: each as its transfers in
    leg order. `codes` names every account by id (the export's accounts).

    Streamed through a server-side cursor (`yield_per`), so memory stays at one batch.
    """
    in_range: list[sa.ColumnElement[bool]] = []
    if start is not None:
        in_range.append(transfers.c.effective_at >= start)
    if end is not None:
        in_range.append(transfers.c.effective_at < end)
    query = (
        sa.select(transfers)
        .where(*in_range)
        .order_by(transfers.c.effective_at, transfers.c.journal_id, transfers.c.leg)
    )
    rows = session.execute(query, execution_options={"yield_per": batch_size})
    stream = (
        transfer_from(
            row._mapping,
            codes[row._mapping["debit_account_id"]],
            codes[row._mapping["credit_account_id"]],
        )
        for row in rows
    )
    # Every leg of an entry shares its effective instant, so an entry's transfers are adjacent.
    for _journal, entry in itertools.groupby(stream, key=lambda transfer: transfer.journal_id):
        yield list(entry)


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, microseconds only when there are any."""
    return moment.isoformat().replace("+00:00", "Z")
