"""The HTTP status and code of every domain error, shared by the two HTTP adapters (the JSON
API's envelope and the web pages), so a refusal means the same on both."""

from __future__ import annotations

from billing import errors as billing_errors
from ledger import errors as ledger_errors
from reconciliation import errors as reconciliation_errors

# Most specific first: the first matching class decides.
DOMAIN_ERRORS: list[tuple[type[ledger_errors.LedgerError], int, str]] = [
    (ledger_errors.InvalidAmount, 422, "invalid_amount"),
    (ledger_errors.InvalidCurrency, 422, "invalid_currency"),
    (ledger_errors.InvalidTransfer, 422, "invalid_transfer"),
    (ledger_errors.UnknownAccount, 422, "unknown_account"),
    (ledger_errors.UnknownTransfer, 404, "transfer_not_found"),
    (ledger_errors.CurrencyMismatch, 422, "currency_mismatch"),
    (ledger_errors.AccountConflict, 409, "account_conflict"),
    (ledger_errors.IdempotencyConflict, 409, "idempotency_conflict"),
    (ledger_errors.BalanceLimitExceeded, 422, "balance_limit_exceeded"),
    (ledger_errors.AlreadyReversed, 409, "already_reversed"),
    (ledger_errors.ImmutableTransfer, 409, "immutable_transfer"),
    (ledger_errors.ArchivedPeriod, 410, "archived"),
    (ledger_errors.RetryableConflict, 503, "busy_retry"),
    (ledger_errors.DatabaseUnavailable, 503, "database_unavailable"),
    (billing_errors.KindNotAllowed, 422, "kind_not_allowed"),
    (billing_errors.BillingOwnedTransfer, 409, "billing_owned_transfer"),
    (billing_errors.UnknownUsage, 404, "usage_not_found"),
    (billing_errors.UnknownHold, 404, "hold_not_found"),
    (billing_errors.HoldConflict, 409, "hold_conflict"),
    (billing_errors.InvalidUsage, 422, "validation_failed"),
    (billing_errors.CustomerNotFound, 404, "customer_not_found"),
    (billing_errors.CustomerExists, 409, "customer_exists"),
    (billing_errors.UnknownCustomer, 422, "unknown_customer"),
    (billing_errors.InvalidSettings, 422, "invalid_settings"),
    (billing_errors.InvalidRate, 422, "invalid_rate"),
    (billing_errors.UnknownInvoice, 404, "invoice_not_found"),
    (billing_errors.InvalidInvoiceState, 409, "invalid_state"),
    (billing_errors.InvalidRole, 422, "invalid_role"),
    (reconciliation_errors.InvalidStatement, 422, "invalid_statement"),
    (reconciliation_errors.UnknownRun, 404, "run_not_found"),
    (reconciliation_errors.ItemNotResolvable, 409, "not_resolvable"),
    (reconciliation_errors.SippyNotConfigured, 503, "sippy_not_configured"),
    (reconciliation_errors.SippyStatementUnavailable, 503, "sippy_unavailable"),
    (ledger_errors.LedgerError, 422, "invalid_request"),
]

RETRY_AFTER_SECONDS = "1"
"""Every 503 says when to try again (SPEC §7: an outage is a 503 with `Retry-After`), except
the `NOT_RETRYABLE` ones."""

NOT_RETRYABLE: tuple[type[ledger_errors.LedgerError], ...] = (
    reconciliation_errors.SippyNotConfigured,
)
"""503s that no retry can satisfy (a configuration gap): answered without `Retry-After`."""


def status_of(error: ledger_errors.LedgerError) -> tuple[int, str]:
    """The HTTP status and machine-readable code of a domain error."""
    for cls, status, code in DOMAIN_ERRORS:
        if isinstance(error, cls):
            return status, code
    raise AssertionError("LedgerError is in the table")


def retry_after(error: ledger_errors.LedgerError) -> str | None:
    """The `Retry-After` a 503 for `error` carries, or None."""
    status, _ = status_of(error)
    if status == 503 and not isinstance(error, NOT_RETRYABLE):
        return RETRY_AFTER_SECONDS
    return None
