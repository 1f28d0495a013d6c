"""Matching Sippy's statement lines with the ledger's collections, set-based (DESIGN
"Reconciliation").

Both sides are staged in session-local tables, then three statements pair them: first by our
reference (the n-th statement line carrying a reference pairs with the n-th ledger line of that
reference, so a duplicated debit is left over), then by account + amount + currency within the
time window (mutual nearest pairs only), and one insert classifies every line as matched,
amount mismatch, missing in Sippy or missing in ledger.

Ledger side: settlements in the range and receipts a reconciliation recorded, not reversed;
amount corrections a reconciliation posted are added to the first line of their reference.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.keys import REFUND_SETTLEMENT_PREFIX
from billing.tables import customers, payment_attempts
from ledger.bulk import insert_rows
from ledger.model import Kind
from ledger.staging import analyze_staged, staged, staging_table
from ledger.tables import UtcDateTime, transfer_keys, transfers
from ledger.transfer_keys import is_reversed
from reconciliation.statements import StatementLine

_STATEMENT = staging_table(
    "recon_statement",
    sa.Column("line_no", sa.Integer),
    sa.Column("payment_id", sa.String(64)),
    sa.Column("account_id", sa.String(64)),
    sa.Column("customer_id", sa.String(64)),
    sa.Column("at", UtcDateTime),
    sa.Column("at_s", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("reference", sa.String(200)),
    sa.Column("ordinal", sa.Integer),
)
_LEDGER = staging_table(
    "recon_ledger",
    sa.Column("transfer_id", sa.Uuid),
    sa.Column("reference", sa.String(200)),
    sa.Column("account_id", sa.String(64)),
    sa.Column("customer_id", sa.String(64)),
    sa.Column("at", UtcDateTime),
    sa.Column("at_s", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("ordinal", sa.Integer),
)
_PAIRS = staging_table(
    "recon_pairs",
    sa.Column("line_no", sa.Integer),
    sa.Column("transfer_id", sa.Uuid),
    sa.Column("rule", sa.String(24)),
)

REFERENCE_PREFIX = "smsledger:"
# Metadata a reconciliation writes on the entries it posts (reconciliation/proposals.py).
RECEIPT, AMOUNT = "receipt", "amount"

_PAIR_BY_REFERENCE = """
INSERT INTO recon_pairs (line_no, transfer_id, rule)
SELECT s.line_no, l.transfer_id, 'reference'
FROM recon_statement s JOIN recon_ledger l ON l.reference = s.reference AND l.ordinal = s.ordinal
"""
_PAIR_BY_ACCOUNT_AMOUNT_TIME = """
INSERT INTO recon_pairs (line_no, transfer_id, rule)
SELECT line_no, transfer_id, 'account_amount_time' FROM (
  SELECT s.line_no, l.transfer_id,
         ROW_NUMBER() OVER (PARTITION BY s.line_no
                            ORDER BY ABS(s.at_s - l.at_s), l.at_s, l.transfer_id) AS rank_s,
         ROW_NUMBER() OVER (PARTITION BY l.transfer_id
                            ORDER BY ABS(s.at_s - l.at_s), s.line_no) AS rank_l
  FROM recon_statement s
  JOIN recon_ledger l ON l.account_id = s.account_id AND l.amount = s.amount
                     AND l.currency = s.currency AND ABS(s.at_s - l.at_s) <= :window
  WHERE NOT EXISTS (SELECT 1 FROM recon_pairs p WHERE p.line_no = s.line_no)
    AND NOT EXISTS (SELECT 1 FROM recon_pairs p WHERE p.transfer_id = l.transfer_id)
) candidates
WHERE rank_s = 1 AND rank_l = 1
"""
_ITEMS = """
INSERT INTO reconciliation_items (run_id, kind, match_rule, reason, sippy_account_id,
  customer_id, reference, ledger_transfer_id, ledger_amount_micros, ledger_currency, ledger_at,
  statement_line, sippy_payment_id, sippy_amount_micros, sippy_currency, sippy_at)
