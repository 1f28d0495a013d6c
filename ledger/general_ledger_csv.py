"""The ledger as a general-ledger CSV (docs/export.md): one row per posting, two per transfer
(its debit, then its credit), in effective order, for spreadsheets and accounting imports.

Money is exact decimal text with six places, in the `debit` or the `credit` column (the other
one empty); every other field is the ledger's own value, unchanged.
"""

from __future__ import annotations

import csv
from datetime import datetime
from typing import TextIO

from sqlalchemy.orm import Session

from ledger.exact_json import dump_json
from ledger.export import ExportSummary, accounts_by_id, begin_snapshot, journal_entries, utc_text
from ledger.model import Account, Transfer
from ledger.money import MICRO_PLACES, format_micros

COLUMNS = (
    "date",
    "effective_at",
    "posted_at",
    "journal_id",
    "transfer_id",
    "leg",
    "kind",
    "idempotency_key",
    "account",
    "account_type",
    "customer_id",
    "debit",
    "credit",
    "currency",
    "description",
    "metadata",
    "reverses_id",
)


def write_general_ledger_csv(
    session: Session, out: TextIO, start: datetime | None = None, end: datetime | None = None
) -> ExportSummary:
    """Write the postings of the entries effective in [start, end) (either bound open) to
    `out`, with a header row, read in one snapshot of a fresh session."""
    begin_snapshot(session)
    found = accounts_by_id(session)
    by_code = {account.code: account for account in found.values()}
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    entries = transfer_count = 0
    codes = {account_id: account.code for account_id, account in found.items()}
    for entry in journal_entries(session, codes, start, end):
        for transfer in entry:
            writer.writerow(_row(transfer, by_code[transfer.debit_account], "debit"))
            writer.writerow(_row(transfer, by_code[transfer.credit_account], "credit"))
        entries += 1
        transfer_count += len(entry)
    return ExportSummary(len(found), entries, transfer_count)


def _row(transfer: Transfer, account: Account, side: str) -> list[str]:
    amount = format_micros(transfer.amount, MICRO_PLACES)
    return [
        transfer.effective_at.date().isoformat(),
        utc_text(transfer.effective_at),
        utc_text(transfer.posted_at),
        str(transfer.journal_id),
        str(transfer.id),
        str(transfer.leg),
        transfer.kind.value,
        transfer.idempotency_key,
        account.code,
        account.type.value,
        account.customer_id or "",
        amount if side == "debit" else "",
        amount if side == "credit" else "",
        transfer.currency,
        transfer.description or "",
        dump_json(transfer.metadata) if transfer.metadata else "",
        str(transfer.reverses_id or ""),
    ]
