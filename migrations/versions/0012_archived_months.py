"""Archived months (docs/archives.md): `archived_months` (one row per month dropped after its
archive was written and verified) and `archived_totals` (per account, what the dropped
transfers summed to). On PostgreSQL `ledger_post_transfer` now refuses a key whose transfers
were archived (it would otherwise answer "posted" for a replay it could not compare), with the
name the archive's tombstone partition also refuses by: `transfers_archived`.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 17:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

_RETURN_STORED = """    ORDER BY s.leg;
END
$$"""
_REFUSE_ARCHIVED = """    ORDER BY s.leg;
    IF NOT FOUND THEN
        -- The key is taken, its transfers are not here: they were archived.
        RAISE EXCEPTION 'transfers_archived: the transfers of key % were archived', p_key
            USING ERRCODE = 'check_violation';
    END IF;
END
$$"""


def _post_transfer(archived: bool) -> str:
    path = Path(__file__).with_name('0011_monthly_partitions.py')
    spec = importlib.util.spec_from_file_location('smsledger_migration_0011', path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.POST_TRANSFER.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION', 1)
    assert _RETURN_STORED in text
    return text.replace(_RETURN_STORED, _REFUSE_ARCHIVED) if archived else text


def upgrade() -> None:
    op.create_table(
        'archived_months',
        sa.Column('month', sa.Date(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('manifest_sha256', sa.String(length=64), nullable=False),
        sa.Column('transfers', sa.BigInteger(), nullable=False),
        sa.Column('archived_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('month', name=op.f('pk_archived_months')),
    )
    op.create_table(
        'archived_totals',
        sa.Column(
            'account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False
        ),
        sa.Column('debits', sa.BigInteger(), nullable=False),
        sa.Column('credits', sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            'debits >= 0 AND credits >= 0', name=op.f('ck_archived_totals_non_negative')
        ),
        sa.ForeignKeyConstraint(
            ['account_id'], ['accounts.id'], name=op.f('fk_archived_totals_account_id')
        ),
        sa.PrimaryKeyConstraint('account_id', name=op.f('pk_archived_totals')),
    )
    if op.get_context().dialect.name == 'postgresql':
        op.execute(_post_transfer(archived=True))


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute(_post_transfer(archived=False))
    op.drop_table('archived_totals')
    op.drop_table('archived_months')
