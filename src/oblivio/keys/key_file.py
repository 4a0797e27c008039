"""A small file of secret slots that can be destroyed one by one in place (mode 0600).

The software backend keeps its root keys here and each threshold custodian its shares. The file
is a 16-byte header and fixed 64-byte slots, so that destroying a secret overwrites its own bytes
in place (``pwrite`` over the same bytes, never a new file) and fsyncs::

    header = magic (8) | generation (8, big-endian, bumped by every change)
    slot = state (1) | tag (1) | reserved (14) | reference (16) | secret (32)

A slot's state is live (1), destroyed (0) or the file's *binding* (2): at most one slot that
names the key store this file belongs to (``KeyStoreBinding``, keys/backend.py), written in the
same ``pwrite``s and fsync as the slots a change makes.

A missing file is an error unless the caller creates it (``create=True``, at ``oblivio init``):
a key file that vanished is never silently replaced by an empty one (docs/key-erasure.md).

Honest limitation (docs/key-erasure.md): flash media and copy-on-write file systems may keep the
old blocks of an overwritten slot; a node that needs strong level-1 claims uses an HSM.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
_BINDING = 2


@dataclass(frozen=True)
class Slot:
    """One live secret: a 1-byte tag (a purpose, a share index) and 32 secret bytes."""

    tag: int
    secret: bytes


class KeyFile:
    """Secret slots in a local file, guarded by an advisory lock between processes.

    One descriptor stays open for the file's life: reads and writes are ``pread``/``pwrite``
    under ``flock`` (shared to read, exclusive to change), so an operation costs its system
    calls and, for a change, one fsync."""

    def __init__(self, path: Path, magic: bytes, *, create: bool = False) -> None:
        if len(magic) != 8:
            raise ValueError("key file magic: expected 8 bytes")
        self.path = path
        self.magic = magic
        self._lock = threading.Lock()
        self._cache: dict[bytes, Slot] = {}
        self._binding: tuple[bytes, bytes] | None = None
        self._cache_generation: bytes | None = None
        if not path.exists():
            if not create:
                raise KeyBackendError(
                    f"key file: {path} is missing (a key store is never re-made empty: restore "
                    "it, or see docs/key-erasure.md)"
                )
            self._create_file()
        try:
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise KeyBackendError(f"key file: cannot open {self.path}: {e}") from e
        if os.pread(self._fd, len(magic), 0) != magic:
            os.close(self._fd)
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
        fsync_directory(self.path.parent)

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[int]:
        """The open descriptor under this process's lock and the file lock."""
        with self._lock:
            if self._fd < 0:
                raise KeyBackendError(f"key file: {self.path} is closed")
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            except OSError as e:
                raise KeyBackendError(f"key file: cannot lock {self.path}: {e}") from e
            try:
                yield self._fd
            except OSError as e:
                raise KeyBackendError(f"key file: {self.path}: {e}") from e
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _read(self, fd: int) -> bytes:
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        self._cache, self._binding = self._parse(data)
        self._cache_generation = data[len(self.magic) : HEADER_SIZE]
        return data

    def _refresh(self) -> None:
        """Re-read the file when any process has changed it, as the header's counter shows."""
        with self._lock:
            if self._fd < 0:
                raise KeyBackendError(f"key file: {self.path} is closed")
            try:
                generation = os.pread(self._fd, 8, len(self.magic))
            except OSError as e:
                raise KeyBackendError(f"key file: {self.path}: {e}") from e
            if generation == self._cache_generation:
                return
        with self._locked(write=False) as fd:
            self._read(fd)

    def live(self) -> dict[bytes, Slot]:
        """Live slots by reference (re-read when the file changed)."""
        self._refresh()
        return self._cache

    def binding(self) -> tuple[bytes, bytes] | None:
        """The binding slot's reference and secret, or None if the file has none."""
        self._refresh()
        return self._binding

    def get(self, reference: bytes) -> Slot | None:
        """The live slot ``reference`` names, or None."""
        return self.live().get(reference)

    def add(self, reference: bytes, tag: int, secret: bytes) -> None:
        """Write a live slot, reusing a destroyed one if any (so the file stays as small as the
        live set), and fsync before returning."""
        self.replace(None, reference, tag, secret)

    def destroy(self, reference: bytes) -> None:
        """Overwrite every slot of ``reference`` with zeros in place and fsync; then confirm by
        reading the file again that no live slot names it. Raises KeyBackendError otherwise."""
        self.replace(reference, None)

    def replace(
        self,
        destroyed: bytes | None,
        reference: bytes | None,
        tag: int = 0,
        secret: bytes = b"",
        *,
        binding: Callable[[tuple[bytes, bytes] | None], tuple[bytes, bytes] | None] | None = None,
    ) -> None:
        """Destroy ``destroyed`` (as ``destroy``) and add ``reference`` (as ``add``) with one
        write and one fsync: the new secret takes the first destroyed slot, so it overwrites
        the old secret in place. A live ``reference`` is left as it is (adding is idempotent).
        ``binding``, if given, maps the current binding slot (reference, secret) to the one to
        write in the same fsync (None: leave it). The destruction is confirmed by reading the
        file again; KeyBackendError if any slot of ``destroyed`` is still live."""
        if reference is not None and (
            len(reference) != REFERENCE_SIZE or len(secret) != SECRET_SIZE or not 0 <= tag < 256
        ):
            raise ValueError("key file slot: expected a 16-byte reference and a 32-byte secret")
        with self._locked(write=True) as fd:
            data = bytearray(os.pread(fd, os.fstat(fd).st_size, 0))
            if not data.startswith(self.magic):
                raise KeyBackendError(f"key file: header of {self.path} is damaged")
            slots, current = self._parse(bytes(data))
            if reference is not None and reference in slots:
                reference = None
            writes: list[tuple[int, bytes]] = []
            end = len(data) - (len(data) - HEADER_SIZE) % SLOT_SIZE
            if binding is not None and (new_binding := binding(current)) is not None:
                at = next(
                    (
                        offset
                        for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE)
                        if data[offset] == _BINDING
                    ),
                    None,
                )
                if at is None:
                    at, end = end, end + SLOT_SIZE
                writes.append((at, _slot(_BINDING, 0, new_binding[0], new_binding[1])))
            for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
                if (
                    destroyed is not None
                    and data[offset] == _LIVE
                    and data[offset + 16 : offset + 32] == destroyed
                ):
                    writes.append((offset, _slot(_DESTROYED, 0, destroyed, None)))
                    data[offset] = _DESTROYED
            if reference is not None:
                free = next(
                    (
                        offset
                        for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE)
                        if data[offset] == _DESTROYED
                    ),
                    end,
                )
                # The first destroyed slot (the one just destroyed, if no older one is free):
                # the new slot is written over it instead of its zeros.
                writes = [(o, b) for o, b in writes if o != free]
                writes.append((free, _slot(_LIVE, tag, reference, secret)))
            if writes:
                generation = int.from_bytes(data[len(self.magic) : HEADER_SIZE], "big") + 1
                writes.append((len(self.magic), generation.to_bytes(8, "big")))
                for offset, content in writes:
                    os.pwrite(fd, content, offset)
                os.fsync(fd)
            self._read(fd)
            if destroyed is not None and destroyed in self._cache:
                raise KeyBackendError(
                    f"key file: slot {destroyed.hex()} still live after destruction"
                )

    def _parse(self, data: bytes) -> tuple[dict[bytes, Slot], tuple[bytes, bytes] | None]:
        if not data.startswith(self.magic):
            raise KeyBackendError(f"key file: header of {self.path} is damaged")
        slots: dict[bytes, Slot] = {}
        binding = None
        for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
            slot = data[offset : offset + SLOT_SIZE]
            if slot[0] == _LIVE:
                slots[slot[16:32]] = Slot(slot[1], slot[32:64])
            elif slot[0] == _BINDING:
                binding = (slot[16:32], slot[32:64])
        return slots, binding

    def close(self) -> None:
        """Release the file descriptor."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _slot(state: int, tag: int, reference: bytes, secret: bytes | None) -> bytes:
    """``state (1) | tag (1) | reserved (14) | reference (16) | secret (32)``; a destroyed slot
    keeps its reference (so a confirmation can name it) and zeros for the secret."""
    return bytes([state, tag]) + bytes(14) + reference + (secret or bytes(SECRET_SIZE))


def fsync_directory(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
