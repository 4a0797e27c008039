"""AES-256-GCM envelopes (DESIGN.md §4): artifact encryption and key wrapping.

An artifact's ciphertext is the GCM output followed by its 16-byte tag:
``AES-256-GCM(K_data, nonce, plaintext, aad = "oblivio/artifact/v1" || H(JCS(metadata)))``, and
``artifactID = H(ciphertext || H(JCS(metadata)))``. Keys and nonces are passed in (core makes no
randomness). Every authentication failure is the one opaque IntegrityError.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from oblivio.core.errors import IntegrityError
from oblivio.core.hashing import (
    ARTIFACT_AAD_PREFIX,
    DEK_COMMIT_PREFIX,
    KEY_WRAP_AAD_PREFIX,
    Digest,
    sha256_concat,
)
from oblivio.core.identifiers import ArtifactId

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


def artifact_aad(metadata_digest: bytes) -> bytes:
    """The GCM associated data of an artifact: the version prefix and H(JCS(metadata))."""
    return ARTIFACT_AAD_PREFIX + metadata_digest


def compute_artifact_id(ciphertext: bytes, metadata_digest: bytes) -> ArtifactId:
    """``H(ciphertext || H(JCS(metadata)))`` as lower-case hex."""
    return ArtifactId(sha256_concat(ciphertext, metadata_digest).hex())


def key_commitment(artifact_id: str, data_key: bytes) -> Digest:
    """``H("oblivio/dek-commit/v1" || artifactID bytes || K_data)`` (DESIGN.md §6)."""
    return sha256_concat(DEK_COMMIT_PREFIX, bytes.fromhex(artifact_id), data_key)


def _check_key_and_nonce(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"AES-256-GCM key: expected 32 bytes, got {len(key)}")
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"AES-256-GCM nonce: expected 12 bytes, got {len(nonce)}")


def seal_artifact(key: bytes, nonce: bytes, plaintext: bytes, metadata_digest: bytes) -> bytes:
    """Encrypt a whole in-memory payload; returns ciphertext with the tag appended."""
    _check_key_and_nonce(key, nonce)
    return AESGCM(key).encrypt(nonce, plaintext, artifact_aad(metadata_digest))


def open_artifact(key: bytes, nonce: bytes, ciphertext: bytes, metadata_digest: bytes) -> bytes:
    """Decrypt a whole in-memory ciphertext; raise IntegrityError on any authentication failure."""
    _check_key_and_nonce(key, nonce)
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, artifact_aad(metadata_digest))
    except (InvalidTag, ValueError) as e:
        raise IntegrityError() from e


class ArtifactSealer:
    """Streaming artifact encryption: feed plaintext chunks, collect ciphertext chunks.

    The ciphertext is exactly what ``seal_artifact`` returns for the concatenated plaintext, and
    ``finish`` returns the tag (the last ciphertext chunk) and the artifact id over all of it.
    """

    def __init__(self, key: bytes, nonce: bytes, metadata_digest: bytes) -> None:
        _check_key_and_nonce(key, nonce)
        self._metadata_digest = bytes(metadata_digest)
        self._encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(artifact_aad(metadata_digest))
        self._id_hash = hashlib.sha256()

    def update(self, plaintext: bytes) -> bytes:
        """Encrypt the next plaintext chunk; returns the ciphertext bytes it yields."""
        out = self._encryptor.update(plaintext)
        self._id_hash.update(out)
        return out

    def finish(self) -> tuple[bytes, ArtifactId]:
        """Return (trailing ciphertext ending in the 16-byte tag, artifact id)."""
        tail = self._encryptor.finalize() + self._encryptor.tag
        self._id_hash.update(tail)
        self._id_hash.update(self._metadata_digest)
        return tail, ArtifactId(self._id_hash.hexdigest())


class ArtifactOpener:
    """Streaming artifact decryption.

    GCM authenticates only at the end, so the plaintext that ``update`` returns is unverified
    until ``finish`` returns; callers must not release it before then (the vault verifies a
    whole stream first, then decrypts it again for the caller).
    """

    def __init__(self, key: bytes, nonce: bytes, metadata_digest: bytes) -> None:
        _check_key_and_nonce(key, nonce)
        self._decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
        self._decryptor.authenticate_additional_data(artifact_aad(metadata_digest))

    def update(self, ciphertext_body: bytes) -> bytes:
        """Decrypt the next chunk of ciphertext (without the tag); the result is unverified."""
        return self._decryptor.update(ciphertext_body)

    def finish(self, tag: bytes) -> bytes:
        """Check the tag; return any final plaintext, or raise IntegrityError."""
        try:
            return self._decryptor.finalize_with_tag(tag)
        except (InvalidTag, ValueError) as e:
            raise IntegrityError() from e


def key_wrap_aad(context: bytes) -> bytes:
    """Associated data binding a wrapped key to where it belongs (artifact, capability, path)."""
    return KEY_WRAP_AAD_PREFIX + context


def wrap_key(wrapping_key: bytes, nonce: bytes, key: bytes, context: bytes) -> bytes:
    """``nonce || AES-256-GCM(wrapping_key, nonce, key, aad)``: an AEAD-wrapped key."""
    _check_key_and_nonce(wrapping_key, nonce)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, key, key_wrap_aad(context))


def unwrap_key(wrapping_key: bytes, wrapped: bytes, context: bytes) -> bytes:
    """Inverse of ``wrap_key``; raises the opaque IntegrityError on any failure."""
    if len(wrapping_key) != KEY_SIZE or len(wrapped) < NONCE_SIZE + TAG_SIZE:
        raise IntegrityError()
    nonce, body = wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:]
    try:
        return AESGCM(wrapping_key).decrypt(nonce, body, key_wrap_aad(context))
    except (InvalidTag, ValueError) as e:
        raise IntegrityError() from e


def wrap_keys_each(
    wrapping_keys: bytes, nonces: bytes, items: Sequence[tuple[bytes, bytes]]
) -> list[bytes]:
    """``wrap_key`` for many ``(key, context)`` pairs, item ``i`` under the ``i``-th 32-byte
    key of ``wrapping_keys`` with the ``i``-th 12-byte nonce of ``nonces`` (a key-tree leaf's
    capability key under its own leaf key); equal to wrapping each in turn."""
    count = len(items)
    if len(wrapping_keys) != KEY_SIZE * count or len(nonces) != NONCE_SIZE * count:
        raise ValueError(
            f"wrap_keys_each: expected {KEY_SIZE * count} key and {NONCE_SIZE * count} nonce bytes"
        )
    wrapped = []
    for n, (key, context) in enumerate(items):
        nonce = nonces[n * NONCE_SIZE : (n + 1) * NONCE_SIZE]
        cipher = AESGCM(wrapping_keys[n * KEY_SIZE : (n + 1) * KEY_SIZE])
        wrapped.append(nonce + cipher.encrypt(nonce, key, KEY_WRAP_AAD_PREFIX + context))
    return wrapped


def wrap_keys(
    wrapping_key: bytes, nonces: bytes, items: Sequence[tuple[bytes, bytes]]
) -> list[bytes]:
    """``wrap_key`` for many ``(key, context)`` pairs under one wrapping key, with the nonces
    taken in turn from ``nonces`` (12 bytes each): one cipher set-up for a whole key-tree node."""
    if len(nonces) != NONCE_SIZE * len(items):
        raise ValueError(f"wrap_keys: expected {NONCE_SIZE * len(items)} nonce bytes")
    _check_key_and_nonce(wrapping_key, nonces[:NONCE_SIZE] or bytes(NONCE_SIZE))
    encrypt = AESGCM(wrapping_key).encrypt
    split = [nonces[at : at + NONCE_SIZE] for at in range(0, len(nonces), NONCE_SIZE)]
    return [
        nonce + encrypt(nonce, key, KEY_WRAP_AAD_PREFIX + context)
        for nonce, (key, context) in zip(split, items, strict=True)
    ]


def unwrap_keys(wrapping_key: bytes, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """``unwrap_key`` for many ``(wrapped, context)`` pairs under one wrapping key; the opaque
    IntegrityError if any of them fails."""
    if len(wrapping_key) != KEY_SIZE:
        raise IntegrityError()
    decrypt = AESGCM(wrapping_key).decrypt
    if any(len(wrapped) < NONCE_SIZE + TAG_SIZE for wrapped, _ in items):
        raise IntegrityError()
    try:
        return [
            decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], KEY_WRAP_AAD_PREFIX + context)
            for wrapped, context in items
        ]
    except (InvalidTag, ValueError) as e:
        raise IntegrityError() from e


def digests_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two digests or secrets."""
    return hmac.compare_digest(a, b)
