"""Federation keys and encrypted beliefs (*spec* ``oblivio.belief.v1``, DESIGN.md §12, seed 001).

**Federation keys.** A node's X25519 federation key is derived from its Ed25519 identity seed:
``HKDF-SHA256(ikm = seed, salt = none, info = "oblivio/federation-x25519/v1", L = 32)``. Its
ML-KEM-768 + X25519 hybrid key (X-Wing, draft-ietf-hpke-pq kem 0x647a) is derived the same way
(``info = "oblivio/federation-mlkem768-x25519/v1"``) into the 32-byte X-Wing seed, which is
expanded as the draft does: ``SHAKE256(seed, 96)`` = ML-KEM-768 seed (64) || X25519 key (32);
the hybrid public key is the ML-KEM encapsulation key (1184) || the X25519 public key (32).
Both are published in the node's manifest in a statement signed by its identity key::

    {"type": "oblivio.federation-key.v1", "org": org, "x25519_b64": b64url,
     "mlkem768_x25519_b64": b64url | absent, "key_id": hex, "created_at": time,
     "signature_b64": b64url}

**Beliefs.** ``ciphertext = nonce (12) || AES-256-GCM(belief_key, nonce, plaintext,
aad = "oblivio/belief/v1" || belief_id)`` under a fresh 256-bit belief key; each recipient's
key-blob entry is HPKE base mode (RFC 9180) of the belief key to its federation key, suite
DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (``kem`` ``x25519``) or
MLKEM768-X25519 / HKDF-SHA256 / AES-256-GCM (``kem`` ``mlkem768-x25519``), ``info =
"oblivio/belief-key/v1" || belief_id``. The signed envelope::

    {"type": "oblivio.belief.v1", "id": uuid7, "origin": org, "ciphertext_hash": hex,
     "metadata": {...}, "recipients": [{"node": org, "kem": ..., "public_key_hash": hex}],
     "created_at": time, "key_id": hex, "signature": b64url}

is signed (Ed25519) over the RFC 8785 bytes of the envelope without ``signature``. Every
decryption or unwrap failure is the one opaque IntegrityError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import IntegrityError, InvalidInputError, VerificationError
from oblivio.core.hashing import sha256
from oblivio.core.signing import SigningKey, VerifyKey

BELIEF_TYPE: Final = "oblivio.belief.v1"
FEDERATION_KEY_TYPE: Final = "oblivio.federation-key.v1"
X25519_INFO: Final = b"oblivio/federation-x25519/v1"
HYBRID_INFO: Final = b"oblivio/federation-mlkem768-x25519/v1"
BELIEF_AAD_PREFIX: Final = b"oblivio/belief/v1"
BELIEF_KEY_INFO_PREFIX: Final = b"oblivio/belief-key/v1"
BELIEF_KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
MLKEM768_PUBLIC_SIZE: Final = 1184
X25519_SIZE: Final = 32

Kem = Literal["x25519", "mlkem768-x25519"]
KEMS: Final[tuple[Kem, ...]] = ("x25519", "mlkem768-x25519")
_SUITES: Final = {
    "x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    "mlkem768-x25519": hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}


def suite(kem: Kem) -> hpke.Suite:
    """The HPKE suite of a KEM name: that KEM, HKDF-SHA256, AES-256-GCM."""
    return _SUITES[kem]


# -- federation keys ----------------------------------------------------------------------------


def _hkdf(seed: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)


def hybrid_key_from_seed(xwing_seed: bytes) -> hpke.MLKEM768X25519PrivateKey:
    """The ML-KEM-768 + X25519 private key of a 32-byte X-Wing seed (draft-ietf-hpke-pq:
    ``SHAKE256(seed, 96)`` = ML-KEM-768 seed || X25519 private key)."""
    if len(xwing_seed) != 32:
        raise ValueError(f"X-Wing seed: expected 32 bytes, got {len(xwing_seed)}")
    expanded = hashlib.shake_256(xwing_seed).digest(96)
    return hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


def hybrid_public_bytes(xwing_seed: bytes) -> bytes:
    """The published hybrid public key of an X-Wing seed: ML-KEM-768 key || X25519 key."""
    expanded = hashlib.shake_256(xwing_seed).digest(96)
    ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).public_key()
    xk = x25519.X25519PrivateKey.from_private_bytes(expanded[64:]).public_key()
    return ml.public_bytes_raw() + xk.public_bytes_raw()


class FederationKeys:
    """A node's federation private keys, derived from its identity seed (module docstring)."""

    __slots__ = ("_hybrid_seed", "_x25519", "hybrid_public", "x25519_public")

    def __init__(self, identity_seed: bytes) -> None:
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(_hkdf(identity_seed, X25519_INFO))
        self.x25519_public = self._x25519.public_key().public_bytes_raw()
        self._hybrid_seed = _hkdf(identity_seed, HYBRID_INFO)
        self.hybrid_public = hybrid_public_bytes(self._hybrid_seed)

    def public_key(self, kem: Kem) -> bytes:
        """The public key published for ``kem``."""
        return self.x25519_public if kem == "x25519" else self.hybrid_public

    def open_key_blob(self, kem: Kem, blob: bytes, belief_id: str) -> bytes:
        """The belief key in a key-blob entry for this node; IntegrityError for any failure."""
        private: x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey = (
            self._x25519 if kem == "x25519" else hybrid_key_from_seed(self._hybrid_seed)
        )
        try:
            key = _SUITES[kem].decrypt(blob, private, belief_key_info(belief_id))
        except Exception as e:  # the library raises several kinds; one opaque error here
            raise IntegrityError("key blob: cannot be opened") from e
        if len(key) != BELIEF_KEY_SIZE:
            raise IntegrityError("key blob: cannot be opened")
        return key


