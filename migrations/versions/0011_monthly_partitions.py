"""Monthly partitions (decision 0026): on PostgreSQL `transfers` and `invoice_usage` become
range-partitioned by month of `effective_at`, converted in place with their rows; what must be
unique across months (a key, "reversed once") moves to `transfer_keys`, which every transfer
references. SQLite keeps plain tables and gains `transfer_keys` the same way.

`ledger_ensure_month_partitions(table, first, last)` creates the months in between that are
missing (the scheduled `partitions` job calls it ahead of time); a row of a month that has no
partition yet lands in the table's default partition, never an error.

On PostgreSQL the conversion copies every row once (a new partitioned table is filled from the
old one, then the old one is dropped), inside the migration's transaction: nothing is visible
half-converted, and a failure leaves the old tables as they were.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 16:00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3
"""Months after the current one the migration creates; the scheduled job keeps this up."""

POST_TRANSFER_SIGNATURE = (
    'ledger_post_transfer(uuid, text, text, text, bigint, smallint, bigint, smallint, bigint,'
    ' text, timestamptz, timestamptz, text, jsonb)'
)

ENSURE_PARTITIONS = """
CREATE FUNCTION ledger_ensure_month_partitions(p_table text, p_first date, p_last date)
RETURNS TABLE (partition_name text, state text)
LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', p_first)::date;
    lower_bound timestamptz;
    upper_bound timestamptz;
    name text;
    in_default boolean;
BEGIN
    -- One maintainer at a time: two would race to create the same month.
    PERFORM pg_advisory_xact_lock(hashtextextended('ledger_ensure_month_partitions', 0));
    WHILE month <= p_last LOOP
        name := format('%s_p%s', p_table, to_char(month, 'YYYY_MM'));
        lower_bound := month::timestamp AT TIME ZONE 'UTC';
        upper_bound := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        IF to_regclass(name) IS NOT NULL THEN
            partition_name := name; state := 'exists'; RETURN NEXT;
        ELSE
            EXECUTE format(
                'SELECT EXISTS (SELECT 1 FROM %I WHERE effective_at >= $1 AND effective_at < $2)',
                p_table || '_default'
            ) INTO in_default USING lower_bound, upper_bound;
            IF in_default THEN
                -- Its rows already sit in the default partition, which PostgreSQL will not
                -- split: the month stays there (reported, and counted by /metrics).
                partition_name := name; state := 'rows_in_default'; RETURN NEXT;
            ELSE
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    name, p_table, lower_bound, upper_bound
                );
                IF p_table = 'transfers' THEN
                    -- Statement triggers are not inherited: TRUNCATE of one month is refused
                    -- on the month itself.
                    EXECUTE format(
                        'CREATE TRIGGER transfers_append_only_truncate BEFORE TRUNCATE ON %I'
                        ' FOR EACH STATEMENT EXECUTE FUNCTION transfers_append_only()',
                        name
                    );
                END IF;
                partition_name := name; state := 'created'; RETURN NEXT;
            END IF;
        END IF;
        month := (month + interval '1 month')::date;
    END LOOP;
END
$$
"""

POST_TRANSFER = """
CREATE FUNCTION ledger_post_transfer(
    p_id uuid, p_kind text, p_key text, p_fingerprint text,
    p_debit bigint, p_debit_slot smallint, p_credit bigint, p_credit_slot smallint,
    p_amount bigint, p_currency text, p_effective_at timestamptz, p_posted_at timestamptz,
    p_description text, p_metadata jsonb
) RETURNS SETOF transfers
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transfer_keys (kind, idempotency_key, leg, transfer_id, effective_at)
    VALUES (p_kind, p_key, 0, p_id, p_effective_at)
    ON CONFLICT (kind, idempotency_key, leg) DO NOTHING;
    IF FOUND THEN
        INSERT INTO transfers (id, journal_id, kind, idempotency_key, leg, fingerprint,
            debit_account_id, credit_account_id, amount, currency, effective_at, posted_at,
            description, metadata, reverses_id)
        VALUES (p_id, p_id, p_kind, p_key, 0, p_fingerprint, p_debit, p_credit, p_amount,
            p_currency, p_effective_at, p_posted_at, p_description, p_metadata, NULL);
        -- Posted: both cached balance rows move, in account order as every posting moves
        -- them (no deadlock), and no row is answered (the caller has the transfer it sent).
        IF p_debit < p_credit THEN
            UPDATE balances SET debits = debits + p_amount
                WHERE account_id = p_debit AND slot = p_debit_slot;
            UPDATE balances SET credits = credits + p_amount
                WHERE account_id = p_credit AND slot = p_credit_slot;
        ELSE
            UPDATE balances SET credits = credits + p_amount
                WHERE account_id = p_credit AND slot = p_credit_slot;
            UPDATE balances SET debits = debits + p_amount
                WHERE account_id = p_debit AND slot = p_debit_slot;
        END IF;
        RETURN;
    END IF;
    -- The key was taken: its stored transfers, each read from its own month.
    RETURN QUERY
    SELECT s.* FROM transfer_keys k
    JOIN transfers s ON s.id = k.transfer_id AND s.effective_at = k.effective_at
    WHERE k.kind = p_kind AND k.idempotency_key = p_key
    ORDER BY s.leg;
