"""A database outage answers `503 database_unavailable` with `Retry-After`, never a 500; a
connection the server dropped is replaced and the unit of work retried once when nothing can
have been committed; a connection lost during COMMIT is answered 503 and left to the client's
idempotent retry. Also the smaller answers: a 405 says `Allow`, `/metrics` names one charset,
and a missing Sippy configuration is a 503 no retry can satisfy (no `Retry-After`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from api import create_app
from infra.config import Config
from ledger.db import make_engine, make_session_factory, unit_of_work
from ledger.tables import transfers
from tests.client import ApiClient
from tests.conftest import NOW, Clock
from tests.scenarios import load_rates

pytestmark = pytest.mark.postgres

EVENT = {"message_id": "m-1", "user_id": "42", "destination": "+447400123456", "segments": 1}
ENTRY = {
    "idempotency_key": "adj-outage-1",
    "kind": "adjustment",
    "description": "goodwill credit",
    "transfers": [
        {"debit_account": "adjustments:USD", "credit_account": "revenue:sms:USD", "amount": "1.50"}
    ],
}


def _nothing_listens() -> str:
    """A PostgreSQL URL on a port that was free a moment ago: every connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/nowhere"


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _execute(url: str, *statements: str) -> list[Any]:
    """Run statements on their own connection (autocommit); the last one's rows."""
    engine = _admin(url)
    try:
        with engine.connect() as connection:
            result: list[Any] = []
            for statement in statements:
                cursor = connection.exec_driver_sql(statement)
                result = list(cursor) if cursor.returns_rows else []
            return result
    finally:
        engine.dispose()


def _terminate_app_connections(pg_admin_url: str, database: str) -> int:
    """What an operator's restart does to the app's pooled connections: every backend of
    `database` is terminated; how many were."""
    rows = _execute(
        pg_admin_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
    )
    return len(rows)


def _usage_count(api: ApiClient, message_id: str) -> int:
    with unit_of_work(api.sessions) as session:
        return int(
            session.execute(
                sa.select(sa.func.count())
                .select_from(transfers)
                .where(transfers.c.kind == "usage", transfers.c.idempotency_key == message_id)
            ).scalar_one()
        )


