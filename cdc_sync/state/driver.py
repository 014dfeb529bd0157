"""The psycopg connection under a SQLAlchemy Connection, for COPY / array-parameter fast paths."""

from __future__ import annotations

from typing import Any

import psycopg
import sqlalchemy as sa


def psycopg_connection(conn: sa.Connection) -> psycopg.Connection[Any] | None:
    """The driver connection when it is psycopg 3 (else None), inside the caller's transaction.

    Statements sent on the driver connection bypass SQLAlchemy's autobegin; without the
    ``begin()`` here the runtime's ``conn.commit()`` would see no transaction and do nothing,
    and our rows, audit and checkpoint would not commit together (invariant 1).
    """
    raw = conn.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):
        return None
    if not conn.in_transaction():
        conn.begin()
    return raw