@dataclass(frozen=True)
class FederationKey:
    """A peer's published federation keys (verified)."""

    x25519: bytes
    hybrid: bytes | None

    def kem(self, own_hybrid: bool = True) -> Kem:
        """The KEM to wrap for this peer: the hybrid when both sides publish it."""
        return "mlkem768-x25519" if own_hybrid and self.hybrid is not None else "x25519"

    def public_key(self, kem: Kem) -> bytes:
        """The public key for ``kem``; InvalidInputError when not published."""
        key = self.x25519 if kem == "x25519" else self.hybrid
        if key is None:
            raise InvalidInputError(f"the peer publishes no {kem} federation key")
        return key


def sign_federation_key(
    signing_key: SigningKey, org: str, keys: FederationKeys, created_at: str
) -> dict[str, JsonValue]:
    """The manifest's ``federation_key`` statement (module docstring)."""
    body: dict[str, JsonValue] = {
        "type": FEDERATION_KEY_TYPE,
        "org": org,
        "x25519_b64": b64url_encode(keys.x25519_public),
        "mlkem768_x25519_b64": b64url_encode(keys.hybrid_public),
        "key_id": signing_key.key_id,
        "created_at": created_at,
    }
    return {**body, "signature_b64": b64url_encode(signing_key.sign(canonical_json(body)))}


def verify_federation_key(statement: object, org: str, signer: VerifyKey) -> FederationKey:
    """Check a ``federation_key`` statement of ``org`` signed by ``signer`` (the manifest key
    its ``key_id`` names, valid at its ``created_at``). Raises VerificationError."""
    if not isinstance(statement, Mapping) or statement.get("type") != FEDERATION_KEY_TYPE:
        raise VerificationError(f"federation_key: expected type {FEDERATION_KEY_TYPE!r}")
    if statement.get("org") != org:
        raise VerificationError(f"federation_key: expected org {org!r}")
    try:
        signature = b64url_decode(str(statement.get("signature_b64")))
        x25519_public = b64url_decode(str(statement.get("x25519_b64")))
        hybrid_text = statement.get("mlkem768_x25519_b64")
        hybrid = None if hybrid_text is None else b64url_decode(str(hybrid_text))
    except ValueError as e:
        raise VerificationError(f"federation_key: not base64url: {e}") from e
    body = {k: v for k, v in statement.items() if k != "signature_b64"}
    signer.verify(signature, canonical_json(body))
    if len(x25519_public) != X25519_SIZE:
        raise VerificationError("federation_key: expected a 32-byte X25519 key")
    if hybrid is not None and len(hybrid) != MLKEM768_PUBLIC_SIZE + X25519_SIZE:
        raise VerificationError("federation_key: expected a 1216-byte MLKEM768-X25519 key")
    return FederationKey(x25519_public, hybrid)


