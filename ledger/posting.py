"""Posting journal entries: set-based, atomic, idempotent.

One call posts many independent entries (a batch of usage, or one manual entry) in a handful
of statements: look the keys up, insert what is new with `ON CONFLICT DO NOTHING`, then move
each touched balance row once, in a fixed order so concurrent posts cannot deadlock.

A key that a concurrent unit of work inserted first is found by re-reading after the insert:
then its content decides between a replay (`duplicate`) and `IdempotencyConflict`.

One entry of one transfer (every SMS posted alone, most manual entries) takes one round trip
on PostgreSQL: `ledger_post_transfer` (migrations 0009, 0011) inserts, moves both balances and
answers the new or the stored transfer in one statement, and the same Python decides replay or
conflict on its answer. Entries that could break a balance limit (the account must be named)
or that reverse a transfer keep the general path.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import uuid6
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ledger import db
from ledger.accounts import committed_accounts, find_accounts
from ledger.archived import refuse_before_cut
from ledger.bulk import BULK_MIN_ROWS, COLUMNS, array_text, insert_transfers
from ledger.db import execute_alone, run_in_transaction
from ledger.errors import (
    AlreadyReversed,
    BalanceLimitExceeded,
    CurrencyMismatch,
    IdempotencyConflict,
    LedgerError,
    UnknownAccount,
    UnknownTransfer,
)
from ledger.exact_json import dump_json
from ledger.model import Account, EntryRequest, Kind, Leg, PostResult, Transfer, validate_entry
from ledger.tables import HOT_SLOTS, accounts, balances, transfers
from ledger.transfer_keys import keyed, reversal_of

EntryKey = tuple[str, str]


def post_entry(session: Session, entry: EntryRequest, now: datetime) -> PostResult:
    """Post one journal entry; see `post_entries`."""
    return post_entries(session, [entry], now)[0]


def post_entries(
    session: Session, entries: Sequence[EntryRequest], now: datetime
) -> list[PostResult]:
    """Post each entry once, all in the caller's transaction; results in input order.

    An entry whose (kind, idempotency_key) was posted before with the same content comes back
    as `duplicate` with the original transfers and moves no balance.

    Raises: InvalidTransfer, InvalidAmount, UnknownAccount, CurrencyMismatch,
    IdempotencyConflict, BalanceLimitExceeded, AlreadyReversed.
    """
    for index, entry in enumerate(entries):
        _with_index(index, validate_entry, entry)
    fingerprints = [entry.fingerprint() for entry in entries]
    account_by_code = _resolve_accounts(session, entries)
    dialect = session.get_bind().dialect.name
    if len(entries) == 1 and _one_round_trip(dialect, entries[0], account_by_code):
        (row,) = _rows(entries[0], fingerprints[0], account_by_code, now)
        answer = session.connection().exec_driver_sql(
            _POST_TRANSFER, _post_params(row, account_by_code)
        )
        return [_judged(answer.all(), row, entries[0], account_by_code)]
    keys = [(entry.kind.value, entry.idempotency_key) for entry in entries]
    first_seen = _first_occurrences(entries, keys, fingerprints)

    # Insert first: a key that exists already (a replay, or a concurrent post that won) is
    # simply not inserted, and only those are read back. New keys cost one statement.
    rows: list[dict[str, Any]] = []
    for index in first_seen.values():
        rows.extend(_rows(entries[index], fingerprints[index], account_by_code, now))
    inserted, stored = _insert_new(session, rows, account_by_code)
    new_by_key = _new_transfers(rows, inserted, account_by_code)

    results: list[PostResult] = []
    for index, entry in enumerate(entries):
        key = keys[index]
        if key in new_by_key and first_seen[key] == index:
            if len(new_by_key[key]) != len(entry.legs):
                raise _conflict(entry, index)
            results.append(PostResult("posted", tuple(new_by_key[key])))
            continue
        previous = stored.get(key) or tuple(new_by_key.get(key, ()))
        if not previous:  # the key is taken and its transfers are gone: archived
            refuse_before_cut(session, None, f"key {entry.idempotency_key!r}: its posting")
        if not _same_entry(previous, fingerprints[index], len(entry.legs)):
            raise _conflict(entry, index)
        results.append(PostResult("duplicate", tuple(previous)))
    return results


def post_alone(sessions: sessionmaker[Session], entry: EntryRequest, now: datetime) -> PostResult:
    """Post `entry` as a transaction of its own, for a caller with nothing else to write in it.

    A one-transfer entry that `ledger_post_transfer` takes, whose accounts this process has seen
    committed, is one autocommitted statement: one round trip, where a unit of work pays three
    (BEGIN, the statement, COMMIT). Anything else is `post_entry` in a unit of work.

    Raises: as `post_entry`; DatabaseUnavailable (`may_have_committed` when the connection was
    lost with the statement in flight: only a retry with the same key can tell).
    """
    validate_entry(entry)
    engine = sessions.kw["bind"]
    codes = {code for leg in entry.legs for code in (leg.debit, leg.credit)}
    by_code = committed_accounts(engine, codes)
    if len(by_code) < len(codes) or not _one_round_trip(engine.dialect.name, entry, by_code):
        return run_in_transaction(sessions, lambda session: post_entry(session, entry, now))
    _check_currencies(entry, by_code, 0)
    (row,) = _rows(entry, entry.fingerprint(), by_code, now)
    answer = execute_alone(engine, _POST_TRANSFER, _post_params(row, by_code))
    return _judged(answer, row, entry, by_code)


def _one_round_trip(dialect: str, entry: EntryRequest, by_code: dict[str, Account]) -> bool:
    """Whether `ledger_post_transfer` can post `entry`: one transfer, on PostgreSQL, no
    reversal, and no balance limit it could break (those are checked on locked rows first)."""
    if len(entry.legs) != 1 or entry.legs[0].reverses is not None or dialect != "postgresql":
        return False
    leg = entry.legs[0]
    return not (
        by_code[leg.debit].debits_must_not_exceed_credits
        or by_code[leg.credit].credits_must_not_exceed_debits
    )


# Driver-level SQL: the per-SMS path skips SQLAlchemy's statement and result machinery
# (measured: it cost more than the statement itself). Rows come back in `COLUMNS` order.
_POST_TRANSFER = (
    "SELECT * FROM ledger_post_transfer(%s::uuid, %s::text, %s::text, %s::text, %s::bigint,"
    " %s::smallint, %s::bigint, %s::smallint, %s::bigint, %s::text, %s::timestamptz,"
    " %s::timestamptz, %s::text, %s::jsonb)"
)


def _post_params(row: dict[str, Any], by_code: dict[str, Account]) -> tuple[Any, ...]:
    """`ledger_post_transfer`'s arguments for the transfer `row` (`_rows`'): its new id first,
    and a random slot for a hot account."""
    hot = {account.id: account.hot for account in by_code.values()}
    debit, credit = row["debit_account_id"], row["credit_account_id"]
    return (
        str(row["id"]),
        row["kind"],
        row["idempotency_key"],
        row["fingerprint"],
        debit,
        random.randrange(HOT_SLOTS) if hot[debit] else 0,
        credit,
        random.randrange(HOT_SLOTS) if hot[credit] else 0,
        row["amount"],
        row["currency"],
        row["effective_at"],
        row["posted_at"],
        row["description"],
        dump_json(row["metadata"]) if row["metadata"] is not None else None,
    )


def _judged(
    answer: Sequence[Sequence[Any]],
    row: dict[str, Any],
    entry: EntryRequest,
    by_code: dict[str, Account],
) -> PostResult:
    """`ledger_post_transfer`'s answer as a result: no rows, posted (the transfer is `row`, the
    one sent); else the key's stored transfers, judged as `post_entries` judges them (a
    replay, or IdempotencyConflict)."""
    leg = entry.legs[0]
    if not answer:
        return PostResult("posted", (transfer_from(row, leg.debit, leg.credit),))
    code_by_id = {by_code[leg.debit].id: leg.debit, by_code[leg.credit].id: leg.credit}
    stored = tuple(_transfer_of(found, code_by_id) for found in answer)
    if not _same_entry(stored, row["fingerprint"], 1):
        raise _conflict(entry, 0)
    return PostResult("duplicate", stored)


def _transfer_of(row: Sequence[Any], code_by_id: dict[int, str]) -> Transfer:
    """A transfers row as the driver returns it (`COLUMNS` order: text uuids, timestamps in
    the session's zone). A stored row of a conflicting replay may name other accounts: their
    codes are not needed to refuse it."""
    values = dict(zip(COLUMNS, row, strict=True))
    for name in ("id", "journal_id", "reverses_id"):
        if values[name] is not None:
            values[name] = uuid.UUID(str(values[name]))
    for name in ("effective_at", "posted_at"):
        values[name] = values[name].astimezone(UTC)
    return transfer_from(
        values,
        code_by_id.get(values["debit_account_id"], ""),
        code_by_id.get(values["credit_account_id"], ""),
    )


def _first_occurrences(
    entries: Sequence[EntryRequest], keys: list[EntryKey], fingerprints: list[str]
) -> dict[EntryKey, int]:
    """Where each key first appears in the request. Raises: IdempotencyConflict when one key
    comes twice with different content."""
    first_seen: dict[EntryKey, int] = {}
    for index, entry in enumerate(entries):
        key = keys[index]
        if key in first_seen and fingerprints[first_seen[key]] != fingerprints[index]:
            raise _conflict(entry, index)
        first_seen.setdefault(key, index)
    return first_seen


def _insert_new(
    session: Session, rows: list[dict[str, Any]], account_by_code: dict[str, Account]
) -> tuple[set[uuid.UUID], dict[EntryKey, tuple[Transfer, ...]]]:
    """Insert the rows whose keys are new and move their balances; the ids inserted, and the
    stored transfers of keys another post had already taken."""
    if not rows:
        return set(), {}
    rows.sort(key=lambda row: (row["kind"], row["idempotency_key"], row["leg"]))
    try:
        inserted = insert_transfers(session, rows)
    except IntegrityError as error:
        if db.constraint_name(error) == "uq_transfer_keys_reverses_id":
            raise AlreadyReversed("that transfer has already been reversed") from error
        raise
    lost_races = {(r["kind"], r["idempotency_key"]) for r in rows if r["id"] not in inserted}
    stored = _stored_entries(session, list(lost_races)) if lost_races else {}
    _move_balances(session, [r for r in rows if r["id"] in inserted], account_by_code)
    return inserted, stored


def _new_transfers(
    rows: list[dict[str, Any]], inserted: set[uuid.UUID], account_by_code: dict[str, Account]
) -> dict[EntryKey, list[Transfer]]:
    code_by_id = {account.id: code for code, account in account_by_code.items()}
    new_by_key: dict[EntryKey, list[Transfer]] = defaultdict(list)
    for row in rows:
        if row["id"] in inserted:
            new_by_key[(row["kind"], row["idempotency_key"])].append(
                transfer_from(
                    row, code_by_id[row["debit_account_id"]], code_by_id[row["credit_account_id"]]
                )
            )
    return new_by_key


def reverse_transfer(
    session: Session,
    transfer_id: uuid.UUID,
    idempotency_key: str,
    now: datetime,
    description: str | None = None,
) -> PostResult:
    """Post the transfer that undoes `transfer_id` (same amount, sides swapped).

    Raises: UnknownTransfer, AlreadyReversed (under another key), BalanceLimitExceeded.
    """
    original = get_transfer(session, transfer_id)
    existing = session.execute(reversal_of(transfer_id)).scalar_one_or_none()
    if existing is not None and existing != idempotency_key:
        raise AlreadyReversed(
            f"transfer {transfer_id} was already reversed", transfer_id=str(transfer_id)
        )
    entry = EntryRequest(
        kind=Kind.REVERSAL,
        idempotency_key=idempotency_key,
        legs=(
            Leg(
                debit=original.credit_account,
                credit=original.debit_account,
                amount=original.amount,
                reverses=original.id,
            ),
        ),
        description=description or f"reversal of {original.id}",
    )
    return post_entry(session, entry, now)


def get_transfer(session: Session, transfer_id: uuid.UUID) -> Transfer:
    """Raises: UnknownTransfer."""
    found = list(select_transfers(session, transfers.c.id == transfer_id))
    if not found:
        raise UnknownTransfer(f"no transfer {transfer_id}", transfer_id=str(transfer_id))
    return found[0]


def select_transfers(session: Session, *where: sa.ColumnElement[bool]) -> Iterable[Transfer]:
    """Transfers matching `where`, with their account codes, in (kind, key, leg) order."""
    debit = accounts.alias("debit")
    credit = accounts.alias("credit")
    query = (
        sa.select(
            transfers,
            debit.c.code.label("debit_code"),
            credit.c.code.label("credit_code"),
        )
        .join(debit, debit.c.id == transfers.c.debit_account_id)
        .join(credit, credit.c.id == transfers.c.credit_account_id)
        .where(*where)
        .order_by(transfers.c.kind, transfers.c.idempotency_key, transfers.c.leg)
    )
    for row in session.execute(query):
        values = row._mapping
        yield transfer_from(values, values["debit_code"], values["credit_code"])


def _with_index(index: int, check: Any, *args: Any) -> None:
    try:
        check(*args)
    except LedgerError as error:
        error.details.setdefault("index", index)
        raise


def _resolve_accounts(session: Session, entries: Sequence[EntryRequest]) -> dict[str, Account]:
    codes = {code for entry in entries for leg in entry.legs for code in (leg.debit, leg.credit)}
    found = find_accounts(session, codes)
    for index, entry in enumerate(entries):
        for leg in entry.legs:
            for code in (leg.debit, leg.credit):
                if code not in found:
                    raise UnknownAccount(f"no account {code!r}", account=code, index=index)
        _check_currencies(entry, found, index)
    return found


def _check_currencies(entry: EntryRequest, found: dict[str, Account], index: int) -> None:
    """Raises: CurrencyMismatch when a leg's accounts, or the entry's stated currency, differ."""
    for leg in entry.legs:
        debit, credit = found[leg.debit], found[leg.credit]
        currency = entry.currency or debit.currency
        if not debit.currency == credit.currency == currency:
            raise CurrencyMismatch(
                f"{leg.debit} is {debit.currency}, {leg.credit} is {credit.currency}"
                + (f", the entry says {entry.currency}" if entry.currency else ""),
                index=index,
                debit_account=leg.debit,
                credit_account=leg.credit,
            )


def _stored_entries(session: Session, keys: list[EntryKey]) -> dict[EntryKey, tuple[Transfer, ...]]:
    """The transfers already posted under these (kind, key) pairs, grouped by pair."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, key in keys:
        by_kind[kind].append(key)
    found: dict[EntryKey, list[Transfer]] = defaultdict(list)
    for kind, kind_keys in by_kind.items():
        for chunk_start in range(0, len(kind_keys), 5000):
            chunk = kind_keys[chunk_start : chunk_start + 5000]
            for transfer in select_transfers(session, keyed(kind, chunk)):
                found[(kind, transfer.idempotency_key)].append(transfer)
    return {key: tuple(found_transfers) for key, found_transfers in found.items()}


def _same_entry(previous: Sequence[Transfer], fingerprint: str, leg_count: int) -> bool:
    if len(previous) != leg_count:
        return False
    return all(t.fingerprint == fingerprint for t in previous)


def _conflict(entry: EntryRequest, index: int) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {entry.idempotency_key!r} was used for different content",
        idempotency_key=entry.idempotency_key,
        kind=entry.kind.value,
        index=index,
    )


