"""Charge attempts recorded before Sippy is called (invariant 8), webhook delivery state on
notifications, and the delivery log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 19:03:58.152968
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('payment_attempts',
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
    sa.Column('retryable', sa.Boolean(), nullable=True),
    sa.Column('sippy_payment_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('started', 'accepted', 'declined', 'unknown', 'not_applied')", name=op.f('ck_payment_attempts_status_known')),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_payment_attempts_invoice_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_attempts')),
    sa.UniqueConstraint('invoice_id', 'attempt_no', name='uq_payment_attempts_invoice_attempt'),
    sa.UniqueConstraint('reference', name=op.f('uq_payment_attempts_reference'))
    )
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_payment_attempts_status_started', ['status', 'started_at'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('notification_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('succeeded', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['notification_id'], ['notifications.id'], name=op.f('fk_webhook_deliveries_notification_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_notification_id'), ['notification_id'], unique=False)

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivery_status', sa.String(length=16), server_default='pending', nullable=False))
        batch_op.add_column(sa.Column('delivery_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('next_delivery_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint('delivery_status_known', "delivery_status IN ('pending', 'delivered', 'failed', 'skipped')")
        batch_op.create_index('ix_notifications_undelivered', ['id'], unique=False, postgresql_where=sa.text("delivery_status = 'pending'"), sqlite_where=sa.text("delivery_status = 'pending'"))



def downgrade() -> None:
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_undelivered', postgresql_where=sa.text("delivery_status = 'pending'"), sqlite_where=sa.text("delivery_status = 'pending'"))
        batch_op.drop_constraint(op.f('ck_notifications_delivery_status_known'), type_='check')
        batch_op.drop_column('delivered_at')
        batch_op.drop_column('next_delivery_at')
        batch_op.drop_column('delivery_attempts')
        batch_op.drop_column('delivery_status')

    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_notification_id'))

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_payment_attempts_status_started')

    op.drop_table('payment_attempts')