# -- key blobs ----------------------------------------------------------------------------------


def belief_key_info(belief_id: str) -> bytes:
    """HPKE ``info`` of a belief's key blob: ``"oblivio/belief-key/v1" || belief_id``."""
    return BELIEF_KEY_INFO_PREFIX + belief_id.encode("utf-8")


def wrap_belief_key(kem: Kem, public_key: bytes, belief_key: bytes, belief_id: str) -> bytes:
    """HPKE base-mode seal of ``belief_key`` to ``public_key`` (``enc || ct``).
    Raises InvalidInputError for a malformed public key."""
    try:
        recipient: x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
        if kem == "x25519":
            recipient = x25519.X25519PublicKey.from_public_bytes(public_key)
        else:
            recipient = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(public_key[:MLKEM768_PUBLIC_SIZE]),
                x25519.X25519PublicKey.from_public_bytes(public_key[MLKEM768_PUBLIC_SIZE:]),
            )
    except ValueError as e:
        raise InvalidInputError(f"{kem} federation key: malformed: {e}") from e
    return _SUITES[kem].encrypt(belief_key, recipient, belief_key_info(belief_id))


# -- ciphertext ---------------------------------------------------------------------------------


def belief_aad(belief_id: str) -> bytes:
    """GCM associated data of a belief: ``"oblivio/belief/v1" || belief_id``."""
    return BELIEF_AAD_PREFIX + belief_id.encode("utf-8")


def seal_belief(belief_key: bytes, nonce: bytes, plaintext: bytes, belief_id: str) -> bytes:
    """``nonce || AES-256-GCM(belief_key, nonce, plaintext, belief_aad(belief_id))``."""
    if len(belief_key) != BELIEF_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("belief: expected a 32-byte key and a 12-byte nonce")
    return nonce + AESGCM(belief_key).encrypt(nonce, plaintext, belief_aad(belief_id))


def open_belief(belief_key: bytes, ciphertext: bytes, belief_id: str) -> bytes:
    """The plaintext of a belief ciphertext; IntegrityError for any failure."""
    if len(belief_key) != BELIEF_KEY_SIZE or len(ciphertext) < NONCE_SIZE + 16:
        raise IntegrityError("belief: cannot be opened")
    try:
        return AESGCM(belief_key).decrypt(
            ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:], belief_aad(belief_id)
        )
    except InvalidTag as e:
        raise IntegrityError("belief: cannot be opened") from e


# -- the envelope -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """One recipient of a belief: its org, the KEM its key blob uses, and the hash of the
    federation public key it was wrapped to."""

    node: str
    kem: Kem
    public_key_hash: str

    def to_dict(self) -> dict[str, JsonValue]:
        """The envelope's recipient entry."""
        return {"node": self.node, "kem": self.kem, "public_key_hash": self.public_key_hash}


def recipient_for(node: str, kem: Kem, public_key: bytes) -> Recipient:
    """The recipient entry for ``node``'s ``kem`` public key."""
    return Recipient(node, kem, sha256(public_key).hex())


@dataclass(frozen=True)
class BeliefEnvelope:
    """A verified (or freshly signed) belief envelope."""

    id: str
    origin: str
    ciphertext_hash: str
    metadata: Mapping[str, JsonValue]
    recipients: tuple[Recipient, ...]
    created_at: str
    key_id: str
    raw: Mapping[str, JsonValue]

    def recipient(self, node: str) -> Recipient:
        """The entry of ``node``; VerificationError when it is not a recipient."""
        for entry in self.recipients:
            if entry.node == node:
                return entry
        raise VerificationError(f"belief {self.id}: {node} is not one of its recipients")


