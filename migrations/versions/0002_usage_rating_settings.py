"""Customers, usage counters, billing settings, rates, invoices, close requests, notifications.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:50:12.555285
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('billing_settings',
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('values', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('scope', name=op.f('pk_billing_settings'))
    )
    op.create_table('customers',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('sippy_account_id', sa.String(length=64), nullable=True),
    sa.Column('webhook_url', sa.Text(), nullable=True),
    sa.Column('rate_plan', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_customers_status_known')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_customers'))
    )
    op.create_table('rates',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('plan', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=15), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('price_micros', sa.BigInteger(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('price_micros > 0', name=op.f('ck_rates_price_positive')),
    sa.CheckConstraint('valid_to IS NULL OR valid_to > valid_from', name=op.f('ck_rates_window_ordered')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rates')),
    sa.UniqueConstraint('plan', 'prefix', 'currency', 'valid_from', name='uq_rates_version')
    )
    op.create_table('close_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('served_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.user_id'], name=op.f('fk_close_requests_customer_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_close_requests'))
    )
    with op.batch_alter_table('close_requests', schema=None) as batch_op:
        batch_op.create_index('uq_close_requests_open', ['customer_id'], unique=True, postgresql_where=sa.text('served_at IS NULL'), sqlite_where=sa.text('served_at IS NULL'))

    op.create_table('invoices',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('frequency', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'processing', 'paid', 'failed', 'cancelled')", name=op.f('ck_invoices_status_known')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.user_id'], name=op.f('fk_invoices_customer_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoices')),
    sa.UniqueConstraint('customer_id', 'period_start', name='uq_invoices_customer_period')
    )
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.create_index('ix_invoices_customer_status', ['customer_id', 'status'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('dedupe_key', sa.String(length=300), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.user_id'], name=op.f('fk_notifications_customer_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
    sa.UniqueConstraint('dedupe_key', name=op.f('uq_notifications_dedupe_key'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_customer_created', ['customer_id', 'created_at'], unique=False)

    op.create_table('usage_counters',
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('unbilled_messages', sa.BigInteger(), nullable=False),
    sa.Column('unbilled_segments', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('unbilled_messages >= 0 AND unbilled_segments >= 0', name=op.f('ck_usage_counters_non_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.user_id'], name=op.f('fk_usage_counters_customer_id')),
    sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_usage_counters'))
    )


def downgrade() -> None:
    op.drop_table('usage_counters')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_customer_created')

    op.drop_table('notifications')
    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_invoices_customer_status')

    op.drop_table('invoices')
    with op.batch_alter_table('close_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_close_requests_open', postgresql_where=sa.text('served_at IS NULL'), sqlite_where=sa.text('served_at IS NULL'))

    op.drop_table('close_requests')
    op.drop_table('rates')
    op.drop_table('customers')
    op.drop_table('billing_settings')
