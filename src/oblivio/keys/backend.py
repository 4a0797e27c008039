"""The wrapping-key backend interface (DESIGN.md §5) and its registry by URI scheme.

A backend holds root keys that never leave it: it creates them, wraps and unwraps key material
under them, and destroys them. Backends are chosen by URI and imported lazily, so an optional
dependency (python-pkcs11) is needed only by the node that uses it:

- ``software:`` or ``software:/PATH`` — root keys in a key file of the node home;
- ``pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=…`` (or
  ``pin-source=/file``) — an HSM token (RFC 7512 style);
- ``threshold:?n=3&t=2`` or ``threshold:/DIR?n=3&t=2`` — the root key split among ``n``
  custodians, ``t`` of whom are needed to use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import InvalidKeysUriError

RootKeyPurpose = Literal["wrap", "escrow"]
"""``wrap`` roots protect decrypt/prove keys; ``escrow`` roots protect the recover copy (§4)."""

SCHEMES = ("software", "pkcs11", "threshold")


BINDING_NODE_SIZE = 24
"""Bytes of the node's key id a binding keeps (192 bits: a key file slot has 32 bytes)."""


def binding_node(node_key_id: str) -> str:
    """The ``node`` field of a binding for a node of this key id (hex)."""
    return node_key_id[: 2 * BINDING_NODE_SIZE]


@dataclass(frozen=True)
class KeyStoreBinding:
    """What a key store records of whom it belongs to (DESIGN.md §5; docs/adr/0016): its own
    id, the node it serves and a generation that only grows. The database records the same;
    a node whose database and key store disagree refuses to open (node/key_store.py).

    ``node`` is the first ``BINDING_NODE_SIZE`` bytes of the node's key id, in hex. The
    generation is raised (never lowered) before each root key is made, to the generation the
    database planned that root at."""

    store_id: str
    node: str
    generation: int

    def to_slot(self) -> tuple[bytes, bytes]:
        """The 16-byte reference and 32-byte secret of a key file's binding slot."""
        return bytes.fromhex(self.store_id), bytes.fromhex(self.node) + self.generation.to_bytes(
            8, "big"
        )

    @classmethod
    def from_slot(cls, reference: bytes, secret: bytes) -> KeyStoreBinding:
        """Read a key file's binding slot (``to_slot``)."""
        return cls(
            reference.hex(),
            secret[:BINDING_NODE_SIZE].hex(),
            int.from_bytes(secret[BINDING_NODE_SIZE : BINDING_NODE_SIZE + 8], "big"),
        )

    def advanced(self, generation: int) -> KeyStoreBinding:
        """This binding at ``generation`` or its own, whichever is higher."""
        return KeyStoreBinding(self.store_id, self.node, max(self.generation, generation))


@dataclass(frozen=True)
class DestructionEvidence:
    """What a backend can show about one destroyed root key: the receipt's ``key_ref`` and
    ``evidence`` objects (DESIGN.md §15)."""

    backend: str
    key_ref: Mapping[str, JsonValue]
    evidence: Mapping[str, JsonValue] = field(default_factory=dict)


