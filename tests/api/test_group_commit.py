"""Concurrent single posts share transactions (group commit), yet every request gets exactly
the answer it would have had alone, and refused ones leave no trace."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from ledger.balances import account_balance
from ledger.checks import check_ledger
from ledger.db import unit_of_work
from ledger.tables import transfers
from tests.client import ApiClient
from tests.conftest import NOW
from tests.scenarios import load_rates

pytestmark = pytest.mark.postgres


def test_sixteen_clients_posting_singles_get_their_own_answers(api: ApiClient) -> None:
    sessions = api.sessions
    load_rates(sessions, NOW)
    barrier = threading.Barrier(16)

    def client(index: int) -> list[tuple[str, int, str]]:
        http = api.as_role("service")  # a test client of its own
        barrier.wait()
        answers = []
        for n in range(25):
            message_id = f"m-{(index * 25 + n) % 300}"  # clients overlap: replays
            segments = 1
            destination = "+447400123456"
            if n % 10 == 3:
                segments = 2 + index  # a replay with other content: 409 if it lost the race
            if n % 10 == 7:
                destination = "+61412345678"  # unpriceable: 422
                message_id = f"bad-{index}-{n}"
            body = {
                "message_id": message_id,
                "user_id": f"u{index % 4}",
                "destination": destination,
                "segments": segments,
            }
            response = http.post("/api/usage", body)
            payload = response.json
            status = (
                payload["results"][0]["status"]
                if response.status_code < 300
                else payload["error"]["code"]
            )
            if response.status_code == 422:
                (problem,) = payload["error"]["details"]["errors"]
                assert problem["index"] == 0
                status = problem["code"]
            answers.append((message_id, response.status_code, status))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [a for chunk in pool.map(client, range(16)) for a in chunk]

    statuses = Counter(status for _, _, status in answers)
    assert statuses["unpriceable_destination"] == 16 * 2
    posted_ids = [m for m, _, s in answers if s == "posted"]
    assert len(posted_ids) == len(set(posted_ids))
    with unit_of_work(sessions) as session:
        stored = session.execute(sa.select(transfers.c.idempotency_key, transfers.c.amount)).all()
        assert sorted(k for k, _ in stored) == sorted(posted_ids)
        assert not any(k.startswith("bad-") for k, _ in stored)
        total = sum(amount for _, amount in stored)
        assert (
            sum(account_balance(session, f"customer:u{u}:unbilled").balance for u in range(4))
            == total
        )
        assert check_ledger(session) == []
    # Every replay of a posted id answered duplicate or idempotency_conflict, never posted twice.
    assert set(statuses) <= {
        "posted",
        "duplicate",
        "idempotency_conflict",
        "unpriceable_destination",
    }
