"""The pre-send check's read as a function, `billing_send_state`: the same one-statement read of
billing/usage/presend.py (customer, overrides, cached balances, unpaid and pending invoices,
live holds, and a reserving check's claim), whose plan PostgreSQL keeps per connection. As a
plain statement it was planned on every check, and planning (a dozen subqueries) cost several
times its execution. SQLite keeps the statement.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION billing_send_state(
    p_user_id text, p_unbilled_code text, p_receivable_code text, p_now timestamptz,
    p_own_message_id text, p_unpaid text[], p_pending text
) RETURNS TABLE (
    currency text, status text, rate_plan text, overrides jsonb,
    unbilled bigint, receivable bigint, unpaid bigint, awaiting_approval bigint, held bigint,
    own_hold_user text, own_hold_amount bigint, own_hold_currency text,
    own_hold_expires_at timestamptz, own_posted_by text
)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY SELECT
        c.currency::text, c.status::text, c.rate_plan::text,
        (SELECT s."values" FROM billing_settings s WHERE s.scope = p_user_id)::jsonb,
        (SELECT coalesce(sum(b.debits - b.credits), 0) FROM balances b
            JOIN accounts a ON a.id = b.account_id WHERE a.code = p_unbilled_code)::bigint,
        (SELECT coalesce(sum(b.debits - b.credits), 0) FROM balances b
            JOIN accounts a ON a.id = b.account_id WHERE a.code = p_receivable_code)::bigint,
        (SELECT count(*) FROM invoices i
            WHERE i.customer_id = p_user_id AND i.status = ANY (p_unpaid)),
        (SELECT count(*) FROM invoices i
            WHERE i.customer_id = p_user_id AND i.status = p_pending),
        (SELECT coalesce(sum(h.amount_micros), 0) FROM usage_holds h
            WHERE h.customer_id = p_user_id AND h.expires_at > p_now
              AND h.message_id <> p_own_message_id
              -- A probe per hold, never a join: an anti-join may hash all of transfers.
              AND (SELECT 1 FROM transfers t WHERE t.kind = 'usage'
                  AND t.idempotency_key = h.message_id AND t.leg = 0 LIMIT 1) IS NULL
        )::bigint,
        own.customer_id::text, own.amount_micros, own.currency::text, own.expires_at,
        (SELECT t.metadata ->> 'user_id' FROM transfers t WHERE t.kind = 'usage'
            AND t.idempotency_key = p_own_message_id AND t.leg = 0)
    FROM (SELECT 1) AS one
    LEFT JOIN customers c ON c.user_id = p_user_id
    LEFT JOIN usage_holds own ON own.message_id = p_own_message_id;
END
$$
"""


def upgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute(
            'DROP FUNCTION billing_send_state(text, text, text, timestamptz, text, text[], text)'
        )
