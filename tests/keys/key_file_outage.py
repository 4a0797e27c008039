"""A transient failure of a key file, for the node and server tests of the epoch loop.

Renaming the file away does not reach a node that has it open (a ``KeyFile`` keeps one
descriptor for the file's life), so the outage damages the file's 8-byte magic in place and puts
it back, both under the file's lock: every change to the file and every read of it from disk
(not from a process's cache) then raises KeyBackendError ("header … is damaged") in any
process, until the block ends. The slots are never touched: the outage itself loses no key.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MAGIC_SIZE = 8


def _rewrite_magic(fd: int, expected: bytes, replacement: bytes) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        found = os.pread(fd, MAGIC_SIZE, 0)
        assert found == expected, f"key file magic: expected {expected!r}, got {found!r}"
        os.pwrite(fd, replacement, 0)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def key_file_outage(path: Path, magic: bytes = b"OBLVSWK1") -> Iterator[None]:
    """The key file at ``path`` (a software backend's by default) fails while the block runs."""
    fd = os.open(path, os.O_RDWR)
    try:
        _rewrite_magic(fd, magic, bytes(MAGIC_SIZE))
        try:
            yield
        finally:
            _rewrite_magic(fd, bytes(MAGIC_SIZE), magic)
    finally:
        os.close(fd)
