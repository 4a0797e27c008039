"""The software wrapping-key backend: root keys in a small key file of the node home.

The file is a ``KeyFile`` (keys/key_file.py): destroying a root key overwrites its slot in place
and fsyncs, then re-reads the file to confirm the key is gone.

Honest limitation (docs/key-erasure.md): flash media and copy-on-write file systems may keep the
old blocks of an overwritten key; a node that needs strong level-1 claims uses an HSM backend.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from oblivio.core.envelope import KEY_SIZE
from oblivio.core.errors import InvalidKeysUriError, KeyBackendError
from oblivio.keys.backend import DestructionEvidence, KeyStoreBinding, RootKeyPurpose
from oblivio.keys.in_process import InProcessRootWrapping
from oblivio.keys.key_file import REFERENCE_SIZE, KeyFile, parse_key_reference

MAGIC = b"OBLVSWK1"
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


def _reference(key_ref: str) -> bytes | None:
    return parse_key_reference(key_ref, _REF_PREFIX)


class SoftwareBackend(InProcessRootWrapping):
    """Root keys in a local key file; safe to share between threads and processes."""

    scheme = "software"

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._file = KeyFile(path, MAGIC, create=create)

    def close(self) -> None:
        """Release the key file."""
        self._file.close()

    def new_root_reference(self) -> str:
        return _REF_PREFIX + secrets.token_hex(REFERENCE_SIZE)

    def create_root_key(
        self, purpose: RootKeyPurpose, key_ref: str | None = None, *, generation: int = 0
    ) -> str:
        """Add the key's slot and raise the binding's generation in one write and fsync."""
        key_ref = key_ref or self.new_root_reference()
        self._file.replace(
            None,
            self._reference_of(key_ref),
            _PURPOSES[purpose],
            secrets.token_bytes(KEY_SIZE),
            binding=_advance(generation),
        )
        return key_ref

    def binding(self) -> KeyStoreBinding | None:
        slot = self._file.binding()
        return None if slot is None else KeyStoreBinding.from_slot(*slot)

    def bind(self, binding: KeyStoreBinding) -> None:
        self._file.replace(None, None, binding=lambda _current: binding.to_slot())

    def _missing_root(self, key_ref: str) -> str:
        return f"software keys: no live root key {key_ref}"

    def _root_key(self, key_ref: str) -> bytes | None:
        reference = _reference(key_ref)
        slot = None if reference is None else self._file.get(reference)
        return None if slot is None else slot.secret

    def live_root_keys(self) -> set[str]:
        return {_REF_PREFIX + reference.hex() for reference in self._file.live()}

    def destroy_root_key(self, key_ref: str) -> DestructionEvidence:
        """Overwrite the key's slot with zeros in place and fsync; then confirm it is gone."""
        self._file.destroy(self._reference_of(key_ref))
        return self._evidence(key_ref)

    def rotate_root_key(
        self,
        key_ref: str,
        purpose: RootKeyPurpose,
        new_ref: str | None = None,
        *,
        generation: int = 0,
    ) -> tuple[DestructionEvidence, str]:
        """Destroy ``key_ref`` and add a fresh root key (and raise the binding's generation)
        with one write and one fsync: the new key goes into a destroyed slot (the old key's
        own, unless an older one is free), so it overwrites the old key in place; then confirm
        the old key is gone."""
        new_ref = new_ref or self.new_root_reference()
        self._file.replace(
            self._reference_of(key_ref),
            self._reference_of(new_ref),
            _PURPOSES[purpose],
            secrets.token_bytes(KEY_SIZE),
            binding=_advance(generation),
        )
        return self._evidence(key_ref), new_ref

    def _reference_of(self, key_ref: str) -> bytes:
        reference = _reference(key_ref)
        if reference is None:
            raise KeyBackendError(f"software keys: not a software key reference: {key_ref}")
        return reference

    def _evidence(self, key_ref: str) -> DestructionEvidence:
        return DestructionEvidence(
            backend=self.scheme,
            key_ref={"key_id": key_ref},
            evidence={
                "method": "overwrite-in-place+fsync",
                "confirmed_by": "key file re-read: no live slot",
                "limitation": "flash media may keep overwritten blocks (docs/key-erasure.md)",
            },
        )


def _advance(
    generation: int,
) -> Callable[[tuple[bytes, bytes] | None], tuple[bytes, bytes] | None]:
    """A key file binding update raising the generation to ``generation`` (an unbound file,
    or one already there, is left as it is)."""

    def update(current: tuple[bytes, bytes] | None) -> tuple[bytes, bytes] | None:
        if current is None:
            return None
        binding = KeyStoreBinding.from_slot(*current)
        return None if binding.generation >= generation else binding.advanced(generation).to_slot()

    return update
