"""The AES-256-GCM artifact envelope and key wrapping (DESIGN.md §4)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.envelope import (
    ArtifactOpener,
    ArtifactSealer,
    artifact_aad,
    compute_artifact_id,
    key_commitment,
    open_artifact,
    seal_artifact,
    unwrap_key,
    wrap_key,
)
from oblivio.core.errors import IntegrityError
from oblivio.core.hashing import sha256, sha256_concat

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)
digests = st.binary(min_size=32, max_size=32)


@given(keys, nonces, st.binary(max_size=4096), digests)
def test_seal_open_round_trip(key: bytes, nonce: bytes, plaintext: bytes, md: bytes) -> None:
    ciphertext = seal_artifact(key, nonce, plaintext, md)
    assert len(ciphertext) == len(plaintext) + 16
    assert open_artifact(key, nonce, ciphertext, md) == plaintext


def test_aad_is_prefix_and_metadata_digest() -> None:
    key, nonce, md = bytes(32), bytes(12), sha256(b"{}")
    ciphertext = seal_artifact(key, nonce, b"hello", md)
    # An independent AES-GCM with the documented AAD opens it: the format is what DESIGN.md says.
    assert AESGCM(key).decrypt(nonce, ciphertext, b"oblivio/artifact/v1" + md) == b"hello"
    assert artifact_aad(md) == b"oblivio/artifact/v1" + md
    assert compute_artifact_id(ciphertext, md) == sha256_concat(ciphertext, md).hex()


@given(
    keys,
    nonces,
    st.lists(st.binary(max_size=300), max_size=8),
    digests,
)
def test_streaming_equals_one_shot(
    key: bytes, nonce: bytes, pieces: list[bytes], md: bytes
) -> None:
    sealer = ArtifactSealer(key, nonce, md)
    streamed = b"".join(sealer.update(p) for p in pieces)
    tail, artifact_id = sealer.finish()
    streamed += tail
    one_shot = seal_artifact(key, nonce, b"".join(pieces), md)
    assert streamed == one_shot
    assert artifact_id == compute_artifact_id(one_shot, md)
    opener = ArtifactOpener(key, nonce, md)
    body, tag = one_shot[:-16], one_shot[-16:]
    assert opener.update(body) + opener.finish(tag) == b"".join(pieces)


@given(keys, nonces, st.binary(min_size=1, max_size=64), digests, st.data())
def test_any_flipped_byte_fails_opaquely(
    key: bytes, nonce: bytes, plaintext: bytes, md: bytes, data: st.DataObject
) -> None:
    ciphertext = seal_artifact(key, nonce, plaintext, md)
    which = data.draw(st.sampled_from(["ciphertext", "nonce", "metadata"]))
    target = {"ciphertext": ciphertext, "nonce": nonce, "metadata": md}[which]
    index = data.draw(st.integers(0, len(target) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = bytearray(target)
    flipped[index] ^= 1 << bit
    args = {"ciphertext": ciphertext, "nonce": nonce, "metadata": md, which: bytes(flipped)}
    with pytest.raises(IntegrityError) as info:
        open_artifact(key, args["nonce"], args["ciphertext"], args["metadata"])
    assert str(info.value) == str(IntegrityError())


@given(keys, nonces, keys, st.binary(max_size=40), st.data())
def test_wrapped_keys_bind_their_context(
    wrapping: bytes, nonce: bytes, key: bytes, context: bytes, data: st.DataObject
) -> None:
    wrapped = wrap_key(wrapping, nonce, key, context)
    assert unwrap_key(wrapping, wrapped, context) == key
    with pytest.raises(IntegrityError):
        unwrap_key(wrapping, wrapped, context + b"x")
    index = data.draw(st.integers(0, len(wrapped) - 1))
    flipped = bytearray(wrapped)
    flipped[index] ^= 0x01
    with pytest.raises(IntegrityError):
        unwrap_key(wrapping, bytes(flipped), context)
    with pytest.raises(IntegrityError):
        unwrap_key(wrapping, wrapped[:20], context)


def test_key_commitment_binds_artifact_and_key() -> None:
    aid = "ab" * 32
    expected = sha256(b"oblivio/dek-commit/v1" + bytes.fromhex(aid) + bytes(32))
    assert key_commitment(aid, bytes(32)) == expected
    assert key_commitment(aid, bytes(31) + b"\x01") != expected
