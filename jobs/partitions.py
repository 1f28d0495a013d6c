"""The partitions job: the months ahead get their partitions before their first SMS
(infra/partitions.py). Daily under the scheduler (and at once when it registers), on every tick
in the embedded mode, where it costs a few catalogue lookups; on SQLite it does nothing."""

from __future__ import annotations

import logging

from infra.metrics import timed_job
from infra.partitions import PartitionState, ensure_partitions
from jobs.context import current
from ledger.db import run_in_transaction

log = logging.getLogger(__name__)


def maintain_partitions() -> list[PartitionState]:
    """Every month partition's state after the run (none on SQLite)."""
    context = current()
    with timed_job("maintain_partitions"):
        states = run_in_transaction(
            context.sessions, lambda session: ensure_partitions(session, context.clock())
        )
    for state in states:
        if state.state == "created":
            log.info("Partition created", extra={"partition": state.partition})
        elif state.state == "rows_in_default":
            log.warning(
                "A month's rows sit in the default partition: it keeps them",
                extra={"partition": state.partition, "table": state.table},
            )
    return states