def sign_envelope(
    signing_key: SigningKey,
    *,
    belief_id: str,
    origin: str,
    ciphertext: bytes,
    metadata: Mapping[str, JsonValue],
    recipients: Sequence[Recipient],
    created_at: str,
) -> dict[str, JsonValue]:
    """A signed ``oblivio.belief.v1`` envelope (module docstring)."""
    body: dict[str, JsonValue] = {
        "type": BELIEF_TYPE,
        "id": belief_id,
        "origin": origin,
        "ciphertext_hash": sha256(ciphertext).hex(),
        "metadata": dict(metadata),
        "recipients": [r.to_dict() for r in recipients],
        "created_at": created_at,
        "key_id": signing_key.key_id,
    }
    return {**body, "signature": b64url_encode(signing_key.sign(canonical_json(body)))}


def parse_envelope(data: object) -> BeliefEnvelope:
    """The fields of an envelope, checked for shape only (not the signature).
    Raises InvalidInputError naming the first bad field."""
    if not isinstance(data, Mapping) or data.get("type") != BELIEF_TYPE:
        raise InvalidInputError(f"belief envelope: expected type {BELIEF_TYPE!r}")
    strings = ("id", "origin", "ciphertext_hash", "created_at", "key_id", "signature")
    for name in strings:
        if not isinstance(data.get(name), str) or not data[name]:
            raise InvalidInputError(f"belief envelope: expected a string {name}")
    if len(str(data["ciphertext_hash"])) != 64:
        raise InvalidInputError("belief envelope: expected a hex SHA-256 ciphertext_hash")
    metadata = data.get("metadata")
    entries = data.get("recipients")
    if not isinstance(metadata, Mapping):
        raise InvalidInputError("belief envelope: expected a metadata object")
    if not isinstance(entries, list) or not entries:
        raise InvalidInputError("belief envelope: expected a non-empty list of recipients")
    recipients: list[Recipient] = []
    for entry in entries:
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("node"), str)
            or entry.get("kem") not in KEMS
            or not isinstance(entry.get("public_key_hash"), str)
        ):
            raise InvalidInputError("belief envelope: expected recipients {node, kem, hash}")
        recipients.append(Recipient(entry["node"], entry["kem"], entry["public_key_hash"]))
    return BeliefEnvelope(
        id=str(data["id"]),
        origin=str(data["origin"]),
        ciphertext_hash=str(data["ciphertext_hash"]),
        metadata=dict(metadata),
        recipients=tuple(recipients),
        created_at=str(data["created_at"]),
        key_id=str(data["key_id"]),
        raw=dict(data),
    )


def verify_envelope(data: Mapping[str, Any], signer: VerifyKey) -> BeliefEnvelope:
    """Check an envelope's shape and its signature by ``signer`` (the origin's manifest key its
    ``key_id`` names, valid at ``created_at``; the caller looks it up). Raises
    InvalidInputError for a malformed envelope, VerificationError for a bad signature."""
    envelope = parse_envelope(data)
    if signer.key_id != envelope.key_id:
        raise VerificationError(f"belief envelope: expected key {envelope.key_id}")
    try:
        signature = b64url_decode(str(data["signature"]))
    except ValueError as e:
        raise VerificationError(f"belief envelope signature: not base64url: {e}") from e
    signer.verify(signature, canonical_json({k: v for k, v in data.items() if k != "signature"}))
    return envelope


def check_ciphertext(envelope: BeliefEnvelope, ciphertext: bytes) -> None:
    """The ciphertext is the one the envelope signs; VerificationError otherwise."""
    if sha256(ciphertext).hex() != envelope.ciphertext_hash:
        raise VerificationError(f"belief {envelope.id}: ciphertext does not match its hash")
