"""Configuration from the environment (SPEC §11): defaults, flags, refusals."""

from __future__ import annotations

import pytest

from infra.config import DEFAULT_DATABASE_URL, Config


def test_an_empty_environment_gives_the_embedded_defaults() -> None:
    config = Config.from_environ({})
    assert config.database_url == DEFAULT_DATABASE_URL == "sqlite:///var/smsledger.db"
    assert config.redis_url is None
    assert config.billing.frequency == "daily" and config.billing.currency == "USD"
    assert config.billing.auto_process and config.billing.notifications_enabled
    assert config.sippy_timeout_s == 10.0 and config.log_format == "json"


def test_the_environment_overrides_each_default() -> None:
    config = Config.from_environ(
        {
            "DATABASE_URL": "postgresql://x/y",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "SMS_BILLING_DEFAULT_FREQUENCY": "weekly",
            "SMS_BILLING_DEFAULT_CURRENCY": "EUR",
            "SMS_BILLING_AUTO_PROCESS": "false",
            "SMS_BILLING_NOTIFICATION_ENABLED": "0",
            "SMS_BILLING_AUTO_CREATE_CUSTOMERS": "no",
            "SIPPY_TIMEOUT_S": "2.5",
            "LOG_FORMAT": "TEXT",
        }
    )
    assert config.database_url == "postgresql://x/y"
    assert config.billing.frequency == "weekly" and config.billing.currency == "EUR"
    assert not config.billing.auto_process
    assert not config.billing.notifications_enabled
    assert not config.billing.auto_create_customers
    assert config.sippy_timeout_s == 2.5 and config.log_format == "text"


@pytest.mark.parametrize("env", [{"SMS_BILLING_AUTO_PROCESS": "maybe"}, {"LOG_FORMAT": "xml"}])
def test_unreadable_settings_are_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Config.from_environ(env)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("SMS_BILLING_AUTO_PROCESS", "maybe", "expected true or false"),
        ("SMS_BILLING_RETRY_BACKOFF_MINUTES", "60,soon", "comma-separated integers"),
        ("SMS_BILLING_RETRY_BACKOFF_MINUTES", "60,-5", "non-negative integers"),
        ("SIPPY_TERMINAL_FAULT_CODES", "402;403", "comma-separated integers"),
    ],
)
def test_a_malformed_setting_is_refused_by_name(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        Config.from_environ({name: value})
    assert name in str(refused.value)


def test_lists_of_integers_are_read_in_order() -> None:
    config = Config.from_environ({"SMS_BILLING_RETRY_BACKOFF_MINUTES": " 5,10,20 "})
    assert config.retry_backoff_minutes == (5, 10, 20)


def test_an_in_flight_grace_not_well_above_the_sippy_timeout_is_refused() -> None:
    """The measured double charge: timeout 3 s, grace 15 s, a debit applied 90 s late."""
    with pytest.raises(ValueError, match="use at least 60") as refused:
        Config.from_environ({"SIPPY_TIMEOUT_S": "3", "SIPPY_IN_FLIGHT_GRACE_S": "15"})
    assert "SIPPY_IN_FLIGHT_GRACE_S=15" in str(refused.value)
    with pytest.raises(ValueError, match="use at least 120"):
        Config.from_environ({"SIPPY_TIMEOUT_S": "30", "SIPPY_IN_FLIGHT_GRACE_S": "90"})
    assert Config.from_environ({"SIPPY_TIMEOUT_S": "30", "SIPPY_IN_FLIGHT_GRACE_S": "120"})
