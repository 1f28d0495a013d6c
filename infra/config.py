"""Configuration from the environment, read only by composition roots (app factory, CLI,
worker). Nothing below them reads the environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from billing.settings import BillingDefaults

DEFAULT_DATABASE_URL = f"sqlite:///{Path('var') / 'smsledger.db'}"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r}: expected true or false")


def _integers(env: Mapping[str, str], name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(piece) for piece in raw.split(","))
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected comma-separated integers") from None
    if any(value < 0 for value in values):
        raise ValueError(f"{name}={raw!r}: expected non-negative integers")
    return values


@dataclass(frozen=True)
class Config:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    # A streaming replica for reports (infra.replica), used while it lags at most this much.
    database_replica_url: str | None = None
    database_replica_max_lag_s: float = 5.0
    # Archives of closed months (docs/archives.md): where they go; whether the daily job
    # archives by itself, keeping this many months in the database.
    archive_dir: str | None = None
    archive_scheduled: bool = False
    retention_months: int = 12
    cron_secret: str | None = None
    user_token_secret: str | None = None
    sippy_url: str | None = None
    sippy_username: str | None = None
    sippy_password: str | None = None
    sippy_timeout_s: float = 10.0
    # Sippy faults no retry can cure (sippy-api.md "Faults"; docs/decisions/0012).
    sippy_terminal_faults: tuple[int, ...] = (400, 402, 403, 409, 423)
    # How long an unanswered charge may still be in flight at Sippy before it is looked up.
    sippy_in_flight_grace_s: int = 120
    # SPEC §6: a declined charge is retried after each of these, then left for an admin.
    retry_backoff_minutes: tuple[int, ...] = (60, 360, 1440)
    webhook_signing_secret: str | None = None
    # The pages (docs/decisions/0020): the key that signs their cookie (else one is generated
    # and kept under ./var/), and the origins that may frame the billing widget.
    secret_key: str | None = None
    widget_frame_ancestors: tuple[str, ...] = ()
    # Behind a TLS-terminating proxy: mark the cookies `Secure` always, and/or believe its
    # X-Forwarded-Proto/-Host (only when the proxy is the sole way in).
    secure_cookies: bool = False
    trust_proxy_headers: bool = False
    log_format: str = "json"
    billing: BillingDefaults = field(default_factory=BillingDefaults)

    @classmethod
    def from_environ(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read the configuration of SPEC §11 (a `.env` file is loaded by the caller)."""
        env = os.environ if env is None else env
        log_format = env.get("LOG_FORMAT", "json").strip().lower()
        if log_format not in {"json", "text"}:
            raise ValueError(f"LOG_FORMAT={log_format!r}: expected json or text")
        config = cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=env.get("REDIS_URL") or None,
            database_replica_url=env.get("DATABASE_REPLICA_URL") or None,
            database_replica_max_lag_s=_max_lag(env),
            archive_dir=env.get("ARCHIVE_DIR") or None,
            archive_scheduled=_flag(env, "SMS_BILLING_ARCHIVE_SCHEDULED", False),
            retention_months=_retention_months(env),
            cron_secret=env.get("CRON_SECRET") or None,
            user_token_secret=env.get("USER_TOKEN_SECRET") or None,
            sippy_url=env.get("SIPPY_URL") or None,
            sippy_username=env.get("SIPPY_USERNAME") or None,
            sippy_password=env.get("SIPPY_PASSWORD") or None,
            sippy_timeout_s=float(env.get("SIPPY_TIMEOUT_S") or 10.0),
            sippy_terminal_faults=_integers(
                env, "SIPPY_TERMINAL_FAULT_CODES", cls.sippy_terminal_faults
            ),
            sippy_in_flight_grace_s=_integers(
                env, "SIPPY_IN_FLIGHT_GRACE_S", (cls.sippy_in_flight_grace_s,)
            )[0],
            retry_backoff_minutes=_integers(
                env, "SMS_BILLING_RETRY_BACKOFF_MINUTES", cls.retry_backoff_minutes
            ),
            webhook_signing_secret=env.get("WEBHOOK_SIGNING_SECRET") or None,
            secret_key=env.get("SECRET_KEY") or None,
            widget_frame_ancestors=tuple((env.get("WIDGET_FRAME_ANCESTORS") or "").split()),
            secure_cookies=_flag(env, "SESSION_COOKIE_SECURE", False),
            trust_proxy_headers=_flag(env, "TRUST_PROXY_HEADERS", False),
            log_format=log_format,
            billing=BillingDefaults(
                frequency=env.get("SMS_BILLING_DEFAULT_FREQUENCY") or "daily",
                currency=env.get("SMS_BILLING_DEFAULT_CURRENCY") or "USD",
                auto_process=_flag(env, "SMS_BILLING_AUTO_PROCESS", True),
                notifications_enabled=_flag(env, "SMS_BILLING_NOTIFICATION_ENABLED", True),
                auto_create_customers=_flag(env, "SMS_BILLING_AUTO_CREATE_CUSTOMERS", True),
                hold_ttl_seconds=_hold_ttl(env),
            ),
        )
        _check_grace(config)
        if config.database_replica_url and not config.database_replica_url.startswith("postgresql"):
            raise ValueError("DATABASE_REPLICA_URL: a replica is a PostgreSQL streaming replica")
        if config.archive_scheduled and not config.archive_dir:
            raise ValueError("SMS_BILLING_ARCHIVE_SCHEDULED=true needs ARCHIVE_DIR")
        return config


