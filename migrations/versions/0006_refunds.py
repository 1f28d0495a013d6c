"""Refunds: invoices may end `refunded`, and every refund attempt is recorded before Sippy's
`accountCredit` is called (same exactly-once discipline as charges).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('pending', 'processing', 'paid', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('pending', 'processing', 'paid', 'failed', 'cancelled', 'refunded')"


def upgrade() -> None:
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_invoices_status_known'), type_='check')
        batch_op.create_check_constraint(op.f('ck_invoices_status_known'), NEW_STATUSES)
    op.create_table('refund_attempts',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('invoice_id', sa.Uuid(), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=120), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('sippy_account_id', sa.String(length=64), nullable=True),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('sippy_payment_id', sa.String(length=64), nullable=True),
    sa.Column('requested_by', sa.String(length=100), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('requested', 'started', 'accepted', 'declined', 'unknown', 'not_applied')", name=op.f('ck_refund_attempts_status_known')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_refund_attempts_invoice_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_refund_attempts')),
    sa.UniqueConstraint('invoice_id', 'attempt_no', name='uq_refund_attempts_invoice_attempt'),
    sa.UniqueConstraint('reference', name=op.f('uq_refund_attempts_reference'))
    )
    with op.batch_alter_table('refund_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_refund_attempts_status_started', ['status', 'started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('refund_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_refund_attempts_status_started')
    op.drop_table('refund_attempts')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_invoices_status_known'), type_='check')
        batch_op.create_check_constraint(op.f('ck_invoices_status_known'), OLD_STATUSES)
