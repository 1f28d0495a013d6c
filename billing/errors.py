"""The billing domain's refusals, beside the ledger's (`ledger/errors.py`)."""

from __future__ import annotations

from ledger.errors import LedgerError


class BillingError(LedgerError):
    """Root of the billing domain's refusals."""


class InvalidRole(BillingError):
    """Raised when an API key is asked for with a role that does not exist."""


class KindNotAllowed(BillingError):
    """Raised when a manual journal entry uses a kind only the engine may post (usage,
    invoice, settlement, rounding) or reversal outside the reverse endpoint."""


class BillingOwnedTransfer(BillingError):
    """Raised when the generic ledger reversal is asked to undo a transfer billing owns (usage,
    invoice, rounding, settlement, a cancelled invoice's write-off, a reconciliation's entry):
    only its owner may, because the owner moves the billing state with it. The message names
    the owner's action."""


class UnknownUsage(BillingError):
    """Raised when a usage event is voided that was never posted (no such `message_id`)."""


class InvalidSettings(BillingError):
    """Raised when billing settings are inconsistent (threshold frequency without a threshold,
    a percentage outside 1-100, an unknown field)."""


class InvalidUsage(BillingError):
    """Raised when usage events fail validation; `details["errors"]` lists every problem as
    `{index, field, code, message}` so a batch is refused whole with all its reasons."""


class UnknownCustomer(BillingError):
    """Raised when usage names a user that does not exist and auto-provisioning is off."""


class InvalidRate(BillingError):
    """Raised when a rate (or a line of a rate file) is malformed; details name line and field."""


class UnknownInvoice(BillingError):
    """Raised when an invoice id does not exist."""


class InvalidInvoiceState(BillingError):
    """Raised when an admin action does not fit the invoice's state (retrying a paid invoice,
    approving one twice, cancelling one being charged)."""


class CustomerNotFound(UnknownCustomer):
    """Raised when an admin reads or changes a customer that does not exist."""


class CustomerExists(BillingError):
    """Raised when an admin creates a customer whose user id is taken (auto-provisioned by
    usage, or created before): change it with PATCH instead."""


class InvalidUserToken(BillingError):
    """Raised when an end user's token is missing its claims, expired, or not signed with
    `USER_TOKEN_SECRET`."""


class UnknownHold(BillingError):
    """Raised when a hold is released that does not exist (never placed, captured by its usage
    post, released before, or expired)."""


class HoldConflict(BillingError):
    """Raised when a reserving check names a `message_id` another user's hold or usage has
    taken: a message id belongs to one message of one user."""
