"""Reconciliation runs: compare one range, store the run with every item (matched ones too) and
its inputs' checksum, propose corrections, and total it up.

A run is one unit of work: the caller fetched or parsed the statement first (no Sippy call or
file parsing inside the transaction).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
import uuid6
from sqlalchemy.orm import Session

from billing.paging import Page, fetch_page
from ledger.archived import refuse_before_cut
from ledger.money import format_micros
from reconciliation.errors import UnknownRun
from reconciliation.matching import match
from reconciliation.proposals import propose_all
from reconciliation.report import present_run
from reconciliation.statements import Statement
from reconciliation.tables import DIFFERENCE_KINDS, reconciliation_items, reconciliation_runs

DEFAULT_WINDOW_SECONDS = 600


def reconcile(
    session: Session,
    statement: Statement,
    source: str,
    start: datetime,
    end: datetime,
    created_by: str,
    now: datetime,
    window_seconds: int = DEFAULT_WINDOW_SECONDS,
) -> Any:
    """Run a reconciliation of [start, end) against `statement`; the stored run.

    Raises: ArchivedPeriod for a range that starts before the archive cut (its settlements
    left the database: every Sippy payment of it would look unmatched)."""
    refuse_before_cut(session, start, "a reconciliation range")
    run_id = uuid6.uuid7()
    session.execute(
        sa.insert(reconciliation_runs).values(
            id=run_id,
            created_at=now,
            created_by=created_by,
            source=source,
            range_from=start,
            range_to=end,
            window_seconds=window_seconds,
            status="differences",
            totals={},
            inputs={},
        )
    )
    ignored = match(session, run_id, statement.lines, start, end, window_seconds)
    propose_all(session, run_id)
    totals = _totals(session, run_id)
    differences = sum(totals[k] for k in ("mismatched", "missing_in_sippy", "missing_in_ledger"))
    session.execute(
        sa.update(reconciliation_runs)
        .where(reconciliation_runs.c.id == run_id)
        .values(
            status="differences" if differences else "reconciled",
            totals=totals,
            inputs={
                **statement.description,
                "sha256": statement.checksum,
                "ignored_lines": ignored,
            },
        )
    )
    return get_run(session, run_id)


def _totals(session: Session, run_id: uuid.UUID) -> dict[str, Any]:
    items = reconciliation_items.c
    counts: dict[str, int] = dict(
        session.execute(
            sa.select(items.kind, sa.func.count())
            .where(items.run_id == run_id)
            .group_by(items.kind)
        ).all()
    )
    sums = {key[1]: totals for key, totals in _sums(session, run_id, by_account=False).items()}
    by_currency = [
        {
            "currency": cur,
            "ledger": format_micros(ledger),
            "sippy": format_micros(sippy),
            "difference": format_micros(sippy - ledger),
        }
        for cur, (ledger, sippy) in sorted(sums.items())
    ]
    single = by_currency[0] if len(by_currency) == 1 else None
    return {
        "currency": single["currency"] if single else None,
        "ledger": single["ledger"] if single else None,
        "sippy": single["sippy"] if single else None,
        "difference": single["difference"] if single else None,
        "by_currency": by_currency,
        "matched": counts.get("matched", 0),
        "mismatched": counts.get("amount_mismatch", 0),
        "missing_in_sippy": counts.get("missing_in_sippy", 0),
        "missing_in_ledger": counts.get("missing_in_ledger", 0),
    }


def _sums(
    session: Session, run_id: uuid.UUID, by_account: bool
) -> dict[tuple[str | None, str], list[int]]:
    """[ledger, sippy] totals per (account or None, currency): each side in its own currency."""
    items = reconciliation_items.c
    sums: dict[tuple[str | None, str], list[int]] = {}
    for side, amount, currency in (
        (0, items.ledger_amount_micros, items.ledger_currency),
        (1, items.sippy_amount_micros, items.sippy_currency),
    ):
        keys = [items.sippy_account_id, currency] if by_account else [currency]
        rows = session.execute(
            sa.select(*keys, sa.func.sum(amount))
            .where(items.run_id == run_id, currency.is_not(None))
            .group_by(*keys)
        ).all()
        for *key, total in rows:
            account, cur = (key[0], key[1]) if by_account else (None, key[0])
            sums.setdefault((account, cur), [0, 0])[side] = int(total)
    return sums


def get_run(session: Session, run_id: uuid.UUID) -> Any:
    """Raises: UnknownRun."""
    row = session.execute(
        sa.select(reconciliation_runs).where(reconciliation_runs.c.id == run_id)
    ).one_or_none()
    if row is None:
        raise UnknownRun(f"no reconciliation run {run_id}", run_id=str(run_id))
    return row


def run_items(session: Session, run_id: uuid.UUID, differences_only: bool) -> list[Any]:
    """The run's items in statement, then ledger order."""
    query = sa.select(reconciliation_items).where(reconciliation_items.c.run_id == run_id)
    if differences_only:
        query = query.where(reconciliation_items.c.kind.in_(DIFFERENCE_KINDS))
    return list(session.execute(query.order_by(reconciliation_items.c.id)).all())


def account_comparison(session: Session, run_id: uuid.UUID) -> list[dict[str, Any]]:
    """Per Sippy account and currency: what the ledger collected against what Sippy debited in
    the range, for the accounts where they differ."""
    sums = _sums(session, run_id, by_account=True)
    return [
        {
            "sippy_account_id": account,
            "currency": currency,
            "ledger": format_micros(ledger),
            "sippy": format_micros(sippy),
            "difference": format_micros(sippy - ledger),
        }
        for (account, currency), (ledger, sippy) in sorted(sums.items())
        if ledger != sippy
    ]


def list_runs(session: Session, limit: int, offset: int) -> Page:
    order = [reconciliation_runs.c.created_at.desc(), reconciliation_runs.c.id.desc()]
    return fetch_page(session, reconciliation_runs, [], order, limit, offset)


class RunReport(NamedTuple):
    """One run as an accountant reads it: the report (`present_run`'s JSON) and the item rows
    it was made from (for the CSV)."""

    report: dict[str, Any]
    items: list[Any]


def run_report(session: Session, run_id: uuid.UUID, differences_only: bool) -> RunReport:
    """The run's report, read in the caller's unit of work.

    Raises: UnknownRun."""
    run = get_run(session, run_id)
    items = run_items(session, run_id, differences_only)
    return RunReport(present_run(run, items, account_comparison(session, run_id)), items)
