"""PostgreSQL behind the Database interface: psycopg 3 with a connection pool.

Portable ``?`` placeholders become psycopg's ``%s``. Write transactions run at READ COMMITTED
(seed 002 §23.3.3's minimum); code that must serialise writers takes an advisory lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.sql
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from oblivio.core.errors import StorageError
from oblivio.store.database import ConstraintViolationError, Database, Dialect, Params, Row

POOL_MAX_SIZE = 8
CONNECT_TIMEOUT_S = 10.0


def _to_psycopg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _PostgresTransaction:
    dialect: Dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        with self._conn.cursor() as cur:
            cur.execute(_to_psycopg(sql), tuple(params))
            return cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_to_psycopg(sql), [tuple(r) for r in rows])

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        with self._conn.cursor() as cur:
            cur.execute(_to_psycopg(sql), tuple(params))
            row = cur.fetchone()
            return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        with self._conn.cursor() as cur:
            cur.execute(_to_psycopg(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()]

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]:
        with self._conn.cursor() as cur:
            cur.execute(_to_psycopg(sql), tuple(params))
            for row in cur:
                yield tuple(row)


class PostgresDatabase(Database):
    """PostgreSQL through a psycopg connection pool."""

    dialect: Dialect = "postgresql"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        try:
            # One direct connection first: a bad address or credentials fail at once with the
            # server's reason, instead of the pool retrying in the background until it times out.
            psycopg.connect(uri, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
        except psycopg.Error as e:
            reason = " ".join(str(e).split())
            raise StorageError(
                f"store: cannot connect to PostgreSQL at {_redact(uri)}: {reason}"
            ) from e
        try:
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                uri,
                min_size=1,
                max_size=POOL_MAX_SIZE,
                open=False,
                kwargs={"connect_timeout": int(CONNECT_TIMEOUT_S)},
            )
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, PoolTimeout) as e:
            raise StorageError(f"store: cannot connect to PostgreSQL at {_redact(uri)}: {e}") from e

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_PostgresTransaction]:
        try:
            with self._pool.connection() as conn, conn.transaction():
                if not write:
                    conn.execute("SET TRANSACTION READ ONLY")
                yield _PostgresTransaction(conn)
        except pg_errors.IntegrityError as e:
            raise ConstraintViolationError(f"store: constraint violated: {e}") from e
        except (psycopg.Error, PoolTimeout) as e:
            raise StorageError(f"store: PostgreSQL failed: {e}") from e

    def vacuum(self, table: str) -> None:
        try:
            with self._pool.connection() as conn:
                conn.autocommit = True  # VACUUM cannot run inside a transaction block
                try:
                    conn.execute(psycopg.sql.SQL("VACUUM {}").format(psycopg.sql.Identifier(table)))
                finally:
                    conn.autocommit = False
        except (psycopg.Error, PoolTimeout) as e:
            raise StorageError(f"store: VACUUM {table} failed: {e}") from e

    def close(self) -> None:
        self._pool.close()


def _redact(uri: str) -> str:
    """The URI without any password, for error messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(uri)
    except psycopg.Error:
        return "(unparseable URI)"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in info.items())
