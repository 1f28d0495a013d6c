"""Reading balances: now (from the cached rows), as of any instant, per account and for the
whole ledger, and account statements with running balances.

`as_of` is inclusive and measured on `effective_at`: the balance as the world stood at that
instant, including usage that was posted later but happened before it. It is derived as the
cached balance minus what became effective after the instant, which reads only the tail of the
account's (account, effective_at) index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.accounts import get_account, row_to_account
from ledger.archived import archive_cut, archived_sums, refuse_before_cut
from ledger.model import Account, Balance, Transfer, signed_balance
from ledger.posting import select_transfers
from ledger.tables import accounts, balances, transfers


def side_sum(side: sa.Column[Any], *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
    return (
        sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0))
        .where(side == accounts.c.id, *where)
        .scalar_subquery()
    )


def _balance_columns(as_of: datetime | None) -> tuple[sa.ColumnElement[Any], ...]:
    cached_debits = (
        sa.select(sa.func.sum(balances.c.debits))
        .where(balances.c.account_id == accounts.c.id)
        .scalar_subquery()
    )
    cached_credits = (
        sa.select(sa.func.sum(balances.c.credits))
        .where(balances.c.account_id == accounts.c.id)
        .scalar_subquery()
    )
    if as_of is None:
        return cached_debits.label("debits"), cached_credits.label("credits")
    later = transfers.c.effective_at > as_of
    return (
        (cached_debits - side_sum(transfers.c.debit_account_id, later)).label("debits"),
        (cached_credits - side_sum(transfers.c.credit_account_id, later)).label("credits"),
    )


def _to_balance(row: Any, as_of: datetime | None) -> Balance:
    return Balance(row_to_account(row), int(row.debits or 0), int(row.credits or 0), as_of)


def account_balance(session: Session, code: str, as_of: datetime | None = None) -> Balance:
    """One account's debits, credits and balance, now or as of an instant.

    Raises: UnknownAccount; ArchivedPeriod for an instant before the archive cut.
    """
    get_account(session, code)
    if as_of is not None:
        refuse_before_cut(session, as_of, "a balance")
    row = session.execute(
        sa.select(accounts, *_balance_columns(as_of)).where(accounts.c.code == code)
    ).one()
    return _to_balance(row, as_of)


def cached_balances(session: Session, codes: list[str]) -> dict[str, Balance]:
    """Current balances of the existing accounts among `codes`, in one query."""
    if not codes:
        return {}
    rows = session.execute(
        sa.select(accounts, *_balance_columns(None)).where(accounts.c.code.in_(sorted(set(codes))))
    )
    return {row.code: _to_balance(row, None) for row in rows}


@dataclass(frozen=True, slots=True)
class AccountPage:
    balances: list[Balance]
    total: int


def list_balances(
    session: Session,
    *,
    as_of: datetime | None = None,
    customer_id: str | None = None,
    currency: str | None = None,
    account_type: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> AccountPage:
    """Accounts with their balances, by code, filtered and paged in SQL.

    Raises: ArchivedPeriod for an `as_of` before the archive cut."""
    if as_of is not None:
        refuse_before_cut(session, as_of, "a balance")
    filters: list[sa.ColumnElement[bool]] = []
    if customer_id is not None:
        filters.append(accounts.c.customer_id == customer_id)
    if currency is not None:
        filters.append(accounts.c.currency == currency)
    if account_type is not None:
        filters.append(accounts.c.type == account_type)
    total = session.execute(
        sa.select(sa.func.count()).select_from(accounts).where(*filters)
    ).scalar_one()
    query = (
        sa.select(accounts, *_balance_columns(as_of))
        .where(*filters)
        .order_by(accounts.c.code)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = session.execute(query)
    return AccountPage([_to_balance(row, as_of) for row in rows], int(total))


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    debits: int
    credits: int

    @property
    def balanced(self) -> bool:
        return self.debits == self.credits


@dataclass(frozen=True, slots=True)
class TrialBalance:
    as_of: datetime | None
    accounts: list[Balance]
    currencies: dict[str, CurrencyTotals]


def trial_balance(session: Session, as_of: datetime | None = None) -> TrialBalance:
    """Every account's balance and, per currency, total debits against total credits."""
    every = list_balances(session, as_of=as_of).balances
    sums: dict[str, list[int]] = {}
    for balance in every:
        pair = sums.setdefault(balance.account.currency, [0, 0])
        pair[0] += balance.debits
        pair[1] += balance.credits
    return TrialBalance(
        as_of, every, {cur: CurrencyTotals(d, c) for cur, (d, c) in sorted(sums.items())}
    )


