"""Rating an SMS (SPEC §4): destination, segments, and the price from the rate table.

Destinations are parsed and validated by `phonenumbers`; the country comes from the number.
Segments are counted from `text_length` and `encoding` by the GSM 03.38 / UCS-2 part sizes (the
text itself never reaches us, so no text-based counting library applies). The rate table is read
whole into memory, per plan and currency, and matched by longest prefix; a customer's own plan is
searched before the default plan.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.tables import rates

DEFAULT_PLAN = "default"
MAX_PREFIX_DIGITS = 15

# (single-part limit, per-part limit) in characters of the encoding.
SEGMENT_SIZES = {"gsm7": (160, 153), "ucs2": (70, 67)}


def count_segments(text_length: int, encoding: str) -> int:
    """Parts needed for a message of `text_length` characters (GSM-7 septets or UCS-2 units).

    GSM-7 extension characters (e.g. `€`, `[`) take two septets: callers pass the length in
    septets. An empty message still travels as one part.
    """
    single, per_part = SEGMENT_SIZES[encoding]
    if text_length <= single:
        return 1
    return math.ceil(text_length / per_part)


@dataclass(frozen=True, slots=True)
class Destination:
    e164: str
    country: str | None
    calling_code: str

    @property
    def digits(self) -> str:
        return self.e164[1:]


@lru_cache(maxsize=200_000)
def parse_destination(text: str) -> Destination | None:
    """The E.164 form and ISO country of a valid international number, else None."""
    if not text.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Destination(e164, phonenumbers.region_code_for_number(number), str(number.country_code))


@dataclass(frozen=True, slots=True)
class RateVersion:
    """What a rate says: a price per segment for a prefix, in force over a window."""

    plan: str
    prefix: str
    country: str | None
    currency: str
    price_micros: int
    valid_from: datetime
    valid_to: datetime | None

    def valid_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_to is None or moment < self.valid_to)


@dataclass(frozen=True, slots=True)
class Rate(RateVersion):
    """A stored rate version; its id is recorded on every usage transfer it priced."""

    id: int


def in_force_at(moment: datetime) -> sa.ColumnElement[bool]:
    """SQL for the rule `RateTable.find` applies in Python: a rate version is in force at
    `moment` when its window holds it and no newer version of the same plan, prefix and
    currency is also in force then (the newest version in force wins)."""
    newer = rates.alias("newer")
    return sa.and_(
        rates.c.valid_from <= moment,
        sa.or_(rates.c.valid_to.is_(None), rates.c.valid_to > moment),
        ~sa.exists().where(
            newer.c.plan == rates.c.plan,
            newer.c.prefix == rates.c.prefix,
            newer.c.currency == rates.c.currency,
            newer.c.valid_from > rates.c.valid_from,
            newer.c.valid_from <= moment,
            sa.or_(newer.c.valid_to.is_(None), newer.c.valid_to > moment),
        ),
    )


class RateTable:
    """All rates, indexed by (plan, currency) then prefix, newest window first."""

    def __init__(self, all_rates: list[Rate]) -> None:
        self._index: dict[tuple[str, str], dict[str, list[Rate]]] = defaultdict(dict)
        for rate in sorted(all_rates, key=lambda r: r.valid_from, reverse=True):
            self._index[(rate.plan, rate.currency)].setdefault(rate.prefix, []).append(rate)

    def find(
        self, digits: str, currency: str, at: datetime, plan: str | None = None
    ) -> Rate | None:
        """The rate with the longest prefix of `digits` valid at `at`, from `plan` first and
        then the default plan; `prefix`-only lookups pass the prefix as `digits`."""
        for searched in (plan, DEFAULT_PLAN) if plan and plan != DEFAULT_PLAN else (DEFAULT_PLAN,):
            by_prefix = self._index.get((searched, currency))
            if not by_prefix:
                continue
            for length in range(min(len(digits), MAX_PREFIX_DIGITS), 0, -1):
                for rate in by_prefix.get(digits[:length], ()):
                    if rate.valid_at(at):
                        return rate
        return None


def load_rate_table(session: Session) -> RateTable:
    rows = session.execute(sa.select(rates))
    return RateTable(
        [
            Rate(
                plan=r.plan,
                prefix=r.prefix,
                country=r.country,
                currency=r.currency,
                price_micros=r.price_micros,
                valid_from=r.valid_from,
                valid_to=r.valid_to,
                id=r.id,
            )
            for r in rows
        ]
    )


class RateCache:
    """The rate table held in memory for `ttl` seconds per database.

    Rates change rarely and every SMS needs one; a change made through this process is seen at
    once (`invalidate`), one made by another process within `ttl` seconds.
    """

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._tables: dict[str, tuple[float, RateTable]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session) -> RateTable:
        key = self._key(session)
        with self._lock:
            cached = self._tables.get(key)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        table = load_rate_table(session)
        with self._lock:
            self._tables[key] = (time.monotonic(), table)
        return table

    def find(
        self, session: Session, digits: str, currency: str, at: datetime, plan: str | None = None
    ) -> Rate | None:
        """`RateTable.find` on the cached table; a miss reloads the table first (at most every
        `MISS_RELOAD_S` seconds), so rates imported by another process a moment ago price a
        new prefix at once instead of refusing it as unpriceable for up to `ttl` seconds."""
        rate = self.get(session).find(digits, currency, at, plan)
        if rate is None and self._age(session) >= MISS_RELOAD_S:
            self._drop(session)
            rate = self.get(session).find(digits, currency, at, plan)
        return rate

    def invalidate(self) -> None:
        with self._lock:
            self._tables.clear()

    def _key(self, session: Session) -> str:
        return str(session.get_bind().engine.url) if session.get_bind() is not None else ""

    def _age(self, session: Session) -> float:
        with self._lock:
            cached = self._tables.get(self._key(session))
        return time.monotonic() - cached[0] if cached else float("inf")

    def _drop(self, session: Session) -> None:
        with self._lock:
            self._tables.pop(self._key(session), None)


MISS_RELOAD_S = 0.5
"""A flood of unpriceable events reloads the rate table at most this often."""


rate_cache = RateCache()