def assert_outage(response: Any) -> None:
    assert response.status_code == 503, response.json
    assert response.json["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"


def _batch(size: int) -> dict[str, Any]:
    return {"events": [{**EVENT, "message_id": f"b-{n}"} for n in range(size)]}


@pytest.fixture
def down(api: ApiClient) -> Iterator[ApiClient]:
    """An app whose database refuses every connection, called with keys this process checked
    a moment ago on a live app (roles are cached for `KEY_CACHE_SECONDS`), so each request
    reaches its view and meets the outage in the view's own unit of work."""
    for role in ("admin", "service"):
        assert api.as_role(role).get("/api/ledger/accounts").status_code in (200, 403)
    app = create_app(Config(database_url=_nothing_listens()), clock=Clock())
    app.config["TESTING"] = True
    client = ApiClient(app, api.keys)
    yield client
    client.dispose()


@pytest.mark.parametrize(
    ("method", "path", "role", "body"),
    [
        ("GET", "/api/ledger/accounts", "admin", None),
        ("POST", "/api/ledger/transfers", "admin", ENTRY),
        ("POST", "/api/usage", "service", EVENT),
        ("POST", "/api/usage", "service", _batch(3)),  # group-committed
        ("POST", "/api/usage", "service", _batch(500)),  # a batch of its own
    ],
    ids=["read", "write", "usage-single", "usage-small-batch", "usage-batch"],
)
def test_a_refused_connection_answers_503_with_retry_after(
    down: ApiClient, method: str, path: str, role: Any, body: Any
) -> None:
    assert_outage(down.as_role(role).open(path, method, body))


def test_an_unknown_key_during_an_outage_is_503_not_401_or_500() -> None:
    app = create_app(Config(database_url=_nothing_listens()), clock=Clock())
    broken = ApiClient(app, keys={})
    try:
        assert_outage(broken.bearer("sk_anything").post("/api/usage", EVENT))
        assert_outage(broken.bearer("sk_anything").get("/api/ledger/accounts"))
    finally:
        broken.dispose()


def test_the_app_starts_and_stays_up_without_its_database() -> None:
    app = create_app(Config(database_url=_nothing_listens()), clock=Clock())
    anonymous = ApiClient(app, keys={}).anonymous()
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 503
    assert anonymous.get("/openapi.json").status_code == 200
    app.extensions["smsledger"].engine.dispose()


def test_the_pre_send_check_still_fails_open_with_retry_after(down: ApiClient) -> None:
    response = down.as_role("service").post(
        "/api/usage/check", {"user_id": "42", "message_count": 1}
    )
    assert (response.status_code, response.json["allowed"]) == (503, True)
    assert response.json["error"]["code"] == "billing_unavailable"
    assert response.headers["Retry-After"] == "1"


def test_terminated_connections_are_replaced_and_the_request_retried(
    api: ApiClient, pg_url: str, pg_admin_url: str
) -> None:
    load_rates(api.sessions, NOW)
    service = api.as_role("service")
    assert service.post("/api/usage", EVENT).status_code == 201
    database = sa.make_url(pg_url).database
    assert database is not None
    for n in range(3):  # each time every pooled connection is dead, and none is handed out twice
        assert _terminate_app_connections(pg_admin_url, database) >= 1
        read = api.as_role("admin").get("/api/ledger/accounts")
        assert read.status_code == 200, read.json
        _terminate_app_connections(pg_admin_url, database)
        posted = service.post("/api/usage", {**EVENT, "message_id": f"m-after-{n}"})
        assert (posted.status_code, posted.json["posted"]) == (201, 1), posted.json
        _terminate_app_connections(pg_admin_url, database)
        batch = service.post(
            "/api/usage", {"events": [{**EVENT, "message_id": f"b-{n}-{k}"} for k in range(2)]}
        )
        assert batch.status_code == 201, batch.json
    assert _usage_count(api, "m-after-2") == 1


SELF_TERMINATE = """
CREATE SEQUENCE {name}_fired;
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('{name}_fired');  -- a sequence outlives the rollback: it counts attempts
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(5);  -- the termination arrives here
    RETURN NULL;
END $$;
"""


def _arm(pg_url: str, name: str, when: str, deferred: bool) -> None:
    """A trigger on usage transfers that kills its own connection: at the INSERT (the unit is
    lost before COMMIT) or, deferred, inside COMMIT itself."""
    timing = "DEFERRABLE INITIALLY DEFERRED" if deferred else ""
    _execute(
        pg_url,
        SELF_TERMINATE.format(name=name),
        f"CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON transfers {timing} "
        f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {name}()",
    )


def _attempts(pg_url: str, name: str) -> int:
    (row,) = _execute(pg_url, f"SELECT last_value, is_called FROM {name}_fired")
    return int(row[0]) if row[1] else 0


def test_a_connection_lost_before_commit_is_retried_once_then_503(
    api: ApiClient, pg_url: str
) -> None:
    load_rates(api.sessions, NOW)
    _arm(pg_url, "lost_mid_unit", "NEW.idempotency_key = 'doomed'", deferred=False)
    response = api.as_role("service").post("/api/usage", {**EVENT, "message_id": "doomed"})
    assert_outage(response)
    assert "nothing was changed" in response.json["error"]["message"]
    assert _attempts(pg_url, "lost_mid_unit") == 2  # the first try and exactly one retry
    assert _usage_count(api, "doomed") == 0
    assert api.as_role("service").post("/api/usage", EVENT).status_code == 201


def test_a_connection_lost_during_commit_is_not_retried_and_the_client_retry_is_safe(
    api: ApiClient, pg_url: str
) -> None:
    load_rates(api.sessions, NOW)
    _arm(pg_url, "lost_in_commit", "NEW.idempotency_key = 'm-1'", deferred=True)
    service = api.as_role("service")
    response = service.post("/api/usage", EVENT)
    assert_outage(response)
    assert "may or may not have been applied" in response.json["error"]["message"]
    assert _attempts(pg_url, "lost_in_commit") == 1  # never retried blindly
    _execute(pg_url, "DROP TRIGGER lost_in_commit ON transfers")
    again = service.post("/api/usage", EVENT)  # the client's retry, same message_id
    assert again.status_code in (200, 201), again.json
    replay = service.post("/api/usage", EVENT)
    assert (replay.status_code, replay.json["duplicates"]) == (200, 1)
    assert _usage_count(api, "m-1") == 1


def test_a_405_names_the_allowed_methods(api: ApiClient) -> None:
    response = api.as_role("service").delete("/api/usage")
    assert (response.status_code, response.json["error"]["code"]) == (405, "method_not_allowed")
    assert "POST" in {m.strip() for m in response.headers["Allow"].split(",")}


def test_metrics_name_one_charset(api: ApiClient) -> None:
    response = api.anonymous().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].count("charset=") == 1


def test_a_missing_sippy_configuration_is_not_worth_retrying(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    api = make_api(Config(database_url=pg_url))  # no SIPPY_URL
    response = api.as_role("accountant").post(
        "/api/reconciliation/runs",
        {"from": "2026-11-24T00:00:00Z", "to": "2026-11-25T00:00:00Z", "source": "sippy"},
    )
    assert (response.status_code, response.json["error"]["code"]) == (503, "sippy_not_configured")
    assert "Retry-After" not in response.headers


def test_an_exhausted_pool_is_a_503_to_retry_not_a_500(
    make_api: Callable[..., ApiClient], pg_url: str
) -> None:
    """One pooled connection, held by another unit of work: the request waits out the pool's
    timeout and is told to retry, instead of answering 500."""
    api = make_api(Config(database_url=pg_url))
    runtime = api.runtime
    runtime.engine.dispose()
    small = make_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    runtime.engine, runtime.sessions = small, make_session_factory(small)
    held = small.connect()
    try:
        answer = api.as_role("admin").get("/api/ledger/trial-balance")
    finally:
        held.close()
        small.dispose()
    assert (answer.status_code, answer.json["error"]["code"]) == (503, "busy_retry")
    assert answer.headers["Retry-After"] == "1"
