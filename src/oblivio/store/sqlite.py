"""The embedded default store: SQLite in WAL mode, one connection per thread.

Writes take ``BEGIN IMMEDIATE`` so concurrent writer processes queue on SQLite's lock instead of
failing on upgrade; ``synchronous=FULL`` makes a commit durable before it returns.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from oblivio.core.errors import InvalidStoreUriError, StorageError
from oblivio.store.database import ConstraintViolationError, Database, Dialect, Params, Row

BUSY_TIMEOUT_MS = 60_000
CACHE_KIB = 64 * 1024
"""Page cache per connection."""
WAL_CHECKPOINT_PAGES = 16_384
"""Pages the WAL may hold before a commit copies them back (SQLite's default: 1,000)."""


def sqlite_path_from_uri(uri: str) -> Path:
    """``sqlite:///abs/path`` → ``/abs/path``; ``sqlite:rel/path`` → ``rel/path``."""
    parts = urlsplit(uri)
    if parts.netloc or parts.query or parts.fragment:
        raise InvalidStoreUriError(f"store URI: expected sqlite:///PATH, got {uri!r}")
    path = unquote(parts.path)
    if not path or path == "/":
        raise InvalidStoreUriError(f"store URI: sqlite URI names no file: {uri!r}")
    return Path(path)


class _SqliteTransaction:
    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self._conn.executemany(sql, [tuple(r) for r in rows])

    def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        row = self._conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return [tuple(r) for r in self._conn.execute(sql, tuple(params)).fetchall()]

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]:
        for row in self._conn.execute(sql, tuple(params)):
            yield tuple(row)


class SqliteDatabase(Database):
    """SQLite behind the Database interface."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, uri: str) -> None:
        self.path = path
        self.uri = uri
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if not path.parent.exists():
            raise StorageError(f"store: directory {path.parent} does not exist")
        if not path.exists():
            # The database holds personal data (encrypted) and its metadata: owner-only.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as e:
                raise StorageError(f"store: cannot create {path}: {e.strerror}") from e
        self._connection()  # fail now, not at first use, if the file cannot be opened

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Batches of puts and epoch commits touch index pages all over the store: a larger
            # page cache keeps them in memory, and a larger WAL between checkpoints writes a page
            # that several commits dirtied back to the database once.
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_PAGES * 4096}")
        except sqlite3.Error as e:
            raise StorageError(f"store: cannot open SQLite database {self.path}: {e}") from e
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_SqliteTransaction]:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as e:
            raise StorageError(f"store: cannot begin a transaction: {e}") from e
        try:
            yield _SqliteTransaction(conn)
        except sqlite3.IntegrityError as e:
            conn.execute("ROLLBACK")
            raise ConstraintViolationError(f"store: constraint violated: {e}") from e
        except sqlite3.Error as e:
            conn.execute("ROLLBACK")
            raise StorageError(f"store: SQLite failed: {e}") from e
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            conn.execute("ROLLBACK")
            raise StorageError(f"store: commit failed: {e}") from e

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
