"""The background WAL checkpointer of the SQLite store (ADR 0011), on real files.

The thread checkpoints once the WAL holds the threshold, without the writer; it starts only
when something is written and ends with ``close()`` (or when the database object is dropped);
a failing checkpoint is logged and retried; writers still serialise; and a process killed with
SIGKILL while checkpoints run leaves a consistent database with every acknowledged commit.

Run as a script, this module is the child of the kill test: ``python -m
tests.store.test_sqlite_checkpointer DB FIRST_ID`` commits rows from ``FIRST_ID`` on, printing
each id once its COMMIT has returned.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.store import sqlite as sqlite_store
from oblivio.store.sqlite import SqliteDatabase, _wal_frames

ROOT = Path(__file__).resolve().parents[2]
PAGE = 4096
ROW_PAGES = 3
"""Each test row carries a blob of about three pages, so a commit adds a few WAL frames."""


def _without_writer_checkpoints(db: SqliteDatabase) -> None:
    """Turn off the calling thread's own checkpoints (the safety net), so that any checkpoint
    is the background thread's: instrumentation from outside, as the product has no hooks."""
    db._connection().execute("PRAGMA wal_autocheckpoint = 0")


def _open(path: Path, pages: int) -> SqliteDatabase:
    """The database at ``path``, its table made; the calling thread's connection leaves every
    checkpoint to the background thread."""
    db = SqliteDatabase(path, f"sqlite:///{path}", wal_checkpoint_pages=pages)
    _without_writer_checkpoints(db)
    with db.transaction() as tx:
        tx.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB)")
    return db


def _insert(db: SqliteDatabase, row_id: int, pages: int = ROW_PAGES) -> None:
    with db.transaction() as tx:
        tx.execute("INSERT INTO rows (id, data) VALUES (?, ?)", (row_id, _blob(row_id, pages)))


def _blob(row_id: int, pages: int = ROW_PAGES) -> bytes:
    return random.Random(row_id).randbytes(pages * PAGE - 200)  # noqa: S311 - test data


def _outgrows(path: Path, size: int) -> Callable[[], bool]:
    return lambda: path.stat().st_size > size


def _checkpointers(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"oblivio-wal-checkpointer {path}"]