def _rows(
    entry: EntryRequest, fingerprint: str, account_by_code: dict[str, Account], now: datetime
) -> list[dict[str, Any]]:
    # A one-transfer entry (every SMS) is its own journal: the transfer id serves as both.
    ids = [uuid6.uuid7() for _ in entry.legs]
    journal_id = ids[0] if len(ids) == 1 else uuid6.uuid7()
    effective_at = entry.effective_at or now
    kind = entry.kind.value
    return [
        {
            "id": ids[leg_index],
            "journal_id": journal_id,
            "kind": kind,
            "idempotency_key": entry.idempotency_key,
            "leg": leg_index,
            "fingerprint": fingerprint,
            "debit_account_id": account_by_code[leg.debit].id,
            "credit_account_id": account_by_code[leg.credit].id,
            "amount": leg.amount,
            "currency": account_by_code[leg.debit].currency,
            "effective_at": effective_at,
            "posted_at": now,
            "description": entry.description,
            "metadata": _merge_metadata(entry.metadata, leg.metadata),
            "reverses_id": leg.reverses,
        }
        for leg_index, leg in enumerate(entry.legs)
    ]


def _merge_metadata(
    entry_metadata: dict[str, Any] | None, leg_metadata: dict[str, Any] | None
) -> dict[str, Any] | None:
    if entry_metadata is None and leg_metadata is None:
        return None
    return {**(entry_metadata or {}), **(leg_metadata or {})}


