"""Log lines are one JSON object each by default, or text when asked."""

from __future__ import annotations

import json
import logging

import pytest

from infra.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_message_and_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    logging.getLogger("smsledger.test").info("Processing SMS billing", extra={"invoice_id": "i-1"})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["message"] == "Processing SMS billing"
    assert event["invoice_id"] == "i-1" and event["level"] == "INFO"
    assert event["logger"] == "smsledger.test" and "time" in event


def test_text_lines_for_humans(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text")
    logging.getLogger("smsledger.test").warning("hello")
    assert "WARNING smsledger.test hello" in capsys.readouterr().err


def test_a_configuration_warning_is_logged_once_per_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from infra.logs import warn_once

    logger = logging.getLogger("smsledger.test")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            warn_once(logger, "SOMETHING is not set (test)")
    assert [r.getMessage() for r in caplog.records] == ["SOMETHING is not set (test)"]
