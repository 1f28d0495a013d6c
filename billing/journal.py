"""Manual journal entries (adjustments, opening balances) and reversals posted by people.

The engine's own kinds (usage, invoice, settlement, rounding) are posted only by the billing
flows that own them; a person corrects them with adjustments or reversals.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from billing.chart import ensure_system_accounts_named
from billing.errors import KindNotAllowed
from ledger.model import EntryRequest, Kind, PostResult
from ledger.posting import post_entry

MANUAL_KINDS = frozenset({Kind.ADJUSTMENT, Kind.OPENING})


def post_manual_entry(session: Session, entry: EntryRequest, now: datetime) -> PostResult:
    """Post an adjustment or opening entry, creating standard system accounts it names.

    Raises: KindNotAllowed, and whatever `ledger.posting.post_entries` raises.
    """
    if entry.kind not in MANUAL_KINDS:
        raise KindNotAllowed(
            f"kind {entry.kind.value!r} cannot be posted by hand; use one of "
            + ", ".join(sorted(k.value for k in MANUAL_KINDS)),
            field="kind",
        )
    codes = {code for leg in entry.legs for code in (leg.debit, leg.credit)}
    ensure_system_accounts_named(session, codes, now)
    return post_entry(session, entry, now)
