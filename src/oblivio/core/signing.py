"""Ed25519 signing keys and their ids (DESIGN.md §3, seed 002 §23.2.1).

``key_id`` is the lower-case hex SHA-256 of the raw 32-byte public key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from oblivio.core.errors import VerificationError
from oblivio.core.hashing import sha256

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def key_id_of(public_key: bytes) -> str:
    """Return the key id of a raw Ed25519 public key: hex SHA-256 of its 32 bytes."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"Ed25519 public key: expected 32 bytes, got {len(public_key)}")
    return sha256(public_key).hex()


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key."""

    public_bytes: bytes

    def __post_init__(self) -> None:
        if len(self.public_bytes) != PUBLIC_KEY_SIZE:
            raise ValueError(f"Ed25519 public key: expected 32 bytes, got {len(self.public_bytes)}")

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the raw public key."""
        return key_id_of(self.public_bytes)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Return if ``signature`` is this key's Ed25519 signature of ``message``.

        Raises VerificationError otherwise (including malformed keys or signatures).
        """
        try:
            Ed25519PublicKey.from_public_bytes(self.public_bytes).verify(signature, message)
        except (InvalidSignature, ValueError) as e:
            raise VerificationError(
                f"Ed25519 signature does not verify under key {self.key_id}"
            ) from e


class SigningKey:
    """An Ed25519 private key, made from a 32-byte seed (RFC 8032 §5.1.5)."""

    __slots__ = ("_private", "_seed", "verify_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"Ed25519 seed: expected 32 bytes, got {len(seed)}")
        self._seed = bytes(seed)
        self._private = Ed25519PrivateKey.from_private_bytes(self._seed)
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verify_key = VerifyKey(public)

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the raw public key."""
        return self.verify_key.key_id

    @property
    def seed(self) -> bytes:
        """The 32-byte private seed; handle as a secret."""
        return self._seed

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte deterministic Ed25519 signature of ``message``."""
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id})"