def _eventually(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _check_rows(path: Path, ids: set[int], pages: int = ROW_PAGES) -> None:
    """Reopened with a plain connection: the database is intact and holds exactly ``ids``."""
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(conn.execute("SELECT id, data FROM rows").fetchall())
    assert set(rows) == ids
    for row_id, data in rows.items():
        assert data == _blob(row_id, pages)


def test_the_thread_checkpoints_the_wal_without_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    wal = Path(f"{path}-wal")
    db = _open(path, pages=100)  # a commit here adds about 5 frames
    empty = path.stat().st_size
    for row_id in range(30):
        _insert(db, row_id)
    # Only a checkpoint writes pages into the database file.
    assert _eventually(_outgrows(path, empty + 10 * ROW_PAGES * PAGE)), path.stat()
    found = _wal_frames(wal)
    assert found is not None
    salts = found[0]
    # Once the checkpoint has copied everything, the next commit starts the WAL over.
    row_id = 30
    while found[0] == salts:
        assert row_id < 60, "the WAL never started over"
        time.sleep(0.02)
        _insert(db, row_id)
        row_id += 1
        found = _wal_frames(wal)
        assert found is not None
    assert found[1] < 10
    db.close()
    _check_rows(path, set(range(row_id)))


def test_close_joins_the_thread_and_closing_twice_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = _open(path, pages=8)
    size = path.stat().st_size
    _insert(db, 1, pages=12_500)  # 50 MB: close() comes while the thread copies them back
    (thread,) = _checkpointers(path.absolute())
    assert _eventually(_outgrows(path, size))
    db.close()
    assert not thread.is_alive()
    assert _checkpointers(path.absolute()) == []
    db.close()
    _check_rows(path, {1}, pages=12_500)


def test_a_database_never_written_starts_no_thread(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, data BLOB)")
    db = SqliteDatabase(path, f"sqlite:///{path}", wal_checkpoint_pages=1)
    with db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM rows") == (0,)
    with db.transaction() as tx:  # takes the write lock, changes nothing
        assert tx.execute("DELETE FROM rows WHERE id = 1") == 0
    assert _checkpointers(path.absolute()) == []
    db.close()


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_many_databases_leave_no_threads_or_descriptors(tmp_path: Path) -> None:
    threads, descriptors = threading.active_count(), _open_descriptors()
    for i in range(50):
        path = tmp_path / f"store{i}.db"
        db = _open(path, pages=1)  # the thread opens its connection and checkpoints
        _insert(db, i)
        assert _checkpointers(path.absolute())
        assert _eventually(_outgrows(path, 2 * PAGE))
        db.close()
    assert threading.active_count() == threads
    assert _open_descriptors() == descriptors


def test_a_database_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = _open(path, pages=1)
    _insert(db, 1)
    (thread,) = _checkpointers(path.absolute())
    del db
    gc.collect()
    thread.join(20)
    assert not thread.is_alive()
    _check_rows(path, {1})


def test_a_failing_checkpoint_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    db = _open(path, pages=1)  # the writer's own connection is open before connect fails
    size = path.stat().st_size

    def broken_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    with caplog.at_level(logging.WARNING, logger="oblivio.store.sqlite"):
        monkeypatch.setattr(sqlite3, "connect", broken_connect)
        _insert(db, 1)
        assert _eventually(lambda: "background WAL checkpoint" in caplog.text)
        _insert(db, 2)  # the thread survived; commits still succeed
        monkeypatch.undo()
        _insert(db, 3)  # the next signal retries, and now the checkpoint runs
        assert _eventually(_outgrows(path, size))
    assert "disk I/O error" in caplog.text
    db.close()
    _check_rows(path, {1, 2, 3})


def test_writers_in_two_threads_serialise_with_the_thread_running(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = _open(path, pages=16)
    with db.transaction() as tx:
        tx.execute("CREATE TABLE counter (n INTEGER)")
        tx.execute("INSERT INTO counter (n) VALUES (0)")
    empty = path.stat().st_size
    per_thread = 100
    errors: list[BaseException] = []

    def write(first: int) -> None:
        try:
            _without_writer_checkpoints(db)
            for row_id in range(first, first + per_thread):
                with db.transaction() as tx:  # read-modify-write: lost updates would show
                    row = tx.fetchone("SELECT n FROM counter")
                    assert row is not None
                    tx.execute("UPDATE counter SET n = ?", (row[0] + 1,))
                    tx.execute("INSERT INTO rows (id, data) VALUES (?, ?)", (row_id, _blob(row_id)))
        except BaseException as e:
            errors.append(e)

    writers = [threading.Thread(target=write, args=(i * per_thread,)) for i in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert errors == []
    with db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT n FROM counter") == (2 * per_thread,)
    assert _eventually(_outgrows(path, empty)), "no background checkpoint ran"
    db.close()
    _check_rows(path, set(range(2 * per_thread)))


@st.composite
def _rounds(draw: st.DrawFn) -> list[tuple[int, bool]]:
    """Commits of 1-40 pages, each either with a reader holding an older snapshot (the WAL
    cannot start over) or without (it starts over after each complete checkpoint)."""
    return draw(st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=12))


@settings(max_examples=25, deadline=None)
@given(_rounds())
def test_wal_frames_counts_the_frames_sqlite_counts(rounds: list[tuple[int, bool]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "store.db"
        wal = Path(f"{path}-wal")
        assert _wal_frames(wal) is None
        with (
            closing(sqlite3.connect(path, isolation_level=None)) as writer,
            closing(sqlite3.connect(path, isolation_level=None)) as reader,
        ):
            writer.execute("PRAGMA journal_mode = WAL")
            writer.execute("PRAGMA wal_autocheckpoint = 0")
            writer.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, data BLOB)")
            for row_id, (pages, pinned) in enumerate(rounds):
                if pinned:
                    reader.execute("BEGIN")
                    reader.execute("SELECT COUNT(*) FROM rows").fetchone()
                writer.execute("INSERT INTO rows VALUES (?, ?)", (row_id, _blob(row_id, pages)))
                found = _wal_frames(wal)
                # The checkpoint's report of the WAL's frames (it copies what no reader needs).
                _, frames, _ = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                assert found is not None
                assert found[1] == frames
                if pinned:
                    reader.execute("COMMIT")


def _run_child_and_kill(path: Path, first_id: int, delay: float) -> set[int]:
    """Start a child committing rows, SIGKILL it ``delay`` seconds after its first commit;
    return the ids it reported committed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.test_sqlite_checkpointer", str(path), str(first_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert child.stdout is not None
    first = child.stdout.readline()
    assert first, f"the child exited early: {child.communicate(timeout=60)[1]}"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    rest, errors = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, errors
    return {int(line) for line in [first, *rest.splitlines()] if line.strip()}


CHILD_CHECKPOINT_PAGES = 16
"""The child's threshold: a checkpoint is due after every commit."""
BALLAST_SLOTS, BALLAST_PAGES = 8, 16
"""Each child commit also rewrites one of 8 rows of 64 KiB, so that checkpoints have pages to
copy while the database file stays small."""


@pytest.mark.slow
def test_sigkill_during_background_checkpoints_keeps_every_commit(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with _open(path, pages=CHILD_CHECKPOINT_PAGES) as db, db.transaction() as tx:
        tx.execute("CREATE TABLE ballast (slot INTEGER PRIMARY KEY, id INTEGER, data BLOB)")
    rng = random.Random(11)  # noqa: S311 - reproducible kill times
    committed: set[int] = set()
    for run in range(8):
        written = path.stat().st_mtime_ns
        ids = _run_child_and_kill(path, run * 1_000_000, rng.uniform(0.2, 0.8))
        # Only a checkpoint writes the database file, and the child's writer makes none.
        assert path.stat().st_mtime_ns > written, "no background checkpoint ran in the child"
        committed |= ids
        # Commits made after the child's last report may be there too, never fewer.
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            present = {row_id for (row_id,) in conn.execute("SELECT id FROM rows")}
            ballast = conn.execute("SELECT slot, id, data FROM ballast").fetchall()
        assert committed <= present
        committed = present
        for slot, row_id, data in ballast:  # each slot as the last commit that wrote it left it
            assert row_id == max(i for i in committed if i % BALLAST_SLOTS == slot)
            assert data == _blob(row_id, BALLAST_PAGES)
    _check_rows(path, committed)


def _commit_until_killed(path: Path, first_id: int) -> None:
    # The thread looks at the WAL after every commit instead of ten times a second, so that it
    # is checkpointing most of the time (over 90% here, measured) and a kill lands in one.
    sqlite_store.WAL_CHECK_INTERVAL_S = 0.0
    db = _open(path, pages=CHILD_CHECKPOINT_PAGES)
    for row_id in range(first_id, first_id + 1_000_000):
        with db.transaction() as tx:
            tx.execute("INSERT INTO rows (id, data) VALUES (?, ?)", (row_id, _blob(row_id)))
            tx.execute(
                "INSERT OR REPLACE INTO ballast (slot, id, data) VALUES (?, ?, ?)",
                (row_id % BALLAST_SLOTS, row_id, _blob(row_id, BALLAST_PAGES)),
            )
        print(row_id, flush=True)


if __name__ == "__main__":
    _commit_until_killed(Path(sys.argv[1]), int(sys.argv[2]))