def _max_lag(env: Mapping[str, str]) -> float:
    raw = env.get("DATABASE_REPLICA_MAX_LAG_S") or "5"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise ValueError(
            f"DATABASE_REPLICA_MAX_LAG_S={raw!r}: expected seconds, above 0, at most 3600"
        )
    return value


MAX_HOLD_TTL_S = 7 * 24 * 3600


def _bounded(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, unit: str
) -> int:
    """One integer setting from `low` to `high` (`unit` names it in the refusal)."""
    values = _integers(env, name, (default,))
    if len(values) != 1 or not low <= values[0] <= high:
        raise ValueError(f"{name}={env.get(name)!r}: expected {low} to {high} {unit}")
    return values[0]


def _hold_ttl(env: Mapping[str, str]) -> int:
    """`SMS_BILLING_HOLD_TTL_S`: 1 s to a week (a hold that never expires would keep credit
    from a user whose send failed silently)."""
    default = BillingDefaults.hold_ttl_seconds
    return _bounded(env, "SMS_BILLING_HOLD_TTL_S", default, 1, MAX_HOLD_TTL_S, "seconds")


MAX_RETENTION_MONTHS = 1200


def _retention_months(env: Mapping[str, str]) -> int:
    """`SMS_BILLING_RETENTION_MONTHS`: 1 to 1200 (a month still being billed is never
    archived, whatever this says: infra/archive_plan.py)."""
    default, high = Config.retention_months, MAX_RETENTION_MONTHS
    return _bounded(env, "SMS_BILLING_RETENTION_MONTHS", default, 1, high, "months")


def minimum_grace_s(timeout_s: float) -> int:
    """The shortest in-flight grace accepted for a Sippy timeout: a request we gave up on may
    still be executing at the switch for a while, so the grace must be well above the timeout
    (decision 0013): four timeouts, and never under a minute."""
    return max(60, math.ceil(4 * timeout_s))


def _check_grace(config: Config) -> None:
    floor = minimum_grace_s(config.sippy_timeout_s)
    if config.sippy_in_flight_grace_s < floor:
        raise ValueError(
            f"SIPPY_IN_FLIGHT_GRACE_S={config.sippy_in_flight_grace_s} is too short for"
            f" SIPPY_TIMEOUT_S={config.sippy_timeout_s:g}: use at least {floor} (4 timeouts, 60 s"
            " minimum), or a charge still running at Sippy could be charged twice"
        )