END
$$
"""

_OLD_USAGE_PROBE = """(SELECT 1 FROM transfers t WHERE t.kind = 'usage'
                  AND t.idempotency_key = h.message_id AND t.leg = 0 LIMIT 1)"""
_NEW_USAGE_PROBE = """(SELECT 1 FROM transfer_keys k WHERE k.kind = 'usage'
                  AND k.idempotency_key = h.message_id AND k.leg = 0 LIMIT 1)"""
_OLD_POSTED_BY = """(SELECT t.metadata ->> 'user_id' FROM transfers t WHERE t.kind = 'usage'
            AND t.idempotency_key = p_own_message_id AND t.leg = 0)"""
_NEW_POSTED_BY = """(SELECT t.metadata ->> 'user_id' FROM transfer_keys k
            JOIN transfers t ON t.id = k.transfer_id AND t.effective_at = k.effective_at
            WHERE k.kind = 'usage' AND k.idempotency_key = p_own_message_id AND k.leg = 0)"""


def _sibling(name: str) -> ModuleType:
    """An earlier migration's module, for the SQL it wrote (one text, not a copy)."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f'smsledger_migration_{path.stem}', path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _send_state(old: bool) -> str:
    text: str = _sibling('0010_send_state_function.py').FUNCTION
    if not old:
        assert _OLD_USAGE_PROBE in text and _OLD_POSTED_BY in text
        text = text.replace(_OLD_USAGE_PROBE, _NEW_USAGE_PROBE)
        text = text.replace(_OLD_POSTED_BY, _NEW_POSTED_BY)
    return text.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION', 1)


def _create_transfer_keys() -> None:
    postgresql = op.get_context().dialect.name == 'postgresql'
    by_transfer = ('kind', 'idempotency_key', 'leg', 'transfer_id')
    op.create_table(
        'transfer_keys',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False),
        sa.Column('leg', sa.SmallInteger(), nullable=False),
        sa.Column('transfer_id', sa.Uuid(), nullable=False),
        sa.Column('effective_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reverses_id', sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint('kind', 'idempotency_key', 'leg', name='pk_transfer_keys'),
        # SQLite cannot add a constraint later; PostgreSQL builds it after the copy below.
        *([] if postgresql else [sa.UniqueConstraint(*by_transfer, name='uq_transfer_keys_transfer')]),
    )
    op.execute(
        'INSERT INTO transfer_keys (kind, idempotency_key, leg, transfer_id, effective_at,'
        ' reverses_id) SELECT kind, idempotency_key, leg, id, effective_at, reverses_id'
        ' FROM transfers'
    )
    if postgresql:  # built after the copy: one sort instead of a row-by-row insertion
        op.create_unique_constraint('uq_transfer_keys_transfer', 'transfer_keys', by_transfer)
    op.create_index(
        'uq_transfer_keys_reverses_id',
        'transfer_keys',
        ['reverses_id'],
        unique=True,
        postgresql_where=sa.text('reverses_id IS NOT NULL'),
        sqlite_where=sa.text('reverses_id IS NOT NULL'),
    )


def _transfer_indexes() -> None:
    """`transfers`' indexes (0001's), built after a copy: one sort each."""
    op.execute('CREATE INDEX ix_transfers_journal_id ON transfers (journal_id)')
    for side in ('debit', 'credit'):
        op.execute(
            f'CREATE INDEX ix_transfers_{side}_effective ON transfers'
            f' ({side}_account_id, effective_at) INCLUDE (amount)'
        )


def _account_keys() -> None:
    """`transfers`' foreign keys to (account, currency) (0001's)."""
    for side in ('debit', 'credit'):
        op.execute(
            f'ALTER TABLE transfers ADD CONSTRAINT fk_transfers_{side}_account FOREIGN KEY'
            f' ({side}_account_id, currency) REFERENCES accounts (id, currency)'
        )


def upgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def _upgrade_postgresql() -> None:
    op.execute(f'DROP FUNCTION {POST_TRANSFER_SIGNATURE}')  # it returns the old table's rows
    _create_transfer_keys()
    op.execute(ENSURE_PARTITIONS)

    op.execute('ALTER TABLE transfers RENAME TO transfers_unpartitioned')
    for constraint in ('fk_transfers_reverses_id', 'uq_transfers_reverses_id',
                       'uq_transfers_idempotency', 'pk_transfers'):
        op.execute(f'ALTER TABLE transfers_unpartitioned DROP CONSTRAINT {constraint}')
    for index in ('ix_transfers_journal_id', 'ix_transfers_debit_effective',
                  'ix_transfers_credit_effective'):
        op.execute(f'DROP INDEX {index}')
    op.execute(
        'CREATE TABLE transfers (LIKE transfers_unpartitioned INCLUDING DEFAULTS'
        ' INCLUDING CONSTRAINTS) PARTITION BY RANGE (effective_at)'
    )
    op.execute('ALTER TABLE transfers ADD CONSTRAINT pk_transfers PRIMARY KEY (id, effective_at)')
    op.execute('CREATE TABLE transfers_default PARTITION OF transfers DEFAULT')

    op.execute('ALTER TABLE invoice_usage RENAME TO invoice_usage_unpartitioned')
    op.execute('ALTER TABLE invoice_usage_unpartitioned DROP CONSTRAINT pk_invoice_usage')
    op.execute(
        'CREATE TABLE invoice_usage (transfer_id uuid NOT NULL,'
        ' effective_at timestamptz NOT NULL, invoice_id uuid NOT NULL,'
        ' CONSTRAINT pk_invoice_usage PRIMARY KEY (transfer_id, effective_at))'
        ' PARTITION BY RANGE (effective_at)'
    )
    op.execute('CREATE TABLE invoice_usage_default PARTITION OF invoice_usage DEFAULT')

    # Every month that holds a transfer and the one before this (late usage), through
    # MONTHS_AHEAD months after this one.
    for table in ('transfers', 'invoice_usage'):
        op.execute(
            f"SELECT * FROM ledger_ensure_month_partitions('{table}', least("
            " (SELECT min(effective_at) FROM transfers_unpartitioned) AT TIME ZONE 'UTC',"
            " now() AT TIME ZONE 'UTC' - interval '1 month')::date,"
            f" (now() AT TIME ZONE 'UTC' + interval '{MONTHS_AHEAD} months')::date)"
        )
    op.execute('INSERT INTO transfers SELECT * FROM transfers_unpartitioned')
    op.execute(
        'INSERT INTO invoice_usage (transfer_id, effective_at, invoice_id)'
        ' SELECT u.transfer_id, t.effective_at, u.invoice_id FROM invoice_usage_unpartitioned u'
        ' JOIN transfers_unpartitioned t ON t.id = u.transfer_id'
    )
    op.execute(
        """DO $$ BEGIN
            IF (SELECT count(*) FROM invoice_usage)
                <> (SELECT count(*) FROM invoice_usage_unpartitioned) THEN
                RAISE EXCEPTION 'an invoice_usage row names no transfer: not converted';
            END IF;
        END $$"""
    )
    op.execute('DROP TABLE invoice_usage_unpartitioned')
    op.execute('DROP TABLE transfers_unpartitioned')

    # Indexes and keys on the parent: each partition gets its own, now and when created.
    _transfer_indexes()
    _account_keys()
    op.execute(
        'ALTER TABLE transfers ADD CONSTRAINT fk_transfers_key FOREIGN KEY'
        ' (kind, idempotency_key, leg, id)'
        ' REFERENCES transfer_keys (kind, idempotency_key, leg, transfer_id)'
    )
    append_only = _sibling('0001_ledger_core.py').POSTGRES_TRIGGERS[1:]
    for statement in append_only:
        op.execute(statement)
    op.execute(
        'CREATE TRIGGER transfers_append_only_truncate BEFORE TRUNCATE ON transfers_default'
        ' FOR EACH STATEMENT EXECUTE FUNCTION transfers_append_only()'
    )
    op.execute(POST_TRANSFER)
    op.execute(_send_state(old=False))


