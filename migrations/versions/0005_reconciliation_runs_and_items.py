"""Reconciliation runs and their items: the audit trail of every comparison with Sippy and of
how each difference was resolved.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 20:03:55.095948
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=100), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('range_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('range_to', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_seconds', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('totals', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('inputs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.CheckConstraint("source IN ('sippy', 'statement')", name=op.f('ck_reconciliation_runs_source_known')),
    sa.CheckConstraint("status IN ('reconciled', 'differences')", name=op.f('ck_reconciliation_runs_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    op.create_table('reconciliation_items',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('match_rule', sa.String(length=24), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('sippy_account_id', sa.String(length=64), nullable=True),
    sa.Column('customer_id', sa.String(length=64), nullable=True),
    sa.Column('reference', sa.String(length=200), nullable=True),
    sa.Column('ledger_transfer_id', sa.Uuid(), nullable=True),
    sa.Column('ledger_amount_micros', sa.BigInteger(), nullable=True),
    sa.Column('ledger_currency', sa.String(length=3), nullable=True),
    sa.Column('ledger_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('statement_line', sa.Integer(), nullable=True),
    sa.Column('sippy_payment_id', sa.String(length=64), nullable=True),
    sa.Column('sippy_amount_micros', sa.BigInteger(), nullable=True),
    sa.Column('sippy_currency', sa.String(length=3), nullable=True),
    sa.Column('sippy_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('proposal', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('resolution', sa.String(length=16), nullable=True),
    sa.Column('resolved_by', sa.String(length=100), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('matched', 'amount_mismatch', 'missing_in_sippy', 'missing_in_ledger')", name=op.f('ck_reconciliation_items_kind_known')),
    sa.CheckConstraint("resolution IS NULL OR resolution IN ('accepted', 'dismissed')", name=op.f('ck_reconciliation_items_resolution_known')),
    sa.ForeignKeyConstraint(['run_id'], ['reconciliation_runs.id'], name=op.f('fk_reconciliation_items_run_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_items'))
    )
    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.create_index('ix_reconciliation_items_run_kind', ['run_id', 'kind'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('reconciliation_items', schema=None) as batch_op:
        batch_op.drop_index('ix_reconciliation_items_run_kind')

    op.drop_table('reconciliation_items')
    op.drop_table('reconciliation_runs')
