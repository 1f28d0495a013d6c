"""One round trip per single-transfer posting: `ledger_post_transfer`, a PL/pgSQL function that
inserts the transfer unless its (kind, idempotency key, leg) is taken, moves both cached
balance rows (in account order, so concurrent posts cannot deadlock), and answers either the
new transfer or the stored one (ledger/posting.py decides replay or conflict on it, as for
every other posting). PostgreSQL only: SQLite keeps the statements of the general path.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION ledger_post_transfer(
    p_id uuid, p_kind text, p_key text, p_fingerprint text,
    p_debit bigint, p_debit_slot smallint, p_credit bigint, p_credit_slot smallint,
    p_amount bigint, p_currency text, p_effective_at timestamptz, p_posted_at timestamptz,
    p_description text, p_metadata jsonb
) RETURNS SETOF transfers
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transfers (id, journal_id, kind, idempotency_key, leg, fingerprint,
        debit_account_id, credit_account_id, amount, currency, effective_at, posted_at,
        description, metadata, reverses_id)
    VALUES (p_id, p_id, p_kind, p_key, 0, p_fingerprint, p_debit, p_credit, p_amount,
        p_currency, p_effective_at, p_posted_at, p_description, p_metadata, NULL)
    ON CONFLICT ON CONSTRAINT uq_transfers_idempotency DO NOTHING;
    IF FOUND THEN
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
    -- The key was taken: its stored transfers (never none: the row that took the key was
    -- committed before the insert gave way to it, and this statement's snapshot is newer).
    RETURN QUERY
    SELECT * FROM transfers s WHERE s.kind = p_kind AND s.idempotency_key = p_key
    ORDER BY s.leg;
END
$$
"""


def upgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute(
            'DROP FUNCTION ledger_post_transfer(uuid, text, text, text, bigint, smallint,'
            ' bigint, smallint, bigint, text, timestamptz, timestamptz, text, jsonb)'
        )