SELECT :run,
       CASE WHEN s.amount = l.amount AND s.currency = l.currency THEN 'matched'
            ELSE 'amount_mismatch' END,
       p.rule,
       CASE WHEN s.currency <> l.currency THEN 'Sippy debited another currency'
            WHEN s.amount <> l.amount THEN 'Sippy debited another amount' END,
       l.account_id, l.customer_id, l.reference, l.transfer_id, l.amount, l.currency, l.at,
       s.line_no, s.payment_id, s.amount, s.currency, s.at
FROM recon_pairs p
JOIN recon_statement s ON s.line_no = p.line_no
JOIN recon_ledger l ON l.transfer_id = p.transfer_id
UNION ALL
SELECT :run, 'missing_in_ledger', NULL,
       CASE WHEN known.reference IS NOT NULL
            THEN 'a second Sippy debit with an already matched reference (duplicate)'
            WHEN s.reference IS NULL OR substr(s.reference, 1, 10) <> 'smsledger:'
            THEN 'a Sippy debit without a smsledger reference'
            ELSE 'Sippy debited; the ledger has no settlement for it' END,
       s.account_id, s.customer_id, s.reference, NULL, NULL, NULL, NULL,
       s.line_no, s.payment_id, s.amount, s.currency, s.at
FROM recon_statement s
-- A join, not a correlated EXISTS per line: that scanned the ledger side once per unmatched
-- line (1,000,000 lines: many minutes, quadratic); an uncorrelated IN only hashes when the
-- references fit in work_mem.
LEFT JOIN (SELECT DISTINCT reference FROM recon_ledger) known ON known.reference = s.reference
WHERE NOT EXISTS (SELECT 1 FROM recon_pairs p WHERE p.line_no = s.line_no)
UNION ALL
SELECT :run, 'missing_in_sippy', NULL, 'settled in the ledger; Sippy has no such debit',
       l.account_id, l.customer_id, l.reference, l.transfer_id, l.amount, l.currency, l.at,
       NULL, NULL, NULL, NULL, NULL
