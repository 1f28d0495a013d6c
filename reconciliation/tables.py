"""Reconciliation runs and their items, kept as an audit trail (who ran what, on which inputs,
and how each difference was resolved)."""

from __future__ import annotations

import sqlalchemy as sa

from ledger.tables import BigId, Json, UtcDateTime, metadata

ITEM_KINDS = ("matched", "amount_mismatch", "missing_in_sippy", "missing_in_ledger")
DIFFERENCE_KINDS = ITEM_KINDS[1:]

reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("range_from", UtcDateTime, nullable=False),
    sa.Column("range_to", UtcDateTime, nullable=False),
    sa.Column("window_seconds", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("totals", Json, nullable=False),
    # What was compared: the statement's SHA-256, file name, column mapping, line count.
    sa.Column("inputs", Json, nullable=False),
    sa.CheckConstraint("source IN ('sippy', 'statement')", name="source_known"),
    sa.CheckConstraint("status IN ('reconciled', 'differences')", name="status_known"),
)

reconciliation_items = sa.Table(
    "reconciliation_items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Uuid, sa.ForeignKey("reconciliation_runs.id"), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    # How the pair was found: by our reference, or by account + amount + time window.
    sa.Column("match_rule", sa.String(24), nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("sippy_account_id", sa.String(64), nullable=True),
    sa.Column("customer_id", sa.String(64), nullable=True),
    sa.Column("reference", sa.String(200), nullable=True),
    sa.Column("ledger_transfer_id", sa.Uuid, nullable=True),
    sa.Column("ledger_amount_micros", sa.BigInteger, nullable=True),
    sa.Column("ledger_currency", sa.String(3), nullable=True),
    sa.Column("ledger_at", UtcDateTime, nullable=True),
    sa.Column("statement_line", sa.Integer, nullable=True),
    sa.Column("sippy_payment_id", sa.String(64), nullable=True),
    sa.Column("sippy_amount_micros", sa.BigInteger, nullable=True),
    sa.Column("sippy_currency", sa.String(3), nullable=True),
    sa.Column("sippy_at", UtcDateTime, nullable=True),
    # The correcting journal entries proposed, posted only when an accountant accepts them.
    sa.Column("proposal", Json, nullable=True),
    sa.Column("resolution", sa.String(16), nullable=True),
    sa.Column("resolved_by", sa.String(100), nullable=True),
    sa.Column("resolved_at", UtcDateTime, nullable=True),
    sa.Column("resolution_note", sa.Text, nullable=True),
    sa.CheckConstraint(
        "kind IN ('matched', 'amount_mismatch', 'missing_in_sippy', 'missing_in_ledger')",
        name="kind_known",
    ),
    sa.CheckConstraint(
        "resolution IS NULL OR resolution IN ('accepted', 'dismissed')", name="resolution_known"
    ),
    sa.Index("ix_reconciliation_items_run_kind", "run_id", "kind"),
)
