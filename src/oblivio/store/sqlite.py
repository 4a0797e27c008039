"""The embedded default store: SQLite in WAL mode, one connection per thread.

Writes take ``BEGIN IMMEDIATE`` so concurrent writer processes queue on SQLite's lock instead of
failing on upgrade; ``synchronous=FULL`` makes a commit durable before it returns.

Copying the WAL back into the database file (a checkpoint) is left to a background thread with
a connection of its own (ADR 0011): a commit only wakes it, and the thread runs a PASSIVE
checkpoint, which never blocks readers or writers, once the WAL holds ``WAL_CHECKPOINT_PAGES``
frames. Python's sqlite3 releases the GIL while SQLite works, so the copy and its fsync overlap
the committing thread's next piece of work. A checkpoint is only an optimisation: if the thread
fails or falls behind, the writers' own ``wal_autocheckpoint``, at a larger limit, keeps the WAL
bounded, and SQLite keeps the database consistent whenever a checkpoint is cut short.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from oblivio.core.errors import InvalidStoreUriError, NodeStateMismatchError, StorageError
from oblivio.store.database import ConstraintViolationError, Database, Dialect, Params, Row

_log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 60_000
CACHE_KIB = 64 * 1024
"""Page cache per connection."""
MMAP_BYTES = 2 * 1024**3
"""Reads map up to this much of the database file instead of copying pages in with a system
call each (SQLite clamps it to its build's ceiling, 2 GiB by default; ADR 0015). Forgetting
looks up thousands of rows spread over the file; writes still go through the WAL."""
WAL_CHECKPOINT_PAGES = 16_384
"""Frames the WAL may hold before the background thread copies them back: 64 MiB of 4 KiB
pages, so that an index page several commits dirty is written back once (ADR 0010; SQLite's
default: 1,000)."""
WAL_AUTOCHECKPOINT_FACTOR = 2
"""The writers' own ``wal_autocheckpoint``, and ``journal_size_limit``, are this many times
``WAL_CHECKPOINT_PAGES`` (pages of 4 KiB). A writer checkpoints only when the WAL reaches that
without starting over: the thread has failed, or commits come without the pause the WAL needs to
start over (a PASSIVE checkpoint copies what was committed when it began, and the WAL starts over
only at a commit that finds all of it copied). The WAL file keeps the allocation it may grow to,
so commits overwrite blocks instead of appending them (a sync after an append also writes the
file's size). At 4 (256 MiB), a run of 20,000 single 1 KiB puts spent longer growing the
file and was about 10% slower, measured."""
WAL_CHECK_INTERVAL_S = 0.1
"""The thread looks at the WAL at most this often, however often commits wake it: each look
takes the GIL for a few system calls, which a thread committing small transactions would
otherwise hand over after every commit (about a fifth fewer commits per second, measured)."""
CHECKPOINTER_JOIN_TIMEOUT_S = 30.0
"""How long ``close()`` waits for a checkpoint in progress (copying a WAL at the writers' limit,
128 MiB, takes a few seconds on a slow disk)."""

_WAL_MAGICS = (0x377F0682, 0x377F0683)
_WAL_HEADER_BYTES = 32
_WAL_FRAME_HEADER_BYTES = 24


def sqlite_path_from_uri(uri: str) -> Path:
    """``sqlite:///abs/path`` → ``/abs/path``; ``sqlite:rel/path`` → ``rel/path``."""
    parts = urlsplit(uri)
    if parts.netloc or parts.query or parts.fragment:
        raise InvalidStoreUriError(f"store URI: expected sqlite:///PATH, got {uri!r}")
    path = unquote(parts.path)
    if not path or path == "/":
        raise InvalidStoreUriError(f"store URI: sqlite URI names no file: {uri!r}")
    return Path(path)


def _wal_frames(wal: Path) -> tuple[bytes, int] | None:
    """The salts of a WAL file and how many frames it holds since they were set, or None when
    there is no valid WAL header. Read from the file (WAL format, sqlite.org/fileformat2.html
    §4.1): frames whose header repeats the WAL header's salts belong to the current round,
    which starts at frame 1 each time the WAL is restarted; the frames after them are left over
    from earlier rounds, so the boundary is found by bisection.

    An estimate for scheduling checkpoints, taken without locks: it counts the frames of a
    transaction being written or rolled back too. Raises OSError if the file cannot be read.
    """
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        header = os.pread(fd, _WAL_HEADER_BYTES, 0)
        if len(header) < _WAL_HEADER_BYTES:
            return None
        magic, _version, page_size = struct.unpack(">3I", header[:12])
        if magic not in _WAL_MAGICS or page_size < 512:
            return None
        salts = header[16:24]
        frame_bytes = _WAL_FRAME_HEADER_BYTES + page_size
        low, high = 0, (os.fstat(fd).st_size - _WAL_HEADER_BYTES) // frame_bytes
        while low < high:  # frames 1..low are of this round; frames after high are not
            middle = (low + high + 1) // 2
            offset = _WAL_HEADER_BYTES + (middle - 1) * frame_bytes + 8
            if os.pread(fd, 8, offset) == salts:
                low = middle
            else:
                high = middle - 1
        return salts, low
    finally:
        os.close(fd)


class _WalCheckpointer:
    """The background checkpoint thread of one database file.

    It starts at the first ``notify()`` (a committed write), so a process that only reads
    starts none; after ``stop()`` it starts no new checkpoint, closes its connection and ends,
    and ``close()`` waits for that. It holds no reference to the database object, whose
    finaliser stops it.
    """

    def __init__(self, path: Path, threshold_pages: int) -> None:
        self._path = path
        self._wal = Path(f"{path}-wal")
        self._threshold = threshold_pages
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Used by the thread alone: its connection, and the WAL round (its salts) and the frames
        # of it known to be copied back at its last checkpoint; frames beyond are still to copy.
        self._conn: sqlite3.Connection | None = None
        self._salts, self._copied = b"", 0

    def notify(self) -> None:
        """Tell the thread a write committed (starting it the first time); no I/O."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    thread = threading.Thread(
                        target=self._run, name=f"oblivio-wal-checkpointer {self._path}", daemon=True
                    )
                    thread.start()
                    self._thread = thread
        self._wake.set()

    def stop(self) -> None:
        """Ask the thread to end after any checkpoint in progress; never waits."""
        with self._lock:
            self._stop.set()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread and wait for it (at most ``CHECKPOINTER_JOIN_TIMEOUT_S``)."""
        self.stop()
        thread = self._thread
        if thread is None:
            return
        thread.join(CHECKPOINTER_JOIN_TIMEOUT_S)
        if thread.is_alive():
            _log.warning(
                "store: the WAL checkpoint of %s did not end within %.0f s; closing anyway",
                self._path,
                CHECKPOINTER_JOIN_TIMEOUT_S,
            )

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    self._checkpoint_if_due()
                except Exception:
                    # Only an optimisation: the writers' autocheckpoint bounds the WAL meanwhile.
                    _log.warning(
                        "store: background WAL checkpoint of %s failed; retrying after the next"
                        " commit",
                        self._path,
                        exc_info=True,
                    )
                if self._stop.wait(WAL_CHECK_INTERVAL_S):
                    return
        finally:
            if self._conn is not None:
                self._conn.close()

    def _checkpoint_if_due(self) -> None:
        found = _wal_frames(self._wal)
        if found is None:
            return
        salts, frames = found
        pending = frames - self._copied if salts == self._salts else frames
        if pending < self._threshold or self._stop.is_set():
            return
        if self._conn is None:
            # PASSIVE never waits for a lock, so neither does this connection.
            self._conn = sqlite3.connect(self._path, isolation_level=None, timeout=0)
            # A checkpoint syncs the WAL before copying and the database after it, before the
            # WAL may start over: FULL (the default) keeps those syncs.
            self._conn.execute("PRAGMA synchronous = FULL")
        busy, _, checkpointed = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if checkpointed >= 0:
            self._salts, self._copied = salts, checkpointed
        if busy:
            _log.debug("store: WAL checkpoint of %s: another is running", self._path)


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
    """SQLite behind the Database interface.

    ``wal_checkpoint_pages`` (default ``WAL_CHECKPOINT_PAGES``) is the WAL size, in frames, at
    which the background thread checkpoints.
    """

    dialect: Dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        uri: str,
        *,
        wal_checkpoint_pages: int | None = None,
        create: bool = True,
    ) -> None:
        self.path = path
        self.uri = uri
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._wal_checkpoint_pages = (
            WAL_CHECKPOINT_PAGES if wal_checkpoint_pages is None else wal_checkpoint_pages
        )
        self._checkpointer = _WalCheckpointer(path.absolute(), self._wal_checkpoint_pages)
        # A database dropped without close() must not leave its thread waiting forever.
        weakref.finalize(self, self._checkpointer.stop)
        if not path.parent.exists():
            raise StorageError(f"store: directory {path.parent} does not exist")
        if not path.exists() and not create:
            raise NodeStateMismatchError(
                "database_missing",
                f"store: the database file {path} is missing; the node refuses to make a new "
                "empty one beside its key store (restore the file, or see 'oblivio "
                "restore-backup' in docs/key-erasure.md)",
            )
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
            # Deleted rows are overwritten with zeros, not left in free space: forgetting
            # deletes derived plaintext (full-text entries, DESIGN.md §11) and it must not stay
            # readable in the file's free pages.
            conn.execute("PRAGMA secure_delete = ON")
            # Batches of puts and epoch commits touch index pages all over the store: a larger
            # page cache keeps them in memory, and a larger WAL between checkpoints writes a page
            # that several commits dirtied back to the database once. The background thread
            # checkpoints; a writer does only if the WAL outgrows the thread.
            pages = self._wal_checkpoint_pages
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {pages * WAL_AUTOCHECKPOINT_FACTOR}")
            conn.execute(f"PRAGMA journal_size_limit = {pages * WAL_AUTOCHECKPOINT_FACTOR * 4096}")
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
        changes = conn.total_changes
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
        if conn.total_changes != changes:
            self._checkpointer.notify()

    def vacuum(self, table: str) -> None:
        """Nothing to do: ``secure_delete`` zeroed ``table``'s deleted rows when they were
        deleted (a SQLite ``VACUUM`` would rewrite the whole database file)."""

    def close(self) -> None:
        """Stop the checkpoint thread (waiting for a checkpoint in progress), then close every
        connection. Closing again does nothing."""
        self._checkpointer.close()
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
