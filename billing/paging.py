"""One page of a filtered listing and its total, the shape every admin and user list answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    total: int


def fetch_page(
    session: Session,
    table: sa.Table,
    filters: Sequence[sa.ColumnElement[bool]],
    order_by: Sequence[sa.ColumnElement[Any]],
    limit: int,
    offset: int,
) -> Page:
    """Rows of `table` matching every filter, in `order_by`, with the count of all matches."""
    total = session.execute(sa.select(sa.func.count()).select_from(table).where(*filters))
    rows = session.execute(
        sa.select(table).where(*filters).order_by(*order_by).limit(limit).offset(offset)
    ).all()
    return Page(list(rows), int(total.scalar_one()))
