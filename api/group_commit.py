"""Group commit for usage posts: concurrent requests in one process share one transaction.

Each SMS posted alone costs a transaction (begin, look-ups, insert, balance updates, commit);
sixteen clients posting at once pay that sixteen times. Here a request hands its validated
events to the process's committer thread and waits; the committer takes everything waiting
(up to `MAX_GROUP_EVENTS`) and ingests it as one batch. A request that would fail (an
idempotency conflict, an unpriceable destination, an unknown user) is answered with its own
error and taken out, and the rest of the group is retried without it, so every request gets
exactly the answer it would have had alone, and a refused request still leaves no trace.

When the database fails the group (an outage: `DatabaseUnavailable`, after the unit of work's
one safe retry), every waiting request hears that error and answers 503; the committer thread
lives on and takes the next group, which reconnects.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from billing.errors import InvalidUsage, UnknownCustomer
from billing.usage.ingestion import UsageEvent, UsageResult
from ledger.errors import DatabaseUnavailable, IdempotencyConflict, LedgerError

log = logging.getLogger(__name__)

MAX_GROUP_EVENTS = 2_000
COMMIT_THREADS = 1
"""Committer threads per process (measured: 2 or 3 gave no more throughput than 1)."""
WAIT_SECONDS = 60

Ingest = Callable[[Sequence[UsageEvent]], list[UsageResult]]


@dataclass
class _Request:
    events: Sequence[UsageEvent]
    future: Future[list[UsageResult]] = field(default_factory=Future)


class GroupCommitter:
    """One per process (started lazily, so a forked gunicorn worker gets its own thread)."""

    def __init__(self, ingest: Ingest, threads: int = COMMIT_THREADS) -> None:
        self._ingest = ingest
        self._threads = threads
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, events: Sequence[UsageEvent]) -> list[UsageResult]:
        """Ingest `events` as part of a group; raises what ingesting them alone would.

        Raises: DatabaseUnavailable (`may_have_committed`) when no answer came in
        `WAIT_SECONDS`: the group may still commit, so only the client's retry with the same
        `message_id` can tell.
        """
        self._ensure_thread()
        request = _Request(events)
        self._queue.put(request)
        try:
            return request.future.result(timeout=WAIT_SECONDS)
        except TimeoutError:
            raise DatabaseUnavailable(
                "The usage was not committed in time and may still be applied. Retry it with "
                "the same message_id.",
                may_have_committed=True,
                cause=f"no answer from the group committer in {WAIT_SECONDS} s",
            ) from None

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                for number in range(self._threads):
                    threading.Thread(
                        target=self._run, name=f"usage-group-commit-{number}", daemon=True
                    ).start()

    def _run(self) -> None:
        while True:
            group = self._next_group()
            try:
                self._commit(group)
            except Exception as error:  # the thread must outlive any group, or later posts hang
                log.exception("usage group commit failed")
                _fail(group, error)

    def _next_group(self) -> list[_Request]:
        """Wait for one request, then take whatever else is waiting, up to the group size."""
        group = [self._queue.get()]
        size = len(group[0].events)
        while size < MAX_GROUP_EVENTS:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            group.append(request)
            size += len(request.events)
        return group

    def _commit(self, group: list[_Request]) -> None:
        while group:
            events = [event for request in group for event in request.events]
            try:
                results = self._ingest(events)
            except (InvalidUsage, UnknownCustomer, IdempotencyConflict) as error:
                failing = _requests_named(group, error)
                if not failing or len(group) == 1:
                    _fail(group, error)
                    return
                for request in failing:
                    _fail([request], _rebased(error, group, request))
                group = [r for r in group if r not in failing]
                continue
            except BaseException as error:  # the engine failed: every request hears it
                _fail(group, error)
                return
            offset = 0
            for request in group:
                request.future.set_result(results[offset : offset + len(request.events)])
                offset += len(request.events)
            return


def _fail(group: list[_Request], error: BaseException) -> None:
    for request in group:
        if not request.future.done():
            request.future.set_exception(error)


def _owner(group: list[_Request], index: int) -> tuple[_Request, int] | None:
    offset = 0
    for request in group:
        if index < offset + len(request.events):
            return request, index - offset
        offset += len(request.events)
    return None


def _indexes(error: LedgerError) -> list[int]:
    if "index" in error.details and isinstance(error.details["index"], int):
        return [error.details["index"]]
    return [e["index"] for e in error.details.get("errors", []) if isinstance(e.get("index"), int)]


def _requests_named(group: list[_Request], error: LedgerError) -> list[_Request]:
    found: list[_Request] = []
    for index in _indexes(error):
        owner = _owner(group, index)
        if owner is not None and owner[0] not in found:
            found.append(owner[0])
    return found


def _rebased(error: LedgerError, group: list[_Request], request: _Request) -> LedgerError:
    """The error as this request alone would have seen it: indexes relative to its events."""
    start = 0
    for other in group:
        if other is request:
            break
        start += len(other.events)
    details: dict[str, Any] = dict(error.details)
    if isinstance(details.get("index"), int):
        details["index"] -= start
    if "errors" in details:
        details["errors"] = [
            {**e, "index": e["index"] - start}
            for e in details["errors"]
            if isinstance(e.get("index"), int) and start <= e["index"] < start + len(request.events)
        ]
    return type(error)(error.message, **details)
