"""The storage interface: a transactional SQL database chosen by URI (DESIGN.md §2).

Two implementations sit behind it, the embedded default ``sqlite:///PATH`` (WAL) and
``postgresql://…`` (psycopg 3 with a pool). Everything above this layer writes portable SQL with
``?`` placeholders and ``{blob}``/``{bigint}`` type names in DDL, so that the same repository code
and the same tests run on both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from oblivio.core.errors import InvalidStoreUriError, StorageError

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]
Params = Sequence[object]


class ConstraintViolationError(StorageError):
    """A write broke a uniqueness or foreign-key constraint; the transaction was rolled back."""

    code = "constraint_violation"


class Transaction(Protocol):
    """One open transaction. It commits when its context exits normally, else rolls back."""

    dialect: Dialect

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed (when the driver knows)."""

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each parameter row."""

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query and return its first row, or None."""

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query and return all its rows."""

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]:
        """Run a query and yield its rows one at a time."""


class Database(ABC):
    """A database reached through transactions; safe to share between threads."""

    dialect: Dialect
    uri: str

    @abstractmethod
    def transaction(self, *, write: bool = True) -> AbstractContextManager[Transaction]:
        """Open a transaction. ``write=True`` takes the write lock at once (SQLite BEGIN
        IMMEDIATE), so read-modify-write sequences inside it are serialised between processes.

        Raises StorageError when the database fails.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object is unusable afterwards."""

    @abstractmethod
    def vacuum(self, table: str) -> None:
        """Reclaim the space of ``table``'s deleted rows, outside any transaction: PostgreSQL's
        plain ``VACUUM`` (dead tuples pruned, their space reusable; no exclusive lock). SQLite
        needs nothing: its connections run with ``secure_delete``, which zeroes deleted rows
        at once. Raises StorageError."""

    def ddl(self, template: str) -> str:
        """Fill the dialect's type names into a portable DDL template."""
        types = {
            "sqlite": {"blob": "BLOB", "bigint": "INTEGER"},
            "postgresql": {"blob": "BYTEA", "bigint": "BIGINT"},
        }[self.dialect]
        return template.format(**types)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_store_uri(uri: str) -> Dialect:
    """Return the dialect a store URI names, without opening it; else InvalidStoreUriError."""
    scheme = urlsplit(uri).scheme if isinstance(uri, str) else ""
    if scheme == "sqlite":
        from oblivio.store.sqlite import sqlite_path_from_uri

        sqlite_path_from_uri(uri)
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    raise InvalidStoreUriError(
        f"store URI: expected sqlite:///PATH or postgresql://..., got {uri!r}"
    )


def open_database(uri: str, *, create: bool = True) -> Database:
    """Open the database a store URI names: ``sqlite:///ABS/PATH``, ``sqlite:REL/PATH`` or
    ``postgresql://…`` (``postgres://`` too). A missing SQLite file is made only with ``create``.

    Raises InvalidStoreUriError for any other URI, StorageError if the database cannot be opened,
    NodeStateMismatchError if the SQLite file is missing and not ``create``.
    """
    if check_store_uri(uri) == "sqlite":
        from oblivio.store.sqlite import SqliteDatabase, sqlite_path_from_uri

        return SqliteDatabase(sqlite_path_from_uri(uri), uri, create=create)
    from oblivio.store.postgres import PostgresDatabase

    return PostgresDatabase(uri)
