"""Structured logs, one event per line (SPEC §12): JSON by default, text for humans.

Configured once by a composition root (the app built from the environment, the CLI, a worker);
everything else just uses `logging.getLogger(__name__)` and passes fields with `extra=`.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every migration context at INFO ("Context impl …", "Will assume …"):
    # noise in every command's output; its warnings and errors still show.
    logging.getLogger("alembic").setLevel(logging.WARNING)


_warned: set[str] = set()


def warn_once(logger: logging.Logger, message: str) -> None:
    """A configuration warning a sweep would otherwise repeat every few seconds: logged once
    per process."""
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
