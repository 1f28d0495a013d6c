"""The array strings the bulk paths send arrive on PostgreSQL exactly as the Python values
they came from: any text (quotes, backslashes, braces, commas, the word NULL, unicode), None,
integers, UUIDs and instants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.bulk import array_text

pytestmark = pytest.mark.postgres

TEXT = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.lists(st.one_of(st.none(), TEXT), max_size=30))
def test_any_text_and_null_round_trip(engine: sa.Engine, values: list[str | None]) -> None:
    with engine.connect() as connection:
        back = (
            connection.exec_driver_sql(
                "SELECT x FROM unnest(%(a)s::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n",
                {"a": array_text(values)},
            )
            .scalars()
            .all()
        )
    assert back == values


def test_numbers_uuids_and_instants_round_trip(engine: sa.Engine) -> None:
    ids = [uuid.uuid4(), None, uuid.uuid4()]
    moments = [datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC), None]
    with engine.connect() as connection:
        numbers = (
            connection.exec_driver_sql(
                "SELECT unnest(%(a)s::bigint[])", {"a": array_text([9_223_372_036_854_775_807, -1])}
            )
            .scalars()
            .all()
        )
        back_ids = (
            connection.exec_driver_sql("SELECT unnest(%(a)s::uuid[])", {"a": array_text(ids)})
            .scalars()
            .all()
        )
        back_moments = (
            connection.exec_driver_sql(
                "SELECT unnest(%(a)s::timestamptz[])", {"a": array_text(moments)}
            )
            .scalars()
            .all()
        )
    assert numbers == [9_223_372_036_854_775_807, -1]
    assert [uuid.UUID(str(i)) if i else None for i in back_ids] == ids
    assert back_moments == moments
