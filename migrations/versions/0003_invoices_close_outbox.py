"""Invoice totals and lines, billed usage (invariant 7 by primary key), the outbox, and each
customer's oldest unbilled usage time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 17:25:04.533949
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('topic', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('key', name=op.f('uq_outbox_key'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_pending', ['created_at'], unique=False, postgresql_where=sa.text('dispatched_at IS NULL'), sqlite_where=sa.text('dispatched_at IS NULL'))

    op.create_table('invoice_lines',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('invoice_id', sa.Uuid(), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('prefix', sa.String(length=15), nullable=True),
    sa.Column('messages', sa.BigInteger(), nullable=False),
    sa.Column('segments', sa.BigInteger(), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoices.id'], name=op.f('fk_invoice_lines_invoice_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_invoice_lines'))
    )
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invoice_lines_invoice_id'), ['invoice_id'], unique=False)

    op.create_table('invoice_usage',
    sa.Column('transfer_id', sa.Uuid(), nullable=False),
    sa.Column('invoice_id', sa.Uuid(), nullable=False),
    sa.PrimaryKeyConstraint('transfer_id', name=op.f('pk_invoice_usage'))
    )

    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usage_micros', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('rounding_micros', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('message_count', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('segments', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('settings', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('rate_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_invoices_status_next_retry_at', ['status', 'next_retry_at'], unique=False)

    with op.batch_alter_table('usage_counters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('oldest_unbilled_at', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('usage_counters', schema=None) as batch_op:
        batch_op.drop_column('oldest_unbilled_at')

    with op.batch_alter_table('invoices', schema=None) as batch_op:
        batch_op.drop_index('ix_invoices_status_next_retry_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('next_retry_at')
        batch_op.drop_column('last_error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('approved_at')
        batch_op.drop_column('rate_ids')
        batch_op.drop_column('settings')
        batch_op.drop_column('segments')
        batch_op.drop_column('message_count')
        batch_op.drop_column('rounding_micros')
        batch_op.drop_column('usage_micros')


    op.drop_table('invoice_usage')
    with op.batch_alter_table('invoice_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invoice_lines_invoice_id'))

    op.drop_table('invoice_lines')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_pending', postgresql_where=sa.text('dispatched_at IS NULL'), sqlite_where=sa.text('dispatched_at IS NULL'))

    op.drop_table('outbox')
