"""The wrapping-key backend interface (DESIGN.md §5) and its registry by URI scheme.

A backend holds root keys that never leave it: it creates them, wraps and unwraps key material
under them, and destroys them. Backends are chosen by URI (``software:``; ``pkcs11:`` and
``threshold:`` come with the key tree) and imported lazily, so an optional dependency is needed
only by the node that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from oblivio.core.errors import InvalidKeysUriError

RootKeyPurpose = Literal["wrap", "escrow"]
"""``wrap`` roots protect decrypt/prove keys; ``escrow`` roots protect the recover copy (§4)."""


@dataclass(frozen=True)
class DestructionEvidence:
    """What a backend can show about one destroyed root key (bound into destruction receipts)."""

    backend: str
    key_ref: str
    details: dict[str, str] = field(default_factory=dict)


class WrappingKeyBackend(Protocol):
    """Root keys that live only in the backend; every unwrap failure is IntegrityError."""

    scheme: str

    def active_root_key(self, purpose: RootKeyPurpose) -> str:
        """The reference of the newest live root key for ``purpose``, creating one if none."""

    def create_root_key(self, purpose: RootKeyPurpose) -> str:
        """Make a fresh root key inside the backend; return its reference."""

    def wrap(self, key_ref: str, key: bytes, context: bytes) -> bytes:
        """Wrap ``key`` under the root ``key_ref``, bound to ``context``. Raises KeyBackendError."""

    def unwrap(self, key_ref: str, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap; raise IntegrityError if the root is gone, or blob or context do not match."""

    def destroy_root_key(self, key_ref: str) -> DestructionEvidence:
        """Destroy the root key so that nothing it wrapped can be unwrapped again."""

    def has_root_key(self, key_ref: str) -> bool:
        """Whether ``key_ref`` names a live root key."""

    def close(self) -> None:
        """Release the backend's resources (files, sessions)."""


def check_keys_uri(uri: str) -> str:
    """Return the backend scheme a keys URI names without opening it; raise InvalidKeysUriError."""
    scheme = urlsplit(uri).scheme if isinstance(uri, str) else ""
    if scheme == "software":
        from oblivio.keys.software import software_key_file

        software_key_file(uri, Path())
        return scheme
    raise InvalidKeysUriError(f"keys URI: expected software: (the embedded default), got {uri!r}")


def open_key_backend(uri: str, home: Path) -> WrappingKeyBackend:
    """Open the backend that ``uri`` names, with node-local files under ``home``.

    ``software:`` keeps root keys in ``home/keys/software-root-keys``. Raises
    InvalidKeysUriError for an unknown or malformed URI, KeyBackendError when the backend
    cannot be opened.
    """
    check_keys_uri(uri)
    from oblivio.keys.software import SoftwareBackend, software_key_file

    return SoftwareBackend(software_key_file(uri, home))
