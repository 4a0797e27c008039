"""C2SP signed-note keys (https://c2sp.org/signed-note): verifier key strings and key hashes.

A verifier key is ``name+hex(keyhash)+base64(0x01 || ed25519 public key)`` where
``keyhash = SHA-256(name || 0x0A || 0x01 || public key)[:4]``.
"""

from __future__ import annotations

from oblivio.core.encoding import b64_std_encode
from oblivio.core.hashing import sha256

ED25519_ALGORITHM = 0x01


def note_key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash that prefixes Ed25519 note signatures by this key."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_ALGORITHM]) + public_key)[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The C2SP verifier key string of an Ed25519 key under ``name``."""
    encoded = b64_std_encode(bytes([ED25519_ALGORITHM]) + public_key)
    return f"{name}+{note_key_hash(name, public_key).hex()}+{encoded}"