FROM recon_ledger l
WHERE NOT EXISTS (SELECT 1 FROM recon_pairs p WHERE p.transfer_id = l.transfer_id)
"""


def match(
    session: Session,
    run_id: uuid.UUID,
    lines: list[StatementLine],
    start: datetime,
    end: datetime,
    window_seconds: int,
) -> int:
    """Stage both sides, pair them and write the run's items; how many statement lines were
    left out (outside the range, or not ours: an account of no customer, no reference of ours)."""
    with staged(session, _STATEMENT, _LEDGER, _PAIRS):
        connection = session.connection()
        ignored = _stage_statement(session, lines, start, end)
        _stage_ledger(session, start, end)
        analyze_staged(session, _STATEMENT, _LEDGER)
        connection.execute(sa.text(_PAIR_BY_REFERENCE))
        analyze_staged(session, _PAIRS)
        connection.execute(sa.text(_PAIR_BY_ACCOUNT_AMOUNT_TIME), {"window": window_seconds})
        analyze_staged(session, _PAIRS)
        connection.execute(
            sa.text(_ITEMS).bindparams(sa.bindparam("run", type_=sa.Uuid)),
            {"run": run_id},
        )
    return ignored


def _stage_statement(
    session: Session, lines: list[StatementLine], start: datetime, end: datetime
) -> int:
    """Load the lines that concern us: in the range, and on accounts of our customers or
    carrying our reference. The n-th line of a reference (in time order) gets ordinal n."""
    owners = dict(
        session.execute(
            sa.select(customers.c.sippy_account_id, sa.func.min(customers.c.user_id))
            .where(customers.c.sippy_account_id.is_not(None))
            .group_by(customers.c.sippy_account_id)
        ).all()
    )
    seen: dict[str, int] = defaultdict(int)
    rows: list[dict[str, Any]] = []
    for line in sorted(lines, key=lambda ln: (ln.at, ln.line_no)):
        ours = line.reference is not None and line.reference.startswith(REFERENCE_PREFIX)
        if (line.account_id not in owners and not ours) or not start <= line.at < end:
            continue
        ordinal = None
        if line.reference is not None:
            seen[line.reference] += 1
            ordinal = seen[line.reference]
        rows.append(
            {
                "line_no": line.line_no,
                "payment_id": line.payment_id,
                "account_id": line.account_id,
                "customer_id": owners.get(line.account_id),
                "at": line.at,
                "at_s": int(line.at.timestamp()),
                "amount": line.amount_micros,
                "currency": line.currency,
                "reference": line.reference,
                "ordinal": ordinal,
            }
        )
    insert_rows(session, _STATEMENT, rows)
    return len(lines) - len(rows)


def _not_reversed(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """Not undone as a mistake. A refund also reverses its settlement, but the debit did
    happen in Sippy (the refund is a separate credit), so a refunded settlement still pairs
    with its debit."""
    return ~is_reversed(
        table.c.id, ~transfer_keys.c.idempotency_key.startswith(REFUND_SETTLEMENT_PREFIX)
    )


def _stage_ledger(session: Session, start: datetime, end: datetime) -> None:
    """Settlements and recorded receipts in [start, end), not reversed, numbered per
    reference; then the amount corrections of their references added to the first."""
    settled = transfers.alias("settled")
    reference = settled.c.metadata["reference"].as_string()
    recon = settled.c.metadata["reconciliation"].as_string()
    in_range = sa.and_(settled.c.effective_at >= start, settled.c.effective_at < end)
    epoch = sa.cast(sa.extract("epoch", settled.c.effective_at), sa.BigInteger)
    account = settled.c.metadata["sippy_account_id"].as_string()
    customer = settled.c.metadata["customer_id"].as_string()
    settlements = (
        sa.select(
            settled.c.id,
            reference,
            # Settlements name their account since issue 6; older ones through their attempt.
            sa.func.coalesce(account, payment_attempts.c.sippy_account_id),
            sa.func.coalesce(customer, payment_attempts.c.customer_id),
            settled.c.effective_at,
            epoch,
            settled.c.amount,
            settled.c.currency,
        )
        .outerjoin(payment_attempts, payment_attempts.c.reference == reference)
        .where(settled.c.kind == Kind.SETTLEMENT.value, in_range, _not_reversed(settled))
    )
    receipts = sa.select(
        settled.c.id,
        reference,
        account,
        customer,
        settled.c.effective_at,
        epoch,
        settled.c.amount,
        settled.c.currency,
    ).where(
        settled.c.kind == Kind.ADJUSTMENT.value,
        recon == RECEIPT,
        in_range,
        _not_reversed(settled),
    )
    both = sa.union_all(settlements, receipts).subquery()
    columns = list(both.c)
    ordinal = sa.func.row_number().over(partition_by=columns[1], order_by=(columns[5], columns[0]))
    session.execute(
        sa.insert(_LEDGER).from_select(
            [c.name for c in _LEDGER.columns], sa.select(*columns, ordinal)
        )
    )
    corrections = session.execute(
        sa.select(reference, sa.func.sum(settled.c.metadata["collected_delta_micros"].as_integer()))
        .where(settled.c.kind == Kind.ADJUSTMENT.value, recon == AMOUNT, _not_reversed(settled))
        .group_by(reference)
    ).all()
    if corrections:
        session.execute(
            sa.update(_LEDGER)
            .where(_LEDGER.c.reference == sa.bindparam("ref"), _LEDGER.c.ordinal == 1)
            .values(amount=_LEDGER.c.amount + sa.bindparam("delta")),
            [{"ref": ref, "delta": int(delta)} for ref, delta in corrections],
        )