def _upgrade_sqlite() -> None:
    _create_transfer_keys()
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint('uq_transfers_idempotency', type_='unique')
        batch_op.drop_constraint('uq_transfers_reverses_id', type_='unique')
        batch_op.drop_constraint('fk_transfers_reverses_id', type_='foreignkey')
        batch_op.create_foreign_key(
            'fk_transfers_key',
            'transfer_keys',
            ['kind', 'idempotency_key', 'leg', 'id'],
            ['kind', 'idempotency_key', 'leg', 'transfer_id'],
        )
    _sqlite_append_only()
    with op.batch_alter_table('invoice_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('effective_at', sa.DateTime(timezone=True), nullable=True))
    op.execute(
        'UPDATE invoice_usage SET effective_at ='
        ' (SELECT t.effective_at FROM transfers t WHERE t.id = invoice_usage.transfer_id)'
    )
    with op.batch_alter_table('invoice_usage', schema=None) as batch_op:
        batch_op.alter_column('effective_at', nullable=False)


def _sqlite_append_only() -> None:
    """A batch alteration rebuilds the table without its triggers: they are written again."""
    for statement in _sibling('0001_ledger_core.py').SQLITE_TRIGGERS:
        op.execute(statement.replace('CREATE TRIGGER', 'CREATE TRIGGER IF NOT EXISTS', 1))


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        _downgrade_postgresql()
    else:
        _downgrade_sqlite()


def _downgrade_postgresql() -> None:
    op.execute(f'DROP FUNCTION {POST_TRANSFER_SIGNATURE}')
    op.execute(_send_state(old=True))
    op.execute('ALTER TABLE transfers RENAME TO transfers_partitioned')
    for name in ('pk_transfers', 'fk_transfers_key', 'fk_transfers_debit_account',
                 'fk_transfers_credit_account'):
        op.execute(f'ALTER TABLE transfers_partitioned DROP CONSTRAINT {name}')
    for index in ('ix_transfers_journal_id', 'ix_transfers_debit_effective',
                  'ix_transfers_credit_effective'):
        op.execute(f'DROP INDEX {index}')
    op.execute(
        'CREATE TABLE transfers (LIKE transfers_partitioned INCLUDING DEFAULTS'
        ' INCLUDING CONSTRAINTS)'
    )
    op.execute('INSERT INTO transfers SELECT * FROM transfers_partitioned')
    op.execute('DROP TABLE transfers_partitioned')  # and every month with it
    op.execute('ALTER TABLE transfers ADD CONSTRAINT pk_transfers PRIMARY KEY (id)')
    op.execute(
        'ALTER TABLE transfers ADD CONSTRAINT uq_transfers_idempotency'
        ' UNIQUE (kind, idempotency_key, leg)'
    )
    op.execute('ALTER TABLE transfers ADD CONSTRAINT uq_transfers_reverses_id UNIQUE (reverses_id)')
    op.execute(
        'ALTER TABLE transfers ADD CONSTRAINT fk_transfers_reverses_id FOREIGN KEY (reverses_id)'
        ' REFERENCES transfers (id)'
    )
    _account_keys()
    _transfer_indexes()
    for statement in _sibling('0001_ledger_core.py').POSTGRES_TRIGGERS[1:]:
        op.execute(statement)

    op.execute('ALTER TABLE invoice_usage RENAME TO invoice_usage_partitioned')
    op.execute('ALTER TABLE invoice_usage_partitioned DROP CONSTRAINT pk_invoice_usage')
    op.execute(
        'CREATE TABLE invoice_usage (transfer_id uuid NOT NULL, invoice_id uuid NOT NULL,'
        ' CONSTRAINT pk_invoice_usage PRIMARY KEY (transfer_id))'
    )
    op.execute(
        'INSERT INTO invoice_usage SELECT transfer_id, invoice_id FROM invoice_usage_partitioned'
    )
    op.execute('DROP TABLE invoice_usage_partitioned')
    op.execute('DROP FUNCTION ledger_ensure_month_partitions(text, date, date)')
    op.drop_table('transfer_keys')
    op.execute(_sibling('0009_post_transfer_function.py').FUNCTION)


def _downgrade_sqlite() -> None:
    with op.batch_alter_table('invoice_usage', schema=None) as batch_op:
        batch_op.drop_column('effective_at')
    with op.batch_alter_table('transfers', schema=None) as batch_op:
        batch_op.drop_constraint('fk_transfers_key', type_='foreignkey')
        batch_op.create_unique_constraint(
            'uq_transfers_idempotency', ['kind', 'idempotency_key', 'leg']
        )
        batch_op.create_unique_constraint('uq_transfers_reverses_id', ['reverses_id'])
        batch_op.create_foreign_key('fk_transfers_reverses_id', 'transfers', ['reverses_id'], ['id'])
    _sqlite_append_only()
    op.drop_table('transfer_keys')
