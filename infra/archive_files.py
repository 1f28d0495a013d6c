"""A month's archive on disk (issue 18 §2): Parquet files (pyarrow) and a manifest.

    ARCHIVE_DIR/2026-01/transfers.parquet        the month's transfers, every column
                       invoice_usage.parquet    the links of the month's billed usage
                       invoices.parquet         invoices whose period starts in the month,
                       invoice_lines.parquet    with their lines,
                       payment_attempts.parquet their charge attempts,
                       refund_attempts.parquet  their refund attempts,
                       reconciliation_items.parquet  items of runs whose range starts in it
                       manifest.json            rows, SHA-256 and bytes per file; per account
                                                debits and credits of the month's transfers

A month is written into `2026-01.partial/` and renamed to `2026-01/` only once every file is
written, its manifest too, and read back equal: an interrupted write leaves a `.partial`
directory that the next run replaces, never a month that looks complete. `verify` re-reads a
month's files: the checksums, the rows, and the per-account totals recomputed from the
Parquet transfers against the manifest (and against the database while the month is still in
it).

Columns keep their database names; ids and JSON are strings (JSON in the ledger's exact
form), money integer micro-units, instants UTC microseconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.tables import (
    invoice_lines,
    invoice_usage,
    invoices,
    payment_attempts,
    refund_attempts,
)
from infra.archive_plan import parse_month
from infra.partitions import month_partition
from ledger.archived import month_end
from ledger.exact_json import dump_json
from ledger.tables import accounts, transfers
from reconciliation.tables import reconciliation_items, reconciliation_runs

MANIFEST = "manifest.json"
FORMAT = 1
"""The manifest's layout version."""
BATCH_ROWS = 50_000


class ArchiveError(Exception):
    """An archive that does not match its manifest or the database (the message says where)."""


@dataclass(frozen=True, slots=True)
class WrittenMonth:
    month: date
    path: Path
    manifest: dict[str, Any]


def month_dir(root: Path, month: date) -> Path:
    return root / month.strftime("%Y-%m")


def _arrow_type(column: sa.Column[Any]) -> pa.DataType:
    kind = column.type
    if isinstance(kind, sa.TypeDecorator):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, (sa.BigInteger, sa.Integer, sa.SmallInteger)):
        return pa.int64()
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    return pa.string()  # text, ids, JSON


def _cell(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list)):
        return dump_json(value)
    return value


def _selections(month: date) -> dict[str, tuple[sa.Table, sa.Select[Any]]]:
    """Per file, its table and the query of the month's rows (in a stable order)."""
    start, end = datetime(month.year, month.month, 1, tzinfo=UTC), month_end(month)
    own = sa.select(invoices.c.id).where(
        invoices.c.period_start >= start, invoices.c.period_start < end
    )
    runs = sa.select(reconciliation_runs.c.id).where(
        reconciliation_runs.c.range_from >= start, reconciliation_runs.c.range_from < end
    )
    return {
        "transfers": (
            transfers,
            sa.select(transfers)
            .where(transfers.c.effective_at >= start, transfers.c.effective_at < end)
            .order_by(transfers.c.effective_at, transfers.c.id),
        ),
        "invoice_usage": (
            invoice_usage,
            sa.select(invoice_usage)
            .where(invoice_usage.c.effective_at >= start, invoice_usage.c.effective_at < end)
            .order_by(invoice_usage.c.transfer_id),
        ),
        "invoices": (
            invoices,
            sa.select(invoices).where(invoices.c.id.in_(own)).order_by(invoices.c.id),
        ),
        **{
            table.name: (
                table,
                sa.select(table).where(table.c.invoice_id.in_(own)).order_by(table.c.id),
            )
            for table in (invoice_lines, payment_attempts, refund_attempts)
        },
        "reconciliation_items": (
            reconciliation_items,
            sa.select(reconciliation_items)
            .where(reconciliation_items.c.run_id.in_(runs))
            .order_by(reconciliation_items.c.id),
        ),
    }


def _batches(session: Session, query: sa.Select[Any]) -> Iterator[list[dict[str, Any]]]:
    result = session.connection().execution_options(yield_per=BATCH_ROWS).execute(query)
    for part in result.mappings().partitions():
        yield [{name: _cell(value) for name, value in row.items()} for row in part]