@dataclass(frozen=True, slots=True)
class StatementLine:
    transfer: Transfer
    side: str
    balance_after: int


@dataclass(frozen=True, slots=True)
class Statement:
    account: Account
    opening_balance: int
    closing_balance: int
    lines: list[StatementLine]
    total: int
    # Where it starts: as asked, or the archive cut when asked from the beginning.
    start: datetime | None = None


def statement(
    session: Session,
    code: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Statement:
    """The account's transfers effective in [start, end), oldest first, each with the running
    balance after it; opening and closing balances frame the range. With months archived, a
    statement without `start` starts at the archive cut, its opening balance what the archived
    transfers sum to.

    Raises: UnknownAccount; ArchivedPeriod for a `start` before the archive cut.
    """
    account = get_account(session, code)
    cut = archive_cut(session)
    if cut is not None:
        if start is None:
            start = cut[0]
        refuse_before_cut(session, start, "a statement")
    sign = 1 if account.type.debit_normal else -1
    in_range: list[sa.ColumnElement[bool]] = []
    if start is not None:
        in_range.append(transfers.c.effective_at >= start)
    if end is not None:
        in_range.append(transfers.c.effective_at < end)

    def side(column: sa.Column[Any], signed: int, label: str) -> sa.Select[Any]:
        return sa.select(
            transfers.c.id,
            transfers.c.effective_at,
            (transfers.c.amount * signed).label("signed"),
            sa.literal(label).label("side"),
        ).where(column == account.id, *in_range)

    lines = sa.union_all(
        side(transfers.c.debit_account_id, sign, "debit"),
        side(transfers.c.credit_account_id, -sign, "credit"),
    ).subquery()
    running = sa.select(
        lines.c.id,
        lines.c.effective_at,
        lines.c.side,
        sa.func.sum(lines.c.signed)
        .over(order_by=(lines.c.effective_at, lines.c.id))
        .label("running"),
        sa.func.sum(lines.c.signed).over().label("range_total"),
        sa.func.count().over().label("total"),
    ).subquery()
    page = session.execute(
        sa.select(running)
        .order_by(running.c.effective_at, running.c.id)
        .limit(limit)
        .offset(offset)
    ).all()
    opening = _opening_balance(session, account, start)
    by_id = {t.id: t for t in select_transfers(session, transfers.c.id.in_([r.id for r in page]))}
    statement_lines = [
        StatementLine(by_id[row.id], row.side, opening + int(row.running)) for row in page
    ]
    if page:
        range_total, total = int(page[0].range_total), int(page[0].total)
    else:
        range_total, total = _range_totals(session, running)
    return Statement(account, opening, opening + range_total, statement_lines, total, start)


def _range_totals(session: Session, running: Any) -> tuple[int, int]:
    row = session.execute(
        sa.select(sa.func.max(running.c.range_total), sa.func.count()).select_from(running)
    ).one()
    return int(row[0] or 0), int(row[1])


def _opening_balance(session: Session, account: Account, start: datetime | None) -> int:
    if start is None:
        return 0
    before = transfers.c.effective_at < start
    row = session.execute(
        sa.select(
            side_sum(transfers.c.debit_account_id, before),
            side_sum(transfers.c.credit_account_id, before),
        ).where(accounts.c.id == account.id)
    ).one()
    archived_debits, archived_credits = archived_sums(session, account.id)
    return signed_balance(
        account.type, int(row[0]) + archived_debits, int(row[1]) + archived_credits
    )


def lock_balance_rows(session: Session, account_ids: list[int]) -> None:
    """Lock these accounts' cached balance rows, in account order (no deadlock between two
    lockers), until the transaction ends. Every posting that moves one of them waits, so a
    reader holding the lock sees all their committed transfers and no new one appears. A
    no-op lock on SQLite, whose `BEGIN IMMEDIATE` already serialises writers."""
    session.execute(
        sa.select(balances.c.account_id)
        .where(balances.c.account_id.in_(sorted(account_ids)))
        .order_by(balances.c.account_id, balances.c.slot)
        .with_for_update()
    ).all()
