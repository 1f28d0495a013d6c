"""Refunds and credits: invoices may end `refunded`, every refund attempt is recorded before
Sippy's `accountCredit` is called (same exactly-once discipline as charges), and voided
messages that were billed already are credited on the next invoice; and a cancelled invoice no
longer holds its customer's period start, so the period's late usage can be invoiced again.

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
        batch_op.add_column(sa.Column('credit_micros', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_constraint('uq_invoices_customer_period', type_='unique')
        batch_op.create_index(
            'uq_invoices_customer_period', ['customer_id', 'period_start'], unique=True,
            postgresql_where=sa.text("status <> 'cancelled'"),
            sqlite_where=sa.text("status <> 'cancelled'"),
        )
    op.create_table('usage_credits',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('transfer_id', sa.Uuid(), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('invoice_id', sa.Uuid(), nullable=True),
    sa.CheckConstraint('amount_micros > 0', name=op.f('ck_usage_credits_amount_positive')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.user_id'], name=op.f('fk_usage_credits_customer_id')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_usage_credits_invoice_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_credits')),
    sa.UniqueConstraint('transfer_id', name=op.f('uq_usage_credits_transfer_id'))
    )
    with op.batch_alter_table('usage_credits', schema=None) as batch_op:
        batch_op.create_index('ix_usage_credits_customer_pending', ['customer_id', 'invoice_id'], unique=False)
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
    with op.batch_alter_table('usage_credits', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_credits_customer_pending')
    op.drop_table('usage_credits')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('uq_invoices_customer_period')
        batch_op.create_unique_constraint('uq_invoices_customer_period', ['customer_id', 'period_start'])
        batch_op.drop_column('credit_micros')
        batch_op.drop_constraint(op.f('ck_invoices_status_known'), type_='check')
        batch_op.create_check_constraint(op.f('ck_invoices_status_known'), OLD_STATUSES)
