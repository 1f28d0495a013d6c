"""Declaring and finding accounts by code.

Accounts are created on first use and never change afterwards, so "ensure" is safe to call
from concurrent units of work: the unique code decides, and a re-declaration that differs is
refused rather than silently ignored.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ledger.errors import AccountConflict, UnknownAccount
from ledger.model import Account, AccountSpec, AccountType
from ledger.tables import HOT_SLOTS, accounts, balances


def insert_ignoring_conflicts(session: Session, table: sa.Table) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` for whichever database the session is bound to."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table)


def row_to_account(row: Any) -> Account:
    return Account(
        id=row.id,
        code=row.code,
        type=AccountType(row.type),
        currency=row.currency,
        customer_id=row.customer_id,
        debits_must_not_exceed_credits=row.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits=row.credits_must_not_exceed_debits,
        hot=row.hot,
    )


# Accounts never change once created, so each process remembers the ones it has seen in a
# committed unit of work (per engine: per database). Rows read or created in a unit of work that
# rolls back are forgotten with it.
_committed: weakref.WeakKeyDictionary[sa.Engine, dict[str, Account]] = weakref.WeakKeyDictionary()
_SEEN = "ledger.accounts_seen"


def _engine_of(session: Session) -> sa.Engine:
    return session.get_bind().engine


def committed_accounts(engine: sa.Engine, codes: Iterable[str]) -> dict[str, Account]:
    """The accounts among `codes` this process has seen committed on `engine` (no query)."""
    known = _committed.get(engine, {})
    return {code: known[code] for code in codes if code in known}


@event.listens_for(Session, "after_commit")
def _remember_accounts(session: Session) -> None:
    seen = session.info.pop(_SEEN, None)
    if seen:
        _committed.setdefault(_engine_of(session), {}).update(seen)


@event.listens_for(Session, "after_rollback")
def _forget_accounts(session: Session) -> None:
    session.info.pop(_SEEN, None)


def find_accounts(session: Session, codes: Iterable[str]) -> dict[str, Account]:
    """The accounts among `codes` that exist, by code (at most one query)."""
    wanted = set(codes)
    if not wanted:
        return {}
    known = _committed.get(_engine_of(session), {})
    found = {code: known[code] for code in wanted if code in known}
    missing = sorted(wanted - found.keys())
    if missing:
        rows = session.execute(sa.select(accounts).where(accounts.c.code.in_(missing)))
        fresh = {row.code: row_to_account(row) for row in rows}
        session.info.setdefault(_SEEN, {}).update(fresh)
        found.update(fresh)
    return found


def get_account(session: Session, code: str) -> Account:
    """Raises: UnknownAccount."""
    found = find_accounts(session, [code])
    if code not in found:
        raise UnknownAccount(f"no account {code!r}", account=code)
    return found[code]


def ensure_accounts(
    session: Session, specs: Iterable[AccountSpec], now: datetime
) -> dict[str, Account]:
    """Create the accounts that do not exist yet and return all of them by code.

    Raises: AccountConflict when an existing account differs from its spec.
    """
    by_code = {spec.code: spec for spec in specs}
    if not by_code:
        return {}
    existing = find_accounts(session, by_code)
    missing = [spec for code, spec in sorted(by_code.items()) if code not in existing]
    if missing:
        session.execute(
            insert_ignoring_conflicts(session, accounts).on_conflict_do_nothing(
                index_elements=["code"]
            ),
            [
                {
                    "code": spec.code,
                    "type": spec.type.value,
                    "currency": spec.currency,
                    "customer_id": spec.customer_id,
                    "debits_must_not_exceed_credits": spec.debits_must_not_exceed_credits,
                    "credits_must_not_exceed_debits": spec.credits_must_not_exceed_debits,
                    "hot": spec.hot,
                    "created_at": now,
                }
                for spec in missing
            ],
        )
        existing = find_accounts(session, by_code)
        session.execute(
            insert_ignoring_conflicts(session, balances).on_conflict_do_nothing(
                index_elements=["account_id", "slot"]
            ),
            [
                {
                    "account_id": existing[spec.code].id,
                    "slot": slot,
                    "debits": 0,
                    "credits": 0,
                    "debits_must_not_exceed_credits": spec.debits_must_not_exceed_credits,
                    "credits_must_not_exceed_debits": spec.credits_must_not_exceed_debits,
                }
                for spec in missing
                for slot in range(HOT_SLOTS if spec.hot else 1)
            ],
        )
    for code, spec in by_code.items():
        account = existing[code]
        declared = (
            spec.type,
            spec.currency,
            spec.customer_id,
            spec.debits_must_not_exceed_credits,
            spec.credits_must_not_exceed_debits,
            spec.hot,
        )
        stored = (
            account.type,
            account.currency,
            account.customer_id,
            account.debits_must_not_exceed_credits,
            account.credits_must_not_exceed_debits,
            account.hot,
        )
        if declared != stored:
            raise AccountConflict(
                f"account {code} exists with a different type, currency or limits", account=code
            )
    return existing
