"""Federation keys, belief ciphertexts, HPKE key blobs and envelopes (core/belief.py).

HPKE is checked against published vectors: RFC 9180 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM: the suite oblivio uses) and draft-ietf-hpke-pq (MLKEM768-X25519: the hybrid key
construction; its vectors use ChaCha20Poly1305). The vectors carry a non-empty ``aad``, which
only the library's private single-shot helper accepts, so that helper opens them here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.belief import (
    KEMS,
    FederationKeys,
    Kem,
    check_ciphertext,
    hybrid_key_from_seed,
    hybrid_public_bytes,
    open_belief,
    parse_envelope,
    recipient_for,
    seal_belief,
    sign_envelope,
    sign_federation_key,
    suite,
    verify_envelope,
    verify_federation_key,
    wrap_belief_key,
)
from oblivio.core.canonical import canonical_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.errors import IntegrityError, InvalidInputError, VerificationError
from oblivio.core.manifest import new_manifest, rotate_manifest, verify_manifest
from oblivio.core.signing import SigningKey

VECTORS = Path(__file__).parent.parent / "vectors"
RFC9180 = json.loads((VECTORS / "hpke_rfc9180.json").read_text("utf-8"))["vectors"]
HYBRID = json.loads((VECTORS / "hpke_pq_hybrid.json").read_text("utf-8"))["vectors"]
BELIEF_ID = "019ad000-0000-7000-8000-000000000001"
SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))


def _open_vector(kem_suite: hpke.Suite, vector: dict[str, Any], private: Any) -> bytes:
    first = vector["encryptions"][0]
    opened: bytes = rust_openssl.hpke._decrypt_with_aad(
        kem_suite,
        bytes.fromhex(vector["enc"]) + bytes.fromhex(first["ct"]),
        private,
        bytes.fromhex(vector["info"]),
        bytes.fromhex(first["aad"]),
    )
    return opened


def test_rfc9180_vector_opens_with_oblivios_x25519_suite() -> None:
    [vector] = [v for v in RFC9180 if v["aead_id"] == 2]  # AES-256-GCM
    private = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(vector["skRm"]))
    assert private.public_key().public_bytes_raw().hex() == vector["pkRm"]
    assert _open_vector(suite("x25519"), vector, private).hex() == vector["encryptions"][0]["pt"]
    tampered = dict(vector, enc=("00" + vector["enc"][2:]))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the library's own error type
        _open_vector(suite("x25519"), tampered, private)


@pytest.mark.parametrize("vector", HYBRID, ids=[str(v["kdf_id"]) for v in HYBRID])
def test_hybrid_key_is_built_from_its_seed_as_the_draft_does(vector: dict[str, Any]) -> None:
    seed = bytes.fromhex(vector["skRm"])
    assert hybrid_public_bytes(seed).hex() == vector["pkRm"]
    if vector["kdf_id"] != 1:
        return  # the SHAKE256 key schedule is not one oblivio uses
    chacha = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
    opened = _open_vector(chacha, vector, hybrid_key_from_seed(seed))
    assert opened.hex() == vector["encryptions"][0]["pt"]


def test_federation_keys_are_hkdf_of_the_identity_seed() -> None:
    keys = FederationKeys(SEED_A)
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"oblivio/federation-x25519/v1"
    ).derive(SEED_A)
    public = x25519.X25519PrivateKey.from_private_bytes(expected).public_key().public_bytes_raw()
    assert keys.x25519_public == public
    assert FederationKeys(SEED_A).hybrid_public == keys.hybrid_public  # deterministic
    assert FederationKeys(SEED_B).x25519_public != keys.x25519_public
    assert len(keys.hybrid_public) == 1216


@pytest.mark.parametrize("kem", KEMS)
def test_key_blob_round_trip_and_refusals(kem: Kem) -> None:
    recipient, other = FederationKeys(SEED_A), FederationKeys(SEED_B)
    belief_key = bytes(range(100, 132))
    blob = wrap_belief_key(kem, recipient.public_key(kem), belief_key, BELIEF_ID)
    assert recipient.open_key_blob(kem, blob, BELIEF_ID) == belief_key
    refusals = [
        lambda: other.open_key_blob(kem, blob, BELIEF_ID),  # wrong recipient
        lambda: recipient.open_key_blob(kem, blob, BELIEF_ID[:-1] + "2"),  # wrong info
        lambda: recipient.open_key_blob(kem, blob[:-1] + bytes([blob[-1] ^ 1]), BELIEF_ID),
        lambda: recipient.open_key_blob(kem, blob[:10], BELIEF_ID),  # truncated
    ]
    for refused in refusals:
        with pytest.raises(IntegrityError):
            refused()


def test_a_malformed_public_key_is_bad_input() -> None:
    for kem in KEMS:
        with pytest.raises(InvalidInputError):
            wrap_belief_key(kem, b"\x01" * 7, bytes(32), BELIEF_ID)


def test_belief_ciphertext_is_bound_to_its_id() -> None:
    key = bytes(32)
    ciphertext = seal_belief(key, bytes(12), b"alice likes tea", BELIEF_ID)
    assert open_belief(key, ciphertext, BELIEF_ID) == b"alice likes tea"
    for bad in (
        lambda: open_belief(key, ciphertext, BELIEF_ID[:-1] + "9"),
        lambda: open_belief(bytes([1]) * 32, ciphertext, BELIEF_ID),
        lambda: open_belief(key, ciphertext[:-1], BELIEF_ID),
        lambda: open_belief(key, b"short", BELIEF_ID),
    ):
        with pytest.raises(IntegrityError):
            bad()


def _envelope(signer: SigningKey, ciphertext: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    recipient = recipient_for("node-b.example", "x25519", FederationKeys(SEED_B).x25519_public)
    return sign_envelope(
        signer,
        belief_id=BELIEF_ID,
        origin="node-a.example",
        ciphertext=ciphertext,
        metadata=metadata,
        recipients=[recipient],
        created_at="2026-12-02T10:00:00.000Z",
    )


@settings(max_examples=25, deadline=None)
@given(
    st.binary(max_size=200),
    st.dictionaries(
        st.text(max_size=8), st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8), max_size=4
    ),
)
def test_envelope_round_trip(ciphertext: bytes, metadata: dict[str, Any]) -> None:
    signer = SigningKey(SEED_A)
    data = _envelope(signer, ciphertext, metadata)
    envelope = verify_envelope(data, signer.verify_key)
    check_ciphertext(envelope, ciphertext)
    assert envelope.recipient("node-b.example").kem == "x25519"
    assert dict(envelope.metadata) == metadata
    with pytest.raises(VerificationError):
        check_ciphertext(envelope, ciphertext + b"x")
    with pytest.raises(VerificationError):
        envelope.recipient("node-c.example")


def test_envelope_tampering_and_wrong_signer_are_refused() -> None:
    signer = SigningKey(SEED_A)
    data = _envelope(signer, b"ct", {"topic": "tea"})
    for field, value in (
        ("origin", "node-x.example"),
        ("metadata", {"topic": "coffee"}),
        ("ciphertext_hash", "00" * 32),
        ("recipients", [{"node": "node-x.example", "kem": "x25519", "public_key_hash": "00"}]),
    ):
        with pytest.raises(VerificationError):
            verify_envelope({**data, field: value}, signer.verify_key)
    with pytest.raises(VerificationError):
        verify_envelope(data, SigningKey(SEED_B).verify_key)
    with pytest.raises(VerificationError):
        verify_envelope({**data, "signature": "!!"}, signer.verify_key)


@pytest.mark.parametrize(
    "broken",
    [
        None,
        {},
        {"type": "oblivio.belief.v0"},
        {"drop": "recipients"},
        {"recipients": []},
        {"recipients": [{"node": "b", "kem": "rsa", "public_key_hash": "00"}]},
        {"metadata": "text"},
        {"ciphertext_hash": "abc"},
    ],
)
def test_malformed_envelopes_are_bad_input(broken: dict[str, Any] | None) -> None:
    data: Any = None
    if broken is not None:
        data = _envelope(SigningKey(SEED_A), b"ct", {})
        if "drop" in broken:
            data.pop(broken["drop"])
        elif broken:
            data.update(broken)
        else:
            data = {}
    with pytest.raises(InvalidInputError):
        parse_envelope(data)


def test_manifests_publish_a_signed_federation_key_and_old_ones_still_verify() -> None:
    anchor = SigningKey(SEED_A)
    old = new_manifest("node-a.example", anchor, "2026-12-01T00:00:00.000Z")
    assert verify_manifest(old).federation_key is None  # made before federation keys
    keys = FederationKeys(anchor.seed)
    statement = sign_federation_key(anchor, "node-a.example", keys, "2026-12-01T00:00:01.000Z")
    published = verify_manifest({**old, "federation_key": statement})
    assert published.federation_key is not None
    assert published.federation_key.x25519 == keys.x25519_public
    assert published.federation_key.kem() == "mlkem768-x25519"
    assert published.federation_key.kem(own_hybrid=False) == "x25519"
    tampered = {**statement, "x25519_b64": statement["mlkem768_x25519_b64"]}
    stranger = sign_federation_key(
        SigningKey(SEED_B), "node-a.example", keys, "2026-12-01T00:00:01.000Z"
    )
    for bad in (tampered, stranger, {**statement, "org": "node-b.example"}, "text"):
        with pytest.raises(VerificationError):
            verify_manifest({**old, "federation_key": bad})
    # Signed by a key the chain rotated out before the statement was made: refused.
    rotated = rotate_manifest(old, anchor, SigningKey(SEED_B), "2026-12-01T00:00:00.500Z")
    with pytest.raises(VerificationError):
        verify_manifest({**rotated, "federation_key": statement})


def test_a_statement_without_a_hybrid_key_is_accepted() -> None:
    signer = SigningKey(SEED_A)
    keys = FederationKeys(signer.seed)
    statement = sign_federation_key(signer, "o", keys, "2026-12-01T00:00:01.000Z")
    body = {k: v for k, v in statement.items() if k not in ("signature_b64",)}
    body.pop("mlkem768_x25519_b64")
    only_x25519 = {**body, "signature_b64": b64url_encode(signer.sign(canonical_json(body)))}
    key = verify_federation_key(only_x25519, "o", signer.verify_key)
    assert key.hybrid is None
    assert key.kem() == "x25519"
    with pytest.raises(InvalidInputError):
        key.public_key("mlkem768-x25519")
