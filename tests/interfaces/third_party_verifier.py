"""A minimal third-party verifier of oblivio tombstones, written from seed 002 §23.2.4 alone.

It imports nothing from oblivio: only the standard library, ``rfc8785`` and ``cryptography``.
Given a record and the org's manifest (as served at GET /v1/manifest), it picks the key by
``key_id``, checks that ``key_id`` is the SHA-256 of that key, and verifies the Ed25519 signature
over the JCS bytes of the record without ``signature`` and (for tombstones) ``reason``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(record: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Raise if ``record`` (a tombstone or a revocation) is not validly signed by its key."""
    entry = next(k for k in manifest["keys"] if k["key_id"] == record["key_id"])
    public_key = _b64url(entry["public_key_b64"])
    if hashlib.sha256(public_key).hexdigest() != record["key_id"]:
        raise ValueError("key_id is not the SHA-256 of the manifest's public key")
    excluded = {"signature", "reason"} if record["id"].startswith("tomb_") else {"signature"}
    body = {k: v for k, v in record.items() if k not in excluded}
    Ed25519PublicKey.from_public_bytes(public_key).verify(
        _b64url(record["signature"]), rfc8785.dumps(body)
    )