# Locks every slot row of the touched accounts (a hot account's other slots too: harmless,
# and a plain IN list plans well where a list of (account, slot) pairs did not).
_LOCK_BALANCE_ROWS = (
    sa.select(balances)
    .where(balances.c.account_id.in_(sa.bindparam("accounts", expanding=True)))
    .order_by(balances.c.account_id, balances.c.slot)
    .with_for_update()
)
_ADD_TO_BALANCE = (
    sa.update(balances)
    .where(
        balances.c.account_id == sa.bindparam("row_account"),
        balances.c.slot == sa.bindparam("row_slot"),
    )
    .values(
        debits=balances.c.debits + sa.bindparam("add_debits", type_=sa.BigInteger),
        credits=balances.c.credits + sa.bindparam("add_credits", type_=sa.BigInteger),
    )
)


_ADD_TO_BALANCES_BULK = (
    "UPDATE balances SET debits = balances.debits + d.debits,"
    " credits = balances.credits + d.credits"
    " FROM unnest(%(accounts)s::bigint[], %(slots)s::smallint[], %(debits)s::bigint[],"
    " %(credits)s::bigint[]) AS d(account_id, slot, debits, credits)"
    " WHERE balances.account_id = d.account_id AND balances.slot = d.slot"
)


def _move_balances(
    session: Session, new_rows: list[dict[str, Any]], account_by_code: dict[str, Account]
) -> None:
    """Add the new transfers to the cached balances.

    Rows are updated once each, in (account, slot) order, so concurrent posts cannot deadlock.
    When a limit could break, the rows are first locked in that order and the limits checked on
    the locked values, to name the account; the named CHECKs on `balances` remain the
    database's own guarantee either way.
    A hot account takes one random slot for this whole call.
    """
    account_by_id = {account.id: account for account in account_by_code.values()}
    slot_of = {
        account.id: random.randrange(HOT_SLOTS) if account.hot else 0
        for account in account_by_id.values()
    }
    deltas: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for new in new_rows:
        debit_id, credit_id = new["debit_account_id"], new["credit_account_id"]
        deltas[(debit_id, slot_of[debit_id])][0] += new["amount"]
        deltas[(credit_id, slot_of[credit_id])][1] += new["amount"]
    if not deltas:
        return
    connection = session.connection()
    # Only a row whose limit this posting could break needs reading first (to name the account);
    # usage only debits `unbilled`, whose limit is on credits, so ingestion skips the read.
    at_risk = any(
        (account_by_id[a].debits_must_not_exceed_credits and d > 0)
        or (account_by_id[a].credits_must_not_exceed_debits and c > 0)
        for (a, _slot), (d, c) in deltas.items()
    )
    ordered = sorted({account for account, _slot in deltas})
    locked = (
        row
        for start in range(0, len(ordered) if at_risk else 0, 1000)  # bounded IN lists
        for row in connection.execute(
            _LOCK_BALANCE_ROWS, {"accounts": ordered[start : start + 1000]}
        )
        if (row.account_id, row.slot) in deltas
    )
    for row in locked:
        debit_delta, credit_delta = deltas[(row.account_id, row.slot)]
        debits, credits = row.debits + debit_delta, row.credits + credit_delta
        code = account_by_id[row.account_id].code
        if row.debits_must_not_exceed_credits and debits > credits:
            raise BalanceLimitExceeded(
                f"debits would exceed credits on {code}", account=code, shortfall=debits - credits
            )
        if row.credits_must_not_exceed_debits and credits > debits:
            raise BalanceLimitExceeded(
                f"credits would exceed debits on {code}", account=code, shortfall=credits - debits
            )
    ordered_deltas = sorted(deltas.items())
    if at_risk and connection.dialect.name == "postgresql" and len(deltas) >= BULK_MIN_ROWS:
        # Every row is locked already (in order, above): one statement moves them all.
        connection.exec_driver_sql(
            _ADD_TO_BALANCES_BULK,
            {
                "accounts": array_text(a for (a, _), _ in ordered_deltas),
                "slots": array_text(s for (_, s), _ in ordered_deltas),
                "debits": array_text(d for _, (d, _) in ordered_deltas),
                "credits": array_text(c for _, (_, c) in ordered_deltas),
            },
        )
        return
    connection.execute(
        _ADD_TO_BALANCE,
        [
            {"row_account": a, "row_slot": s, "add_debits": d, "add_credits": c}
            for (a, s), (d, c) in ordered_deltas
        ],
    )


def transfer_from(values: Mapping[Any, Any], debit_code: str, credit_code: str) -> Transfer:
    """A `Transfer` from a transfers row (or the dict it was inserted from) and its codes."""
    return Transfer(
        id=values["id"],
        journal_id=values["journal_id"],
        kind=Kind(values["kind"]),
        idempotency_key=values["idempotency_key"],
        leg=values["leg"],
        fingerprint=values["fingerprint"],
        debit_account=debit_code,
        credit_account=credit_code,
        amount=values["amount"],
        currency=values["currency"],
        effective_at=values["effective_at"],
        posted_at=values["posted_at"],
        description=values["description"],
        metadata=values["metadata"],
        reverses_id=values["reverses_id"],
    )
