"""Billing settings (SPEC §5): global defaults plus per-user overrides.

A user's effective settings are the global ones with that user's overridden fields on top. The
global row is seeded from the `SMS_BILLING_*` environment the first time it is needed; after
that the stored row is the truth and the environment is not read again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.currency import validate_currency
from billing.errors import InvalidSettings
from billing.tables import billing_settings
from ledger.accounts import insert_ignoring_conflicts

GLOBAL_SCOPE = "*"
"""The scope of the global defaults; no user id can be `*`."""

FREQUENCIES = ("daily", "weekly", "monthly", "threshold")
MONEY_FIELDS = ("threshold_amount", "credit_limit")


@dataclass(frozen=True)
class BillingDefaults:
    """The `SMS_BILLING_*` defaults that seed the global settings on first start."""

    frequency: str = "daily"
    currency: str = "USD"
    auto_process: bool = True
    notifications_enabled: bool = True
    auto_create_customers: bool = True
    # How long a reserving pre-send check's hold stands uncaptured (billing/usage/holds.py).
    hold_ttl_seconds: int = 300


@dataclass(frozen=True, slots=True)
class Settings:
    frequency: str = "daily"
    threshold_amount: int | None = None  # micro-units
    threshold_messages: int | None = None
    currency: str = "USD"
    auto_process: bool = True
    notifications_enabled: bool = True
    notify_at_percent: int = 80
    require_manual_approval: bool = False
    block_on_pending: bool = False
    max_pending_invoices: int | None = None
    credit_limit: int | None = None  # micro-units
    webhook_url: str | None = None

    def as_values(self) -> dict[str, Any]:
        """The fields as a plain dict (a close records one per invoice: `asdict`'s deep copy
        cost 0.1 ms each)."""
        return {name: getattr(self, name) for name in FIELD_NAMES}


FIELD_NAMES = tuple(f.name for f in fields(Settings))


def defaults_from(config: BillingDefaults) -> Settings:
    return Settings(
        frequency=config.frequency,
        currency=config.currency,
        auto_process=config.auto_process,
        notifications_enabled=config.notifications_enabled,
    )


def validate(settings: Settings) -> Settings:
    """Raises: InvalidSettings naming the first field that is wrong."""
    if settings.frequency not in FREQUENCIES:
        raise InvalidSettings(
            f"frequency must be one of {', '.join(FREQUENCIES)}", field="frequency"
        )
    if settings.frequency == "threshold" and not (
        settings.threshold_amount or settings.threshold_messages
    ):
        raise InvalidSettings(
            "threshold billing needs threshold_amount or threshold_messages",
            field="threshold_amount",
        )
    for name in ("threshold_amount", "threshold_messages"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or value <= 0):
            raise InvalidSettings(f"{name} must be greater than zero", field=name)
    for name in ("credit_limit", "max_pending_invoices"):
        value = getattr(settings, name)
        if value is not None and (isinstance(value, bool) or value < 0):
            raise InvalidSettings(f"{name} cannot be negative", field=name)
    if not 1 <= settings.notify_at_percent <= 100:
        raise InvalidSettings("notify_at_percent must be 1 to 100", field="notify_at_percent")
    validate_currency(settings.currency)
    return settings


def merge(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """`base` with `overrides` on top; unknown fields are refused.

    Raises: InvalidSettings.
    """
    unknown = set(overrides) - set(FIELD_NAMES)
    if unknown:
        raise InvalidSettings(
            f"unknown settings: {', '.join(sorted(unknown))}", fields=sorted(unknown)
        )
    return replace(base, **dict(overrides))


GLOBAL_CACHE_SECONDS = 5.0
_global_cache: dict[str, tuple[float, Settings]] = {}


def global_settings(session: Session, defaults: BillingDefaults, now: datetime) -> Settings:
    """The stored global settings, seeded from the environment's defaults on first use.

    Read on every pre-send check, so held per process for a few seconds; a change made through
    this process is seen at once, one made elsewhere within `GLOBAL_CACHE_SECONDS`.
    """
    key = str(session.get_bind().engine.url)
    cached = _global_cache.get(key)
    if cached and time.monotonic() - cached[0] < GLOBAL_CACHE_SECONDS:
        return cached[1]
    found = effective_settings(session, [], defaults, now)[GLOBAL_SCOPE]
    _global_cache[key] = (time.monotonic(), found)
    return found


_READ = sa.select(billing_settings.c.scope, billing_settings.c["values"]).where(
    billing_settings.c.scope.in_(sa.bindparam("scopes", expanding=True))
)


def effective_settings(
    session: Session, user_ids: Iterable[str], defaults: BillingDefaults, now: datetime
) -> dict[str, Settings]:
    """Effective settings for each user (and the global ones under `GLOBAL_SCOPE`), one query."""
    wanted = {GLOBAL_SCOPE, *user_ids}
    rows = session.connection().execute(_READ, {"scopes": sorted(wanted)}).all()
    stored = {row[0]: row[1] for row in rows}
    if GLOBAL_SCOPE not in stored:
        seeded = defaults_from(defaults).as_values()
        session.execute(
            insert_ignoring_conflicts(session, billing_settings).on_conflict_do_nothing(
                index_elements=["scope"]
            ),
            {"scope": GLOBAL_SCOPE, "values": seeded, "updated_at": now},
        )
        stored[GLOBAL_SCOPE] = session.execute(
            sa.select(billing_settings.c["values"]).where(billing_settings.c.scope == GLOBAL_SCOPE)
        ).scalar_one()
    base = merge(Settings(), stored[GLOBAL_SCOPE])
    result = {GLOBAL_SCOPE: base}
    for user_id in wanted - {GLOBAL_SCOPE}:
        result[user_id] = merge(base, stored.get(user_id, {}))
    return result


def put_settings(
    session: Session,
    scope: str,
    changes: Mapping[str, Any],
    defaults: BillingDefaults,
    now: datetime,
) -> Settings:
    """Set fields at `scope` (GLOBAL_SCOPE or a user id) and return the resulting effective
    settings, validated as a whole: a user's threshold frequency needs a threshold somewhere.

    Raises: InvalidSettings.
    """
    current = effective_settings(session, [] if scope == GLOBAL_SCOPE else [scope], defaults, now)
    stored = session.execute(
        sa.select(billing_settings.c["values"]).where(billing_settings.c.scope == scope)
    ).scalar_one_or_none()
    values = {**(stored or {}), **dict(changes)}
    base = Settings() if scope == GLOBAL_SCOPE else current[GLOBAL_SCOPE]
    effective = validate(merge(base, values))
    _global_cache.clear()
    if stored is None:
        session.execute(
            sa.insert(billing_settings).values(scope=scope, values=values, updated_at=now)
        )
    else:
        session.execute(
            sa.update(billing_settings)
            .where(billing_settings.c.scope == scope)
            .values({"values": values, "updated_at": now})
        )
    return effective


def user_overrides(session: Session, user_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Stored overrides by user (one user, or every user that has any)."""
    query = sa.select(billing_settings.c.scope, billing_settings.c["values"]).where(
        billing_settings.c.scope != GLOBAL_SCOPE
    )
    if user_id is not None:
        query = query.where(billing_settings.c.scope == user_id)
    rows = session.execute(query.order_by(billing_settings.c.scope)).all()
    return {row[0]: dict(row[1]) for row in rows}


def delete_overrides(session: Session, user_id: str) -> bool:
    """Drop a user's overrides; False when there were none."""
    deleted = session.execute(
        sa.delete(billing_settings)
        .where(billing_settings.c.scope == user_id)
        .returning(billing_settings.c.scope)
    ).all()
    return bool(deleted)
