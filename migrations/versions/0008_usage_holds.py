"""Usage holds: what a reserving pre-send check sets aside for a message until its usage post
captures it, a void or a release frees it, or it expires (billing/usage/holds.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('usage_holds',
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('amount_micros', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('amount_micros >= 0', name=op.f('ck_usage_holds_amount_non_negative')),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_usage_holds'))
    )
    with op.batch_alter_table('usage_holds', schema=None) as batch_op:
        batch_op.create_index(
            'ix_usage_holds_customer_id_expires_at', ['customer_id', 'expires_at'], unique=False
        )
        batch_op.create_index('ix_usage_holds_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('usage_holds', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_holds_expires_at')
        batch_op.drop_index('ix_usage_holds_customer_id_expires_at')
    op.drop_table('usage_holds')
