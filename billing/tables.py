"""The billing domain's tables, on the ledger's metadata so one Alembic history owns them all."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ledger.tables import BigId, Json, UtcDateTime, metadata

ROLES = ("admin", "service", "accountant")

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    # The first characters, shown in listings so a key can be recognised without storing it.
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("role IN ('admin', 'service', 'accountant')", name="role_known"),
)

CUSTOMER_STATUSES = ("active", "suspended")

customers = sa.Table(
    "customers",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("sippy_account_id", sa.String(64), nullable=True),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("rate_plan", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("status IN ('active', 'suspended')", name="status_known"),
)

# Usage counters the ledger does not keep (it counts money, not messages): moved in the same
# transaction as the usage transfers, under the same per-customer lock, and reduced by a close.
usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.user_id"), primary_key=True),
    sa.Column("unbilled_messages", sa.BigInteger, nullable=False),
    sa.Column("unbilled_segments", sa.BigInteger, nullable=False),
    # The earliest effective time of this customer's unbilled usage: a close reads usage from
    # here on instead of the customer's whole history (NULL: nothing unbilled).
    sa.Column("oldest_unbilled_at", UtcDateTime, nullable=True),
    sa.CheckConstraint("unbilled_messages >= 0 AND unbilled_segments >= 0", name="non_negative"),
)

# One row per scope: GLOBAL_SCOPE for the defaults, a user id for that user's overrides.
# `values` holds only the fields set at that scope (money as integer micro-units).
billing_settings = sa.Table(
    "billing_settings",
    metadata,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("values", Json, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

rates = sa.Table(
    "rates",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("plan", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(15), nullable=False),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("price_micros", sa.BigInteger, nullable=False),
    sa.Column("valid_from", UtcDateTime, nullable=False),
    sa.Column("valid_to", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("price_micros > 0", name="price_positive"),
    sa.CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="window_ordered"),
    sa.UniqueConstraint("plan", "prefix", "currency", "valid_from", name="uq_rates_version"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.user_id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("frequency", sa.String(16), nullable=False),
    sa.Column("period_start", UtcDateTime, nullable=False),
    sa.Column("period_end", UtcDateTime, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # The total to charge, rounded to the currency's minor unit (ROUND_HALF_UP).
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("usage_micros", sa.BigInteger, nullable=False, server_default="0"),
    # usage - amount: what the rounding transfer moved (positive: rounded down).
    sa.Column("rounding_micros", sa.BigInteger, nullable=False, server_default="0"),
    # Voided messages of earlier invoices credited on this one (usage - credit is what it bills).
    sa.Column("credit_micros", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("message_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("segments", sa.BigInteger, nullable=False, server_default="0"),
    # The effective settings and the rate versions it was closed under (SPEC §6).
    sa.Column("settings", Json, nullable=True),
    sa.Column("rate_ids", Json, nullable=True),
    sa.Column("approved_at", UtcDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=True),
    # When the next charge attempt is due, the first one included; NULL: none is planned (it
    # waits for an admin, or a terminal decline left it failed, or it is settled).
    sa.Column("next_retry_at", UtcDateTime, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=True),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'paid', 'failed', 'cancelled', 'refunded')",
        name="status_known",
    ),
    # One standing invoice per customer and period start: a cancelled one does not count, so
    # the late usage of a period whose invoice was cancelled can be invoiced again (the
    # cancelled invoice's own usage stays written off, linked to it in `invoice_usage`).
    sa.Index(
        "uq_invoices_customer_period",
        "customer_id",
        "period_start",
        unique=True,
        postgresql_where=sa.text("status <> 'cancelled'"),
        sqlite_where=sa.text("status <> 'cancelled'"),
    ),
    sa.Index("ix_invoices_customer_status", "customer_id", "status"),
    sa.Index("ix_invoices_status_next_retry_at", "status", "next_retry_at"),
    # The admin list (newest first, a page at a time) and the period figures (created in a
    # month) read invoices in this order: without it each page sorts the whole table.
    sa.Index("ix_invoices_created_at_id", "created_at", "id"),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("invoice_id", sa.Uuid, sa.ForeignKey("invoices.id"), nullable=False, index=True),
    sa.Column("country", sa.String(2), nullable=True),
    sa.Column("prefix", sa.String(15), nullable=True),
    sa.Column("messages", sa.BigInteger, nullable=False),
    sa.Column("segments", sa.BigInteger, nullable=False),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
)

# Which invoice billed each usage transfer. The primary key is invariant 7's guard: a usage
# transfer can be billed in one invoice at most, whatever the code does. No foreign keys: rows
# are written only by the close, from transfers (append-only, never deleted) and invoices it has
# just inserted (never deleted); declared, the two checks cost 14 µs per billed SMS (measured,
# 1,000,000 rows: 20 s with them, 6 s without).
invoice_usage = sa.Table(
    "invoice_usage",
    metadata,
    sa.Column("transfer_id", sa.Uuid, primary_key=True),
    # The billed transfer's own: on PostgreSQL the links are partitioned by month as transfers
    # are (migration 0011), so a month's links are archived and dropped with its transfers; the
    # primary key there is (transfer_id, effective_at), one link per transfer still.
    sa.Column("effective_at", UtcDateTime, nullable=False),
    # No index on invoice_id: no query reads usage by invoice (lines are stored per invoice);
    # one more index would be another 1,000,000 insertions in a large close.
    sa.Column("invoice_id", sa.Uuid, nullable=False),
)

# Work that must follow a committed change (charge an invoice, deliver a notification): written
# in the same transaction, dispatched after commit, swept if a dispatch was lost.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(32), nullable=False),
    sa.Column("key", sa.String(200), nullable=False, unique=True),
    sa.Column("payload", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("dispatched_at", UtcDateTime, nullable=True),
    sa.Index(
        "ix_outbox_pending",
        "created_at",
        postgresql_where=sa.text("dispatched_at IS NULL"),
        sqlite_where=sa.text("dispatched_at IS NULL"),
    ),
)

# A threshold crossing asks for the customer's period to be closed; the request is durable so
# nothing is lost while no close job runs. At most one open request per customer.
close_requests = sa.Table(
    "close_requests",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.user_id"), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("served_at", UtcDateTime, nullable=True),
    sa.Index(
        "uq_close_requests_open",
        "customer_id",
        unique=True,
        postgresql_where=sa.text("served_at IS NULL"),
        sqlite_where=sa.text("served_at IS NULL"),
    ),
)

notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.user_id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    # Makes "at most once per user, period and threshold" a unique constraint.
    sa.Column("dedupe_key", sa.String(300), nullable=False, unique=True),
    sa.Column("payload", Json, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # Webhook delivery (the row is its own outbox): pending until delivered, failed after the
    # last retry, skipped when the customer has no webhook URL.
    sa.Column("delivery_status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("delivery_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_delivery_at", UtcDateTime, nullable=True),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
    sa.CheckConstraint(
        "delivery_status IN ('pending', 'delivered', 'failed', 'skipped')",
        name="delivery_status_known",
    ),
    sa.Index("ix_notifications_customer_created", "customer_id", "created_at"),
    sa.Index(
        "ix_notifications_undelivered",
        "id",
        postgresql_where=sa.text("delivery_status = 'pending'"),
        sqlite_where=sa.text("delivery_status = 'pending'"),
    ),
)

ATTEMPT_STATUSES = ("started", "accepted", "declined", "unknown", "not_applied")


# Every charge attempt, recorded before Sippy is called (invariant 8): its reference travels in
# Sippy's payment notes, so an unanswered attempt can be looked up before anything is retried.
def _money_move_columns() -> list[sa.Column[Any]]:
    """What every attempt to move money in Sippy records, a charge's or a refund's: the unique
    reference it carries in the payment notes, whose account and how much, and how it ended."""
    return [
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("invoice_id", sa.Uuid, sa.ForeignKey("invoices.id"), nullable=False),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("reference", sa.String(120), nullable=False, unique=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("sippy_account_id", sa.String(64), nullable=True),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        # Why it ended as it did: a Sippy fault code, "http_401", "timeout", "no_sippy_account"...
        sa.Column("code", sa.String(40), nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("sippy_payment_id", sa.String(64), nullable=True),
        sa.Column("finished_at", UtcDateTime, nullable=True),
    ]


payment_attempts = sa.Table(
    "payment_attempts",
    metadata,
    *_money_move_columns(),
    sa.Column("retryable", sa.Boolean, nullable=True),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(
        "status IN ('started', 'accepted', 'declined', 'unknown', 'not_applied')",
        name="status_known",
    ),
    sa.UniqueConstraint("invoice_id", "attempt_no", name="uq_payment_attempts_invoice_attempt"),
    sa.Index("ix_payment_attempts_status_started", "status", "started_at"),
)

# A voided message that an invoice had billed already: credited on the customer's next invoice
# (`invoice_id` is that invoice once the close applied it; NULL: still waiting). One credit per
# usage transfer, whatever the retries.
usage_credits = sa.Table(
    "usage_credits",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(64), sa.ForeignKey("customers.user_id"), nullable=False),
    sa.Column("transfer_id", sa.Uuid, nullable=False, unique=True),
    sa.Column("message_id", sa.String(200), nullable=False),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("invoice_id", sa.Uuid, sa.ForeignKey("invoices.id"), nullable=True),
    sa.CheckConstraint("amount_micros > 0", name="amount_positive"),
    sa.Index("ix_usage_credits_customer_pending", "customer_id", "invoice_id"),
)


# Every refund attempt of a paid invoice, recorded before Sippy's `accountCredit` is called: the
# same discipline as charges (its reference travels in the payment notes and is looked up when
# no answer came), so a refund is credited in Sippy exactly once.
refund_attempts = sa.Table(
    "refund_attempts",
    metadata,
    *_money_move_columns(),
    # requested (by an admin, not sent yet), started (sent), then as a charge attempt ends.
    sa.Column("requested_by", sa.String(100), nullable=True),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=True),
    sa.CheckConstraint(
        "status IN ('requested', 'started', 'accepted', 'declined', 'unknown', 'not_applied')",
        name="status_known",
    ),
    sa.UniqueConstraint("invoice_id", "attempt_no", name="uq_refund_attempts_invoice_attempt"),
    sa.Index("ix_refund_attempts_status_started", "status", "started_at"),
)

# One row per webhook POST: the delivery log admins read when a customer says "nothing came".
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "notification_id", BigId, sa.ForeignKey("notifications.id"), nullable=False, index=True
    ),
    sa.Column("attempt_no", sa.Integer, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("succeeded", sa.Boolean, nullable=False),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    # SHA-256 of the random token the browser holds (in a signed cookie): a stolen database
    # does not hand out live sessions.
    sa.Column("token_hash", sa.String(64), primary_key=True),
    # A staff session is an API key's (admin or accountant): revoking the key ends it.
    sa.Column("api_key_id", BigId, sa.ForeignKey("api_keys.id"), nullable=True),
    sa.Column("role", sa.String(16), nullable=True),
    # An end user's session, exchanged for their host-application token.
    sa.Column("user_id", sa.String(64), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.CheckConstraint(
        "(api_key_id IS NOT NULL AND role IS NOT NULL AND user_id IS NULL)"
        " OR (api_key_id IS NULL AND role IS NULL AND user_id IS NOT NULL)",
        name="staff_or_user",
    ),
    sa.Index("ix_web_sessions_expires_at", "expires_at"),
)

# Holds: what reserving pre-send checks set aside for messages not yet posted (two-phase usage,
# billing/usage/holds.py). Not ledger transfers: posted balances never include them.
usage_holds = sa.Table(
    "usage_holds",
    metadata,
    # The usage event's idempotency key: the post with this message_id captures the hold.
    sa.Column("message_id", sa.String(200), primary_key=True),
    # No foreign key: a first-time sender has no customer row until its first post.
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("amount_micros", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("amount_micros >= 0", name="amount_non_negative"),
    sa.Index("ix_usage_holds_customer_id_expires_at", "customer_id", "expires_at"),
    sa.Index("ix_usage_holds_expires_at", "expires_at"),
)
