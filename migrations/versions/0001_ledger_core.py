"""Ledger core: accounts, cached balances, append-only transfers, API keys.

The no-update/no-delete triggers on `transfers` are DDL the metadata cannot carry, so they are
written here for both databases; their message carries `transfers_append_only`, the name
`ledger/db.py` recognises.

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 16:25:01.330247
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

APPEND_ONLY = "transfers_append_only: posted transfers cannot be updated or deleted"

POSTGRES_TRIGGERS = [
    f"""
    CREATE FUNCTION transfers_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{APPEND_ONLY}' USING ERRCODE = 'restrict_violation';
    END
    $$
    """,
    """CREATE TRIGGER transfers_append_only_row BEFORE UPDATE OR DELETE ON transfers
       FOR EACH ROW EXECUTE FUNCTION transfers_append_only()""",
    """CREATE TRIGGER transfers_append_only_truncate BEFORE TRUNCATE ON transfers
       FOR EACH STATEMENT EXECUTE FUNCTION transfers_append_only()""",
]

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER transfers_append_only_update BEFORE UPDATE ON transfers
       BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
    f"""CREATE TRIGGER transfers_append_only_delete BEFORE DELETE ON transfers
       BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END""",
]

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=True),
    sa.Column('debits_must_not_exceed_credits', sa.Boolean(), nullable=False),
    sa.Column('credits_must_not_exceed_debits', sa.Boolean(), nullable=False),
    sa.Column('hot', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("type IN ('asset', 'liability', 'equity', 'revenue', 'expense')", name=op.f('ck_accounts_type_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_accounts')),
    sa.UniqueConstraint('code', name=op.f('uq_accounts_code')),
    sa.UniqueConstraint('id', 'currency', name=op.f('uq_accounts_id_currency'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accounts_customer_id'), ['customer_id'], unique=False)

    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('key_prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('admin', 'service', 'accountant')", name=op.f('ck_api_keys_role_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('balances',
    sa.Column('account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slot', sa.SmallInteger(), nullable=False),
    sa.Column('debits', sa.BigInteger(), nullable=False),
    sa.Column('credits', sa.BigInteger(), nullable=False),
    sa.Column('debits_must_not_exceed_credits', sa.Boolean(), nullable=False),
    sa.Column('credits_must_not_exceed_debits', sa.Boolean(), nullable=False),
    sa.CheckConstraint('NOT credits_must_not_exceed_debits OR credits <= debits', name=op.f('ck_balances_credits_within_debits')),
    sa.CheckConstraint('NOT debits_must_not_exceed_credits OR debits <= credits', name=op.f('ck_balances_debits_within_credits')),
    sa.CheckConstraint('debits >= 0 AND credits >= 0', name=op.f('ck_balances_non_negative')),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_balances_account_id')),
    sa.PrimaryKeyConstraint('account_id', 'slot', name=op.f('pk_balances'))
    )
    op.create_table('transfers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('journal_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('leg', sa.SmallInteger(), nullable=False),
    sa.Column('fingerprint', sa.String(length=32), nullable=False),
    sa.Column('debit_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('credit_account_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('reverses_id', sa.Uuid(), nullable=True),
    sa.CheckConstraint("kind IN ('usage', 'invoice', 'settlement', 'reversal', 'adjustment', 'rounding', 'opening')", name=op.f('ck_transfers_kind_known')),
    sa.CheckConstraint('amount > 0', name=op.f('ck_transfers_amount_positive')),
    sa.CheckConstraint('debit_account_id <> credit_account_id', name=op.f('ck_transfers_distinct_accounts')),
    sa.ForeignKeyConstraint(['credit_account_id', 'currency'], ['accounts.id', 'accounts.currency'], name='fk_transfers_credit_account'),
    sa.ForeignKeyConstraint(['debit_account_id', 'currency'], ['accounts.id', 'accounts.currency'], name='fk_transfers_debit_account'),
    sa.ForeignKeyConstraint(['reverses_id'], ['transfers.id'], name=op.f('fk_transfers_reverses_id')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_transfers')),
    sa.UniqueConstraint('kind', 'idempotency_key', 'leg', name='uq_transfers_idempotency'),
    sa.UniqueConstraint('reverses_id', name=op.f('uq_transfers_reverses_id'))
    )
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.create_index('ix_transfers_credit_effective', ['credit_account_id', 'effective_at'], unique=False, postgresql_include=['amount'])
        batch_op.create_index('ix_transfers_debit_effective', ['debit_account_id', 'effective_at'], unique=False, postgresql_include=['amount'])
        batch_op.create_index(batch_op.f('ix_transfers_journal_id'), ['journal_id'], unique=False)

    dialect = op.get_bind().dialect.name
    for statement in POSTGRES_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS:
        op.execute(statement)



def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER transfers_append_only_truncate ON transfers")
        op.execute("DROP TRIGGER transfers_append_only_row ON transfers")
        op.execute("DROP FUNCTION transfers_append_only()")
    else:
        op.execute("DROP TRIGGER transfers_append_only_update")
        op.execute("DROP TRIGGER transfers_append_only_delete")
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_transfers_journal_id'))
        batch_op.drop_index('ix_transfers_debit_effective', postgresql_include=['amount'])
        batch_op.drop_index('ix_transfers_credit_effective', postgresql_include=['amount'])

    op.drop_table('transfers')
    op.drop_table('balances')
    op.drop_table('api_keys')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accounts_customer_id'))

    op.drop_table('accounts')
