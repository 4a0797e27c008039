"""SHA-256 with named domain-separation prefixes (DESIGN.md §3, §4, §6, §7).

Each prefix names one use of the hash, so that a digest made for one purpose can never be
presented as one made for another.
"""

from __future__ import annotations

import hashlib
from typing import NewType

Digest = NewType("Digest", bytes)
"""32 bytes of SHA-256 output."""

HASH_SIZE = 32

# RFC 6962 / RFC 9162 leaf and interior-node prefixes, shared by the log and the SMT.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

ARTIFACT_AAD_PREFIX = b"oblivio/artifact/v1"
DEK_COMMIT_PREFIX = b"oblivio/dek-commit/v1"
KEY_WRAP_AAD_PREFIX = b"oblivio/key-wrap/v1"
API_KEY_PREFIX = b"oblivio/api-key/v1"


def sha256(data: bytes) -> Digest:
    """Return SHA-256 of ``data``."""
    return Digest(hashlib.sha256(data).digest())


def sha256_concat(*parts: bytes) -> Digest:
    """Return SHA-256 over the concatenation of ``parts`` without building the joined bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return Digest(h.digest())


def parse_hex_digest(text: str, what: str) -> Digest:
    """Parse a 64-character lower-case hex digest; raise ValueError naming ``what`` otherwise."""
    if len(text) != 2 * HASH_SIZE or text != text.lower():
        raise ValueError(f"{what}: expected 64 lower-case hex characters, got {text!r}")
    try:
        return Digest(bytes.fromhex(text))
    except ValueError as e:
        raise ValueError(f"{what}: expected 64 lower-case hex characters, got {text!r}") from e
