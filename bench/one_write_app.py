"""The HTTP limit for a request that must store one row: the do-nothing endpoint of
`bench.trivial_app` plus one `INSERT` of a usage-transfer-shaped row, autocommitted, per request.

A single usage post can be no faster than this on the same server, database and cores: it
parses the same small JSON body, makes one round trip to PostgreSQL that writes one row into a
table with the indexes of `transfers` (`LIKE transfers INCLUDING ALL`: its indexes, defaults and
checks, without the foreign keys and triggers), commits, and answers a small JSON body.
`DATABASE_URL` names the database, where the benchmark ran `CREATE_TABLE` before starting the
server; each server thread keeps its own connection.
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import psycopg2
from flask import Flask, request

from ledger.bulk import COLUMNS

app = Flask("one_write")
_local = threading.local()
TABLE = "one_write_rows"
CREATE_TABLE = f"CREATE TABLE IF NOT EXISTS {TABLE} (LIKE transfers INCLUDING ALL)"
_INSERT = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
_METADATA = json.dumps({"user_id": "c1", "destination": "+447400123456", "segments": 1})


def _connection() -> psycopg2.extensions.connection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = psycopg2.connect(os.environ["DATABASE_URL"].replace("+psycopg2", ""))
        connection.autocommit = True
        _local.connection = connection
    return connection


@app.post("/write")
def write() -> dict[str, object]:
    body = request.get_json()
    transfer = str(uuid.uuid4())
    user = str(body.get("user_id", "c1"))
    row = {
        "id": transfer,
        "journal_id": transfer,
        "kind": "usage",
        "idempotency_key": transfer,
        "leg": 0,
        "fingerprint": uuid.uuid4().hex,
        "debit_account_id": 1,
        "credit_account_id": 2,
        "amount": 7000,
        "currency": "USD",
        "effective_at": "2026-11-23T00:00:00+00:00",
        "posted_at": "2026-11-23T00:00:00+00:00",
        "description": None,
        "metadata": _METADATA,
        "reverses_id": None,
    }
    with _connection().cursor() as cursor:
        cursor.execute(_INSERT, [row[column] for column in COLUMNS])
    return {"ok": True, "id": transfer, "user_id": user}


@app.get("/healthz")
def healthz() -> dict[str, object]:
    return {"ok": True}
