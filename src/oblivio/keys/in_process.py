"""Wrapping for backends whose root keys are used in this process (software, threshold).

The key file or the custodians' shares give the root key back for each operation; wrapping and
unwrapping are then the core AES-GCM envelope. Every unwrap failure, a missing root included, is
the one opaque IntegrityError.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from oblivio.core.envelope import NONCE_SIZE, unwrap_key, unwrap_keys, wrap_key, wrap_keys
from oblivio.core.errors import IntegrityError, KeyBackendError


class InProcessRootWrapping:
    """Mixin: ``wrap``/``unwrap`` (single and batched) and ``has_root_key`` on top of the
    subclass's ``_root_key`` (the live root's bytes, or None) and ``_missing_root`` (why a
    root cannot be used, for the wrap error)."""

    def _root_key(self, key_ref: str) -> bytes | None:
        raise NotImplementedError

    def _missing_root(self, key_ref: str) -> str:
        raise NotImplementedError

    def _live_root(self, key_ref: str) -> bytes:
        root = self._root_key(key_ref)
        if root is None:
            raise KeyBackendError(self._missing_root(key_ref))
        return root

    def has_root_key(self, key_ref: str) -> bool:
        """Whether ``key_ref`` can still be used."""
        return self._root_key(key_ref) is not None

    def wrap(self, key_ref: str, key: bytes, context: bytes) -> bytes:
        """Wrap ``key`` under the root, bound to ``context``; KeyBackendError if it is gone."""
        return wrap_key(self._live_root(key_ref), secrets.token_bytes(NONCE_SIZE), key, context)

    def wrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Wrap each ``(key, context)`` under the root with one root lookup."""
        root = self._live_root(key_ref)
        return wrap_keys(root, secrets.token_bytes(NONCE_SIZE * len(items)), items)

    def unwrap(self, key_ref: str, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap; the opaque IntegrityError if the root is gone or anything does not match."""
        root = self._root_key(key_ref)
        if root is None:
            raise IntegrityError()
        return unwrap_key(root, wrapped, context)

    def unwrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Unwrap each ``(wrapped, context)``; the opaque IntegrityError if any fails."""
        root = self._root_key(key_ref)
        if root is None:
            raise IntegrityError()
        return unwrap_keys(root, items)
