"""Loading rates: CSV rate sheets (`smsledger rates import`) and the admin endpoints.

A sheet is validated whole before anything is written; every bad line is reported with its line
number. Rates are versions: (plan, prefix, currency, valid_from) identifies one, re-importing an
identical rate changes nothing, and a different price for an existing version is refused (usage
already priced with it must stay explainable). A new price is a new `valid_from`.

CSV columns (header row required; order free):
    prefix      E.164 digits without "+", 1-15 (required)
    price       price per segment, decimal, at most 6 decimals, > 0 (required)
    currency    ISO 4217 (required)
    country     ISO 3166 alpha-2 (optional)
    valid_from  RFC 3339 instant (optional; default: always)
    valid_to    RFC 3339 instant, exclusive (optional; default: open)
    plan        rate plan name (optional; default: "default")
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.currency import validate_currency
from billing.errors import InvalidRate
from billing.instants import parse_instant
from billing.paging import Page, fetch_page
from billing.tables import rates
from billing.usage.rating import DEFAULT_PLAN, RateVersion, in_force_at, rate_cache
from ledger.accounts import insert_ignoring_conflicts
from ledger.errors import LedgerError
from ledger.money import parse_micros

ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)
PREFIX = re.compile(r"^[1-9][0-9]{0,14}$")
PLAN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
COLUMNS = ("prefix", "price", "currency", "country", "valid_from", "valid_to", "plan")
REQUIRED = ("prefix", "price", "currency")


@dataclass(frozen=True, slots=True)
class ImportSummary:
    added: int
    unchanged: int


def _instant(text: str, name: str) -> datetime:
    moment = parse_instant(text)
    if moment is None:
        raise ValueError(f"{name} must be an RFC 3339 instant with a time zone offset")
    return moment


def parse_rate(values: Mapping[str, Any]) -> RateVersion:
    """One rate from text fields (a CSV row or a JSON object).

    Raises: ValueError naming the field.
    """
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0]}")
    for name in REQUIRED:
        if values.get(name) in (None, ""):
            raise ValueError(f"{name} is required")
    prefix = str(values["prefix"]).removeprefix("+")  # a sheet's cells arrive stripped
    if not PREFIX.match(prefix):
        raise ValueError("prefix must be 1-15 digits of an E.164 number")
    try:
        price = parse_micros(values["price"])
        currency = validate_currency(str(values["currency"]).strip())
    except LedgerError as error:
        raise ValueError(error.message) from None
    if price <= 0:
        raise ValueError("price must be greater than zero")
    country = (values.get("country") or "").strip().upper() or None
    if country is not None and phonenumbers.country_code_for_region(country) == 0:
        raise ValueError(f"country {country} is not an ISO 3166 region")
    plan = (values.get("plan") or "").strip() or DEFAULT_PLAN
    if not PLAN.match(plan):
        raise ValueError("plan must be 1-64 letters, digits, '.', '_' or '-'")
    valid_from = (
        _instant(values["valid_from"], "valid_from") if values.get("valid_from") else ALWAYS
    )
    valid_to = _instant(values["valid_to"], "valid_to") if values.get("valid_to") else None
    if valid_to is not None and valid_to <= valid_from:
        raise ValueError("valid_to must be after valid_from")
    return RateVersion(plan, prefix, country, currency, price, valid_from, valid_to)


def parse_rates(
    rows: Iterable[Mapping[str, str | None]], position: str, first: int, refusal: str
) -> list[RateVersion]:
    """Every row parsed by `parse_rate`, or none: each bad row is reported with its `position`
    (a sheet's "line", a request's "index", counted from `first`).

    Raises: InvalidRate listing every bad row, "<count> <refusal>".
    """
    parsed, errors = [], []
    for number, row in enumerate(rows, start=first):
        try:
            parsed.append(parse_rate(row))
        except ValueError as error:
            errors.append({position: number, "message": str(error)})
    if errors:
        raise InvalidRate(f"{len(errors)} {refusal}", errors=errors)
    return parsed


def parse_sheet(text: str) -> list[RateVersion]:
    """Every rate of a CSV sheet, or InvalidRate listing every bad line.

    Raises: InvalidRate.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise InvalidRate(f"the rate sheet lacks columns: {', '.join(missing)}", columns=header)
    cleaned = (
        {(k or "").strip(): (v or "").strip() for k, v in row.items() if k} for row in reader
    )
    parsed = parse_rates(cleaned, "line", 2, "bad line(s) in the rate sheet")
    if not parsed:
        raise InvalidRate("the rate sheet has no rates")
    return parsed


def add_rates(session: Session, inputs: Iterable[RateVersion], now: datetime) -> ImportSummary:
    """Store new rate versions; identical re-imports are no-ops.

    Raises: InvalidRate when a version exists with another price or window.
    """
    wanted = list(inputs)
    if not wanted:
        return ImportSummary(0, 0)
    keys = {(r.plan, r.prefix, r.currency, r.valid_from): r for r in wanted}
    existing = {
        (row.plan, row.prefix, row.currency, row.valid_from): row
        for row in session.execute(
            sa.select(rates).where(
                rates.c.plan.in_({k[0] for k in keys}), rates.c.prefix.in_({k[1] for k in keys})
            )
        )
    }
    conflicts = [
        f"{k[0]}/{k[1]}/{k[2]} from {k[3].isoformat()}"
        for k, r in keys.items()
        if k in existing
        and (existing[k].price_micros, existing[k].valid_to, existing[k].country)
        != (r.price_micros, r.valid_to, r.country)
    ]
    if conflicts:
        raise InvalidRate(
            "a rate version exists with another price or window; give the new price a new"
            " valid_from",
            conflicts=conflicts[:20],
        )
    new = [r for k, r in keys.items() if k not in existing]
    if new:
        session.execute(
            insert_ignoring_conflicts(session, rates).on_conflict_do_nothing(
                index_elements=["plan", "prefix", "currency", "valid_from"]
            ),
            [
                {
                    "plan": r.plan,
                    "prefix": r.prefix,
                    "country": r.country,
                    "currency": r.currency,
                    "price_micros": r.price_micros,
                    "valid_from": r.valid_from,
                    "valid_to": r.valid_to,
                    "created_at": now,
                }
                for r in new
            ],
        )
        rate_cache.invalidate()
    return ImportSummary(len(new), len(wanted) - len(new))


def list_rates(
    session: Session,
    *,
    plan: str | None = None,
    prefix: str | None = None,
    currency: str | None = None,
    active_at: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Rate versions by plan, prefix and currency; with `active_at`, only the version in force
    then (the rule rating prices by)."""
    filters: list[sa.ColumnElement[bool]] = []
    for name, value in (("plan", plan), ("prefix", prefix), ("currency", currency)):
        if value is not None:
            filters.append(rates.c[name] == value)
    if active_at is not None:
        filters.append(in_force_at(active_at))
    order = [rates.c.plan, rates.c.prefix, rates.c.currency, rates.c.valid_from]
    return fetch_page(session, rates, filters, order, limit, offset)
