"""Ed25519 signing against RFC 8032 §7.1 (tests/vectors/ed25519_rfc8032.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oblivio.core.errors import VerificationError
from oblivio.core.hashing import sha256
from oblivio.core.signing import SigningKey, VerifyKey, key_id_of

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "ed25519_rfc8032.json").read_text("utf-8")
)["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_rfc8032_vector(vector: dict[str, str]) -> None:
    key = SigningKey(bytes.fromhex(vector["secret_key"]))
    message = bytes.fromhex(vector["message"])
    assert key.verify_key.public_bytes.hex() == vector["public_key"]
    assert key.sign(message).hex() == vector["signature"]
    key.verify_key.verify(bytes.fromhex(vector["signature"]), message)
    with pytest.raises(VerificationError, match="does not verify"):
        key.verify_key.verify(bytes.fromhex(vector["signature"]), message + b"x")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_key_id_is_sha256_of_raw_public_key(vector: dict[str, str]) -> None:
    public = bytes.fromhex(vector["public_key"])
    assert key_id_of(public) == sha256(public).hex()
    assert VerifyKey(public).key_id == key_id_of(public)


def test_malformed_signature_is_a_verification_error() -> None:
    key = SigningKey(bytes(32))
    with pytest.raises(VerificationError):
        key.verify_key.verify(b"short", b"message")
