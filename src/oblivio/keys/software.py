"""The software wrapping-key backend: root keys in a small file of the node home (mode 0600).

The file is a 16-byte header and fixed 64-byte slots, so that destroying a key overwrites its
own bytes in place and fsyncs, without rewriting the file::

    header = magic "OBLVSWK1" (8) | generation (8, big-endian, bumped by every change)
    slot = state (1) | purpose (1) | reserved (14) | reference (16) | key (32)

Honest limitation (README): flash media and copy-on-write file systems may keep the old blocks of
an overwritten key; a node that needs strong level-1 claims uses an HSM backend.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from oblivio.core.envelope import KEY_SIZE, NONCE_SIZE, unwrap_key, wrap_key
from oblivio.core.errors import IntegrityError, InvalidKeysUriError, KeyBackendError
from oblivio.keys.backend import DestructionEvidence, RootKeyPurpose

MAGIC = b"OBLVSWK1"
HEADER_SIZE = 16
SLOT_SIZE = 64
_LIVE = 1
_DESTROYED = 0
_PURPOSES: dict[RootKeyPurpose, int] = {"wrap": 1, "escrow": 2}
_REF_PREFIX = "sw-"


def software_key_file(uri: str, home: Path) -> Path:
    """``software:`` → ``home/keys/software-root-keys``; ``software:/abs/file`` names a file."""
    parts = urlsplit(uri)
    if parts.netloc or parts.query or parts.fragment:
        raise InvalidKeysUriError(f"keys URI: expected software: or software:/PATH, got {uri!r}")
    if parts.path:
        return Path(parts.path)
    return home / "keys" / "software-root-keys"


class SoftwareBackend:
    """Root keys in a local file, guarded by an advisory lock between processes."""

    scheme = "software"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._cache_generation: bytes | None = None
        if not path.exists():
            self._create_file()
        try:
            self._reader = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise KeyBackendError(f"software keys: cannot read {self.path}: {e}") from e
        if os.pread(self._reader, len(MAGIC), 0) != MAGIC:
            raise KeyBackendError(f"software keys: {self.path} is not an oblivio key file")

    def _create_file(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as e:
            raise KeyBackendError(f"software keys: cannot create {self.path}: {e}") from e
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + (0).to_bytes(8, "big"))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.path.parent)

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[BinaryIO]:
        try:
            f = open(self.path, "r+b" if write else "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise KeyBackendError(f"software keys: cannot open {self.path}: {e}") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if write else fcntl.LOCK_SH)
            yield f
        finally:
            f.close()

    def _slots(self) -> dict[str, tuple[int, bytes]]:
        """Live root keys by reference, with their purpose code; re-read when another process
        (or this one) has changed the file, as its header's generation counter shows."""
        generation = os.pread(self._reader, 8, len(MAGIC))
        if generation != self._cache_generation:
            with self._locked(write=False) as f:
                data = f.read()
            self._cache = _parse_slots(data)
            self._cache_generation = data[len(MAGIC) : HEADER_SIZE]
        return self._cache

    def _bump_generation(self, f: BinaryIO) -> None:
        f.seek(len(MAGIC))
        generation = int.from_bytes(f.read(8), "big") + 1
        f.seek(len(MAGIC))
        f.write(generation.to_bytes(8, "big"))

    def close(self) -> None:
        """Release the file descriptor kept for generation checks."""
        if self._reader >= 0:
            os.close(self._reader)
            self._reader = -1

    def active_root_key(self, purpose: RootKeyPurpose) -> str:
        with self._lock:
            code = _PURPOSES[purpose]
            live = [ref for ref, (p, _) in self._slots().items() if p == code]
        return live[-1] if live else self.create_root_key(purpose)

    def create_root_key(self, purpose: RootKeyPurpose) -> str:
        reference = secrets.token_bytes(16)
        key = secrets.token_bytes(KEY_SIZE)
        slot = bytes([_LIVE, _PURPOSES[purpose]]) + bytes(14) + reference + key
        with self._lock, self._locked(write=True) as f:
            f.seek(0, os.SEEK_END)
            f.write(slot)
            self._bump_generation(f)
            f.flush()
            os.fsync(f.fileno())
        return _REF_PREFIX + reference.hex()

    def _root_key(self, key_ref: str) -> bytes | None:
        with self._lock:
            entry = self._slots().get(key_ref)
        return None if entry is None else entry[1]

    def has_root_key(self, key_ref: str) -> bool:
        return self._root_key(key_ref) is not None

    def wrap(self, key_ref: str, key: bytes, context: bytes) -> bytes:
        root = self._root_key(key_ref)
        if root is None:
            raise KeyBackendError(f"software keys: no live root key {key_ref}")
        return wrap_key(root, secrets.token_bytes(NONCE_SIZE), key, context)

    def unwrap(self, key_ref: str, wrapped: bytes, context: bytes) -> bytes:
        root = self._root_key(key_ref)
        if root is None:
            raise IntegrityError()
        return unwrap_key(root, wrapped, context)

    def destroy_root_key(self, key_ref: str) -> DestructionEvidence:
        """Overwrite the key's slot with zeros in place and fsync; then confirm it is gone."""
        if not key_ref.startswith(_REF_PREFIX):
            raise KeyBackendError(f"software keys: not a software key reference: {key_ref}")
        reference = bytes.fromhex(key_ref.removeprefix(_REF_PREFIX))
        with self._lock, self._locked(write=True) as f:
            data = f.read()
            for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
                if data[offset + 16 : offset + 32] == reference and data[offset] == _LIVE:
                    f.seek(offset)
                    f.write(bytes([_DESTROYED, 0]) + bytes(14) + reference + bytes(KEY_SIZE))
                    self._bump_generation(f)
                    f.flush()
                    os.fsync(f.fileno())
        if self.has_root_key(key_ref):
            raise KeyBackendError(f"software keys: {key_ref} still readable after destruction")
        return DestructionEvidence(
            backend=self.scheme,
            key_ref=key_ref,
            details={"method": "overwrite-in-place+fsync", "file": str(self.path)},
        )


def _parse_slots(data: bytes) -> dict[str, tuple[int, bytes]]:
    if not data.startswith(MAGIC):
        raise KeyBackendError("software keys: key file header is damaged")
    slots: dict[str, tuple[int, bytes]] = {}
    for offset in range(HEADER_SIZE, len(data) - SLOT_SIZE + 1, SLOT_SIZE):
        slot = data[offset : offset + SLOT_SIZE]
        if slot[0] == _LIVE:
            slots[_REF_PREFIX + slot[16:32].hex()] = (slot[1], slot[32:64])
    return slots


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
