"""A small file of secret slots that can be destroyed one by one in place (mode 0600).

The software backend keeps its root keys here and each threshold custodian its shares. The file
is a 16-byte header and fixed 64-byte slots, so that destroying a secret overwrites its own bytes
in place and fsyncs, without rewriting the file::

    header = magic (8) | generation (8, big-endian, bumped by every change)
    slot = state (1) | tag (1) | reserved (14) | reference (16) | secret (32)

Honest limitation (docs/key-erasure.md): flash media and copy-on-write file systems may keep the
old blocks of an overwritten slot; a node that needs strong level-1 claims uses an HSM.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from oblivio.core.errors import KeyBackendError

HEADER_SIZE = 16
SLOT_SIZE = 64
SECRET_SIZE = 32
REFERENCE_SIZE = 16


def parse_key_reference(key_ref: str, prefix: str) -> bytes | None:
    """The 16-byte reference in ``prefix`` + hex, as backends name their root keys; None for
    anything else (a reference of another backend, or malformed)."""
    if not key_ref.startswith(prefix):
        return None
    try:
        reference = bytes.fromhex(key_ref.removeprefix(prefix))
    except ValueError:
        return None
    return reference if len(reference) == REFERENCE_SIZE else None


_LIVE = 1
_DESTROYED = 0


@dataclass(frozen=True)
class Slot:
    """One live secret: a 1-byte tag (a purpose, a share index) and 32 secret bytes."""

    tag: int
    secret: bytes


class KeyFile:
    """Secret slots in a local file, guarded by an advisory lock between processes."""

    def __init__(self, path: Path, magic: bytes) -> None:
        if len(magic) != 8:
            raise ValueError("key file magic: expected 8 bytes")
        self.path = path
        self.magic = magic
        self._lock = threading.Lock()
        self._cache: dict[bytes, Slot] = {}
        self._cache_generation: bytes | None = None
        if not path.exists():
            self._create_file()
        try:
            self._reader = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise KeyBackendError(f"key file: cannot read {self.path}: {e}") from e
        if os.pread(self._reader, len(magic), 0) != magic:
            os.close(self._reader)
            raise KeyBackendError(f"key file: {self.path} is not an oblivio key file")

    def _create_file(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as e:
            raise KeyBackendError(f"key file: cannot create {self.path}: {e}") from e
        with os.fdopen(fd, "wb") as f:
            f.write(self.magic + (0).to_bytes(8, "big"))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path.parent)

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[BinaryIO]:
        try:
            f = open(self.path, "r+b" if write else "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise KeyBackendError(f"key file: cannot open {self.path}: {e}") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            yield f
        finally:
            f.close()

    def live(self) -> dict[bytes, Slot]:
        """Live slots by reference; re-read when any process has changed the file, as the
        header's generation counter shows."""
        with self._lock:
            if self._reader < 0:
                raise KeyBackendError(f"key file: {self.path} is closed")
            generation = os.pread(self._reader, 8, len(self.magic))
            if generation != self._cache_generation:
                with self._locked(write=False) as f:
                    data = f.read()
                self._cache = self._parse(data)
                self._cache_generation = data[len(self.magic) : HEADER_SIZE]
            return self._cache

    def get(self, reference: bytes) -> Slot | None:
        """The live slot ``reference`` names, or None."""
        return self.live().get(reference)

    def add(self, reference: bytes, tag: int, secret: bytes) -> None:
        """Write a live slot, reusing a destroyed one if any (so the file stays as small as the
        live set), and fsync before returning."""
        if len(reference) != REFERENCE_SIZE or len(secret) != SECRET_SIZE or not 0 <= tag < 256:
            raise ValueError("key file slot: expected a 16-byte reference and a 32-byte secret")
        slot = bytes([_LIVE, tag]) + bytes(14) + reference + secret
        with self._lock, self._locked(write=True) as f:
            data = f.read()
            free = next(
                (
                    offset
                    for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE)
                    if data[offset] == _DESTROYED
                ),
                None,
            )
            f.seek(
                free if free is not None else 0, os.SEEK_SET if free is not None else os.SEEK_END
            )
            f.write(slot)
            self._bump_generation(f)
            f.flush()
            os.fsync(f.fileno())

    def destroy(self, reference: bytes) -> None:
        """Overwrite every slot of ``reference`` with zeros in place and fsync; then confirm by
        reading the file again that no live slot names it. Raises KeyBackendError otherwise."""
        with self._lock, self._locked(write=True) as f:
            data = f.read()
            changed = False
            for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
                if data[offset + 16 : offset + 32] == reference and data[offset] == _LIVE:
                    f.seek(offset)
                    f.write(bytes([_DESTROYED, 0]) + bytes(14) + reference + bytes(SECRET_SIZE))
                    changed = True
            if changed:
                self._bump_generation(f)
                f.flush()
                os.fsync(f.fileno())
        if self.get(reference) is not None:
            raise KeyBackendError(f"key file: slot {reference.hex()} still live after destruction")

    def _bump_generation(self, f: BinaryIO) -> None:
        f.seek(len(self.magic))
        generation = int.from_bytes(f.read(8), "big") + 1
        f.seek(len(self.magic))
        f.write(generation.to_bytes(8, "big"))

    def _parse(self, data: bytes) -> dict[bytes, Slot]:
        if not data.startswith(self.magic):
            raise KeyBackendError(f"key file: header of {self.path} is damaged")
        slots: dict[bytes, Slot] = {}
        for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
            slot = data[offset : offset + SLOT_SIZE]
            if slot[0] == _LIVE:
                slots[slot[16:32]] = Slot(slot[1], slot[32:64])
        return slots

    def close(self) -> None:
        """Release the file descriptor kept for generation checks."""
        with self._lock:
            if self._reader >= 0:
                os.close(self._reader)
                self._reader = -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
