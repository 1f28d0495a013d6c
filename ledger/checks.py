"""Proving the invariants from the transfers themselves.

The cached balances are an optimisation; this module recomputes every balance from the
append-only transfers and says, by account, where the two disagree (invariant 6), and checks
that debits equal credits per currency (invariant 2) and that every transfer is well-formed
(invariant 1) even if a constraint was ever dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ledger.tables import accounts, archived_totals, balances, transfers


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken invariant, named so an operator can find it."""

    invariant: int
    subject: str
    message: str


def _sums_by(side: sa.Column[int]) -> sa.Subquery:
    """Total transfer amount per account on one side, in one pass over transfers."""
    return (
        sa.select(side.label("account_id"), sa.func.sum(transfers.c.amount).label("amount"))
        .group_by(side)
        .subquery()
    )


def check_ledger(session: Session) -> list[Problem]:
    """Every invariant violation in the ledger; an empty list means the ledger is sound."""
    problems: list[Problem] = []
    # Set-based: one pass over transfers per side, one over balances, joined by account.
    debited, credited = (
        _sums_by(transfers.c.debit_account_id),
        _sums_by(transfers.c.credit_account_id),
    )
    cached = (
        sa.select(
            balances.c.account_id,
            sa.func.sum(balances.c.debits).label("debits"),
            sa.func.sum(balances.c.credits).label("credits"),
        )
        .group_by(balances.c.account_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(
            accounts.c.code,
            accounts.c.currency,
            sa.func.coalesce(cached.c.debits, 0).label("cached_debits"),
            sa.func.coalesce(cached.c.credits, 0).label("cached_credits"),
            # the archived months' transfers count as they did before they left (ledger.archived)
            (
                sa.func.coalesce(debited.c.amount, 0)
                + sa.func.coalesce(archived_totals.c.debits, 0)
            ).label("debits"),
            (
                sa.func.coalesce(credited.c.amount, 0)
                + sa.func.coalesce(archived_totals.c.credits, 0)
            ).label("credits"),
        )
        .outerjoin(cached, cached.c.account_id == accounts.c.id)
        .outerjoin(debited, debited.c.account_id == accounts.c.id)
        .outerjoin(credited, credited.c.account_id == accounts.c.id)
        .outerjoin(archived_totals, archived_totals.c.account_id == accounts.c.id)
        .order_by(accounts.c.code)
    )
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        debits, credits = int(row.debits), int(row.credits)
        totals[row.currency][0] += debits
        totals[row.currency][1] += credits
        if (int(row.cached_debits), int(row.cached_credits)) != (debits, credits):
            problems.append(
                Problem(
                    6,
                    row.code,
                    f"cached debits/credits {row.cached_debits}/{row.cached_credits} "
                    f"but transfers sum to {debits}/{credits}",
                )
            )
    for currency, (debits, credits) in sorted(totals.items()):
        if debits != credits:
            problems.append(
                Problem(2, currency, f"total debits {debits} != total credits {credits}")
            )
    malformed = session.execute(
        sa.select(transfers.c.id).where(
            sa.or_(
                transfers.c.amount <= 0,
                transfers.c.debit_account_id == transfers.c.credit_account_id,
            )
        )
    ).scalars()
    problems.extend(Problem(1, str(tid), "amount <= 0 or debit == credit") for tid in malformed)
    return problems
