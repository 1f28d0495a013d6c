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
