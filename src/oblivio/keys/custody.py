"""Custody of artifacts' capability keys: wrapping them for storage and unwrapping them for use.

``KeyCustody`` is the interface the node's vault talks to; the key tree (DESIGN.md §5) implements
it too. ``DirectCustody`` is the depth-1 case: each capability key is wrapped straight under the
backend's active root key, bound to the artifact id and the capability by the wrap's AAD, so a
wrapped key moved to another artifact or capability does not unwrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from oblivio.core.identifiers import ArtifactId, Capability
from oblivio.keys.backend import RootKeyPurpose, WrappingKeyBackend


@dataclass(frozen=True)
class WrappedKey:
    """One capability key as it is stored: wrapped, with the root that wraps it."""

    artifact_id: ArtifactId
    capability: Capability
    key_ref: str
    wrapped: bytes


class KeyCustody(Protocol):
    """Wraps and unwraps capability keys; unwrap failures are the opaque IntegrityError."""

    def wrap_capability_keys(
        self, artifact_id: ArtifactId, keys: Mapping[Capability, bytes]
    ) -> list[WrappedKey]:
        """Wrap each capability key of one artifact for storage."""

    def unwrap_capability_key(self, wrapped: WrappedKey) -> bytes:
        """Return the plain capability key; raise IntegrityError if it cannot be unwrapped."""


def wrap_context(artifact_id: ArtifactId, capability: Capability) -> bytes:
    """The AAD context that binds a wrapped key to its artifact and capability."""
    return bytes.fromhex(artifact_id) + b"/" + capability.encode("ascii")


def _purpose_of(capability: Capability) -> RootKeyPurpose:
    return "escrow" if capability == "recover" else "wrap"


class DirectCustody:
    """Capability keys wrapped directly under the backend's active root keys."""

    def __init__(self, backend: WrappingKeyBackend) -> None:
        self.backend = backend

    def wrap_capability_keys(
        self, artifact_id: ArtifactId, keys: Mapping[Capability, bytes]
    ) -> list[WrappedKey]:
        wrapped = []
        for capability, key in keys.items():
            key_ref = self.backend.active_root_key(_purpose_of(capability))
            blob = self.backend.wrap(key_ref, key, wrap_context(artifact_id, capability))
            wrapped.append(WrappedKey(artifact_id, capability, key_ref, blob))
        return wrapped

    def unwrap_capability_key(self, wrapped: WrappedKey) -> bytes:
        return self.backend.unwrap(
            wrapped.key_ref, wrapped.wrapped, wrap_context(wrapped.artifact_id, wrapped.capability)
        )