class WrappingKeyBackend(Protocol):
    """Root keys that live only in the backend; every unwrap failure is IntegrityError."""

    scheme: str

    def new_root_reference(self) -> str:
        """A fresh reference for a root key not made yet, so that the database can name it
        before the backend makes it (write-ahead; docs/adr/0016). Makes nothing."""

    def create_root_key(
        self, purpose: RootKeyPurpose, key_ref: str | None = None, *, generation: int = 0
    ) -> str:
        """Make a fresh root key inside the backend, durably; return its reference.

        ``key_ref`` (from ``new_root_reference``) names it; making a root that exists already
        succeeds and changes nothing (a retry after a crash). The binding's generation is
        raised to ``generation`` first (or in the same durable write). Raises KeyBackendError.
        """

    def wrap(self, key_ref: str, key: bytes, context: bytes) -> bytes:
        """Wrap ``key`` under the root ``key_ref``, bound to ``context``. Raises KeyBackendError."""

    def wrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Wrap each ``(key, context)`` under ``key_ref`` with one root lookup (batch puts)."""

    def unwrap(self, key_ref: str, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap; raise IntegrityError if the root is gone, or blob or context do not match."""

    def unwrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Unwrap each ``(wrapped, context)`` with one root lookup; IntegrityError if any fails."""

    def destroy_root_key(self, key_ref: str) -> DestructionEvidence:
        """Destroy the root key so that nothing it wrapped can be unwrapped again, and confirm
        that it is gone. Idempotent: destroying a key already gone succeeds with evidence of its
        absence. Raises KeyBackendError if destruction cannot be confirmed."""

    def rotate_root_key(
        self,
        key_ref: str,
        purpose: RootKeyPurpose,
        new_ref: str | None = None,
        *,
        generation: int = 0,
    ) -> tuple[DestructionEvidence, str]:
        """Destroy ``key_ref`` as ``destroy_root_key`` does and make a fresh root key for
        ``purpose`` as ``create_root_key`` does (named ``new_ref``, at ``generation``), in one
        durable step where the backend can (the software key file: one write and one fsync).
        Returns the destruction's evidence and the new key's reference. Raises KeyBackendError
        if either part fails (the destruction may then have happened; repeating it is
        harmless)."""

    def has_root_key(self, key_ref: str) -> bool:
        """Whether ``key_ref`` names a usable root key (for threshold: ``t`` shares reachable)."""

    def live_root_keys(self) -> set[str]:
        """References of every root key of this node of which anything is left (for threshold:
        any share)."""

    def binding(self) -> KeyStoreBinding | None:
        """The key store's binding, or None if it has none (a new or pre-binding store).
        Raises KeyBackendError if it cannot be read."""

    def bind(self, binding: KeyStoreBinding) -> None:
        """Record ``binding`` durably, replacing the one there (``oblivio init``, adoption of a
        pre-binding store, ``oblivio restore-backup``). Raises KeyBackendError."""

    def close(self) -> None:
        """Release the backend's resources (files, sessions)."""


def raise_binding_generation(backend: WrappingKeyBackend, generation: int) -> None:
    """Raise a bound key store's generation to ``generation`` (never lower it) with one
    binding write, for backends that keep the binding apart from their root keys (pkcs11,
    threshold; the software key file writes it with the root in one fsync)."""
    current = backend.binding()
    if current is not None and current.generation < generation:
        backend.bind(current.advanced(generation))


def check_keys_uri(uri: str) -> str:
    """Return the backend scheme a keys URI names without opening it; raise InvalidKeysUriError."""
    scheme = urlsplit(uri).scheme if isinstance(uri, str) else ""
    if scheme == "software":
        from oblivio.keys.software import software_key_file

        software_key_file(uri, Path())
    elif scheme == "pkcs11":
        from oblivio.keys.pkcs11 import parse_pkcs11_uri

        parse_pkcs11_uri(uri)
    elif scheme == "threshold":
        from oblivio.keys.threshold import parse_threshold_uri

        parse_threshold_uri(uri, Path())
    else:
        raise InvalidKeysUriError(
            f"keys URI: expected software:, pkcs11: or threshold:, got {uri!r}"
        )
    return scheme


def open_key_backend(uri: str, home: Path, *, create: bool = False) -> WrappingKeyBackend:
    """Open the backend that ``uri`` names, with node-local files under ``home``.

    ``software:`` keeps root keys in ``home/keys/software-root-keys``; ``threshold:`` keeps its
    custodians under ``home/keys/custodians`` unless the URI names a directory. Local files are
    made only with ``create`` (``oblivio init``): a missing one is an error, never a new empty
    store. Raises InvalidKeysUriError for an unknown or malformed URI, KeyBackendError
    when the backend cannot be opened.
    """
    scheme = check_keys_uri(uri)
    if scheme == "pkcs11":
        from oblivio.keys.pkcs11 import Pkcs11Backend, parse_pkcs11_uri

        return Pkcs11Backend(parse_pkcs11_uri(uri))
    if scheme == "threshold":
        from oblivio.keys.threshold import ThresholdBackend, parse_threshold_uri

        return ThresholdBackend.open(parse_threshold_uri(uri, home), create=create)
    from oblivio.keys.software import SoftwareBackend, software_key_file

    return SoftwareBackend(software_key_file(uri, home), create=create)