def _write_file(session: Session, path: Path, table: sa.Table, query: sa.Select[Any]) -> int:
    schema = pa.schema([(c.name, _arrow_type(c)) for c in table.columns])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(session, query):
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            rows += len(batch)
    if rows == 0:  # a writer that wrote nothing leaves no row group; keep the schema
        pq.write_table(schema.empty_table(), path)
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def database_totals(
    session: Session, month: date
) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Per account code, the debits and credits of the month's transfers in the database; and
    the codes of the account ids they name (the manifest keeps both, so a file can be checked
    without the database)."""
    start, end = datetime(month.year, month.month, 1, tzinfo=UTC), month_end(month)
    totals: dict[str, dict[str, int]] = {}
    codes: dict[str, str] = {}
    for side in ("debit", "credit"):
        column = transfers.c[f"{side}_account_id"]
        rows = session.execute(
            sa.select(accounts.c.id, accounts.c.code, sa.func.sum(transfers.c.amount))
            .join(accounts, accounts.c.id == column)
            .where(transfers.c.effective_at >= start, transfers.c.effective_at < end)
            .group_by(accounts.c.id, accounts.c.code)
        )
        for account_id, code, amount in rows:
            codes[str(account_id)] = code
            totals.setdefault(code, {"debits": 0, "credits": 0})[f"{side}s"] = int(amount)
    return dict(sorted(totals.items())), dict(sorted(codes.items()))


def _file_totals(path: Path, codes: dict[str, str]) -> dict[str, dict[str, int]]:
    """The same totals recomputed from an archived transfers file (ids to codes by `codes`)."""
    table = pq.read_table(path, columns=["debit_account_id", "credit_account_id", "amount"])
    totals: dict[str, dict[str, int]] = {}
    for side in ("debit", "credit"):
        grouped = table.group_by(f"{side}_account_id").aggregate([("amount", "sum")])
        for account_id, amount in zip(
            grouped[f"{side}_account_id"].to_pylist(),
            grouped["amount_sum"].to_pylist(),
            strict=True,
        ):
            code = codes.get(str(account_id), f"#{account_id}")
            totals.setdefault(code, {"debits": 0, "credits": 0})[f"{side}s"] = int(amount)
    return dict(sorted(totals.items()))


def write_month(session: Session, root: Path, month: date, now: datetime) -> WrittenMonth:
    """Write the month's files and manifest, read them back, then make the month visible;
    a month already written is verified and returned as it is (idempotent).

    Raises: ArchiveError when what was written does not read back equal."""
    final = month_dir(root, month)
    if (final / MANIFEST).exists():
        return verify_month(session, final)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    for name, (table, query) in _selections(month).items():
        path = partial / f"{name}.parquet"
        rows = _write_file(session, path, table, query)
        files[name] = {"file": path.name, "rows": rows, "sha256": _sha256(path)}
        files[name]["bytes"] = path.stat().st_size
    manifest = {
        "format": FORMAT,
        "month": month.strftime("%Y-%m"),
        "written_at": now.astimezone(UTC).isoformat(),
        "files": files,
    }
    manifest["totals"], manifest["accounts"] = database_totals(session, month)
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    verify_month(session, partial)
    partial.rename(final)
    return WrittenMonth(month, final, manifest)


def verify_month(session: Session | None, path: Path) -> WrittenMonth:
    """Re-read the month at `path`: every file's checksum and rows against the manifest, and
    the per-account totals recomputed from its transfers; with a session, while the month is
    still in the database, its rows and totals there too.

    Raises: ArchiveError naming the first difference."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise ArchiveError(f"{path}: no readable {MANIFEST} ({error})") from error
    for entry in manifest["files"].values():
        file = path / entry["file"]
        if not file.exists():
            raise ArchiveError(f"{file}: missing")
        if _sha256(file) != entry["sha256"]:
            raise ArchiveError(f"{file}: its SHA-256 differs from the manifest's")
        rows = pq.ParquetFile(file).metadata.num_rows
        if rows != entry["rows"]:
            raise ArchiveError(f"{file}: {rows} rows, the manifest says {entry['rows']}")
    transfers_file = path / manifest["files"]["transfers"]["file"]
    if _file_totals(transfers_file, manifest["accounts"]) != manifest["totals"]:
        raise ArchiveError(f"{transfers_file}: its totals differ from the manifest's")
    month = parse_month(manifest["month"])
    if session is not None and _in_database(session, month):
        totals, _codes = database_totals(session, month)
        if totals != manifest["totals"]:
            raise ArchiveError(f"{path}: the database's totals for the month differ")
        for name, (_table, query) in _selections(month).items():
            counted = session.execute(
                sa.select(sa.func.count()).select_from(query.order_by(None).subquery())
            ).scalar_one()
            if counted != manifest["files"][name]["rows"]:
                raise ArchiveError(
                    f"{path}: {counted} {name} rows in the database, archived"
                    f" {manifest['files'][name]['rows']}"
                )
    return WrittenMonth(month, path, manifest)


def _in_database(session: Session, month: date) -> bool:
    """Whether the month's transfers partition is still there (not dropped yet)."""
    name = month_partition("transfers", month)
    return bool(
        session.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar()
    )
