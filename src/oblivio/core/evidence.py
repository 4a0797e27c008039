"""Signed federation responses and non-compliance evidence (*spec*, DESIGN.md §12, seed 001
"Non-Compliance Detection"), pure: no I/O, no clock.

**Signed responses** (``oblivio.federation-response.v1``). Every answer of a federation route
carries the header ``Oblivio-Response-Signature``: the base64url of the RFC 8785 bytes of ::

    {"type": "oblivio.federation-response.v1", "node": org, "key_id": hex,
     "method": "GET", "path": "/v1/federation/beliefs/…[?query]", "status": 200,
     "body_sha256": hex, "signed_at": time, "signature": b64url}

signed (Ed25519) over the RFC 8785 bytes of the statement without ``signature``, with the key
``key_id`` names. It binds what the node answered (status and the exact body bytes) to what was
asked (method, path) and when: a peer cannot later deny a response it signed.

**Evidence** (``oblivio.noncompliance-evidence.v1``). When a peer's signed response still serves a
belief after a tombstone for it, the node that issued the tombstone keeps ::

    {"type": "oblivio.noncompliance-evidence.v1", "peer": org, "finding": kind,
     "our_tombstone": TombstoneRecord, "our_key": verifier key,
     "their_response": {"statement": {…signed…}, "body_b64": b64url of the body bytes},
     "their_key": verifier key, "timestamp": time, "key_id": hex, "signature": b64url}

signed by the issuer over the RFC 8785 bytes without ``signature``. ``finding`` is
``content_served`` (``GET /v1/federation/beliefs/{id}`` answered the belief, not its deletion)
or ``not_deleted`` (``GET /federation/belief/{id}/status`` answered ``exists: true, deleted:
false``). Anyone holding the peer's verifier key checks it offline with ``verify_evidence``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import parse_time
from oblivio.core.manifest import org_of_signer
from oblivio.core.note import ED25519_ALGORITHM, parse_verifier_key
from oblivio.core.signing import SigningKey, VerifyKey
from oblivio.core.tombstones import TombstoneRecord, verify_record_signature

RESPONSE_TYPE: Final = "oblivio.federation-response.v1"
EVIDENCE_TYPE: Final = "oblivio.noncompliance-evidence.v1"
SIGNATURE_HEADER: Final = "Oblivio-Response-Signature"
MAX_HEADER_CHARS: Final = 4096
BELIEF_PREFIX: Final = "belief:"
Finding = Literal["content_served", "not_deleted"]

_STATEMENT_FIELDS: Final = (
    "type",
    "node",
    "key_id",
    "method",
    "path",
    "status",
    "body_sha256",
    "signed_at",
    "signature",
)
_EVIDENCE_FIELDS: Final = (
    "type",
    "peer",
    "finding",
    "our_tombstone",
    "our_key",
    "their_response",
    "their_key",
    "timestamp",
    "key_id",
    "signature",
)
_BELIEF_ROUTE: Final = re.compile(r"/v1/federation/beliefs/([^/?]+)")
_STATUS_ROUTE: Final = re.compile(r"/federation/belief/([^/?]+)/status")


def _signed(signing_key: SigningKey, body: dict[str, JsonValue]) -> dict[str, JsonValue]:
    return {**body, "signature": b64url_encode(signing_key.sign(canonical_json(body)))}


def _check_signature(value: Mapping[str, Any], key: VerifyKey, what: str) -> None:
    """Verify ``signature`` over the JCS bytes of ``value`` without it, with ``key``."""
    if value.get("key_id") != key.key_id:
        raise VerificationError(
            f"{what}: expected key_id {key.key_id}, got {str(value.get('key_id'))[:80]!r}"
        )
    try:
        signature = b64url_decode(str(value.get("signature")))
    except ValueError as e:
        raise VerificationError(f"{what}: signature is not base64url") from e
    try:
        key.verify(signature, canonical_json({k: v for k, v in value.items() if k != "signature"}))
    except VerificationError as e:
        raise VerificationError(f"{what}: signature does not verify") from e


# -- signed responses --------------------------------------------------------------------------


def sign_response(
    signing_key: SigningKey,
    *,
    node: str,
    method: str,
    path: str,
    status: int,
    body: bytes,
    signed_at: str,
) -> dict[str, JsonValue]:
    """The signed statement of one response (module docstring)."""
    return _signed(
        signing_key,
        {
            "type": RESPONSE_TYPE,
            "node": node,
            "key_id": signing_key.key_id,
            "method": method,
            "path": path,
            "status": status,
            "body_sha256": sha256(body).hex(),
            "signed_at": signed_at,
        },
    )


def encode_statement(statement: Mapping[str, JsonValue]) -> str:
    """The header value of a statement: base64url of its RFC 8785 bytes."""
    return b64url_encode(canonical_json(dict(statement)))


def decode_statement(header: str) -> dict[str, JsonValue]:
    """The statement a header value carries (not verified). Raises VerificationError."""
    if len(header) > MAX_HEADER_CHARS:
        raise VerificationError(f"{SIGNATURE_HEADER}: over {MAX_HEADER_CHARS} characters")
    try:
        value = parse_json(b64url_decode(header.strip()))
    except (ValueError, InvalidInputError) as e:
        raise VerificationError(f"{SIGNATURE_HEADER}: not base64url JSON") from e
    if not isinstance(value, dict):
        raise VerificationError(f"{SIGNATURE_HEADER}: expected a JSON object")
    return value


@dataclass(frozen=True)
class SignedResponse:
    """A response whose statement verified: what ``node`` answered to ``method path``."""

    node: str
    key_id: str
    method: str
    path: str
    status: int
    signed_at: str
    body: bytes


def verify_response(statement: object, body: bytes, key: VerifyKey) -> SignedResponse:
    """Check a response statement offline and that it covers ``body``.

    Steps: (1) shape: the type and every field, nothing else; (2) the signature with ``key``,
    which must be the key ``key_id`` names; (3) ``body_sha256`` is the SHA-256 of ``body``.
    Raises VerificationError naming the failing step.
    """
    if not isinstance(statement, Mapping) or statement.get("type") != RESPONSE_TYPE:
        raise VerificationError(f"response: expected a statement of type {RESPONSE_TYPE}")
    if sorted(statement) != sorted(_STATEMENT_FIELDS):
        raise VerificationError(
            f"response: expected fields {sorted(_STATEMENT_FIELDS)}, got {sorted(statement)}"
        )
    texts = ("node", "key_id", "method", "path", "body_sha256", "signed_at")
    strings = all(isinstance(statement[f], str) for f in texts)
    if not strings or type(statement["status"]) is not int:
        raise VerificationError("response: expected string fields and an integer status")
    try:
        parse_time(statement["signed_at"])
    except InvalidInputError as e:
        raise VerificationError(f"response: signed_at: {e}") from e
    _check_signature(statement, key, "response")
    if statement["body_sha256"] != sha256(body).hex():
        raise VerificationError("response: body_sha256 is not the SHA-256 of the body")
    return SignedResponse(
        node=statement["node"],
        key_id=statement["key_id"],
        method=statement["method"],
        path=statement["path"],
        status=statement["status"],
        signed_at=statement["signed_at"],
        body=body,
    )


# -- what a response says about a belief ---------------------------------------------------------


def belief_of_path(path: str) -> str | None:
    """The belief id a probe route's path names (query ignored), or None."""
    bare = path.partition("?")[0]
    for route in (_BELIEF_ROUTE, _STATUS_ROUTE):
        match = route.fullmatch(bare)
        if match:
            return match.group(1)
    return None


def served_finding(path: str, status: int, body: bytes) -> Finding | None:
    """What a probe response shows, if it shows the belief still served: ``content_served``
    for the belief route answering content that is not a deletion (seed 001: a deleted belief
    is ``{status: 'deleted', content: null}``), ``not_deleted`` for the status route answering
    ``exists: true, deleted: false``; None otherwise (any other status, a non-object body)."""
    if status != 200:
        return None
    try:
        value = parse_json(body)
    except (ValueError, InvalidInputError):
        return None
    if not isinstance(value, dict):
        return None
    bare = path.partition("?")[0]
    if _BELIEF_ROUTE.fullmatch(bare):
        served = value.get("content") is not None or value.get("ciphertext") is not None
        return "content_served" if served and value.get("status") != "deleted" else None
    if _STATUS_ROUTE.fullmatch(bare):
        still = value.get("exists") is True and value.get("deleted") is False
        return "not_deleted" if still else None
    return None


# -- evidence ------------------------------------------------------------------------------------


def build_evidence(
    signing_key: SigningKey,
    *,
    peer: str,
    finding: Finding,
    our_tombstone: Mapping[str, JsonValue],
    our_key: str,
    statement: Mapping[str, JsonValue],
    body: bytes,
    their_key: str,
    timestamp: str,
) -> dict[str, JsonValue]:
    """Signed evidence (module docstring); ``signing_key`` is the one ``our_key`` names."""
    return _signed(
        signing_key,
        {
            "type": EVIDENCE_TYPE,
            "peer": peer,
            "finding": finding,
            "our_tombstone": dict(our_tombstone),
            "our_key": our_key,
            "their_response": {"statement": dict(statement), "body_b64": b64url_encode(body)},
            "their_key": their_key,
            "timestamp": timestamp,
            "key_id": signing_key.key_id,
        },
    )


@dataclass(frozen=True)
class EvidenceFinding:
    """What verified evidence establishes."""

    peer: str
    finding: Finding
    tombstone_id: str
    belief_id: str
    tombstone_created_at: str
    responded_at: str
    path: str
    peer_key_pinned: bool

    def statement(self) -> str:
        """One line saying what is proven."""
        what = "served the belief" if self.finding == "content_served" else "kept the belief"
        return (
            f"peer {self.peer} {what} belief:{self.belief_id} at {self.responded_at} "
            f"(GET {self.path}, signed), after tombstone {self.tombstone_id} of "
            f"{self.tombstone_created_at}: non-compliance proven"
        )


def _ed25519_key(vkey: object, what: str) -> tuple[str, VerifyKey]:
    if not isinstance(vkey, str):
        raise VerificationError(f"evidence: {what}: expected a verifier key string")
    parsed = parse_verifier_key(vkey)
    if parsed.algorithm != ED25519_ALGORITHM:
        raise VerificationError(f"evidence: {what}: expected an Ed25519 verifier key")
    return parsed.name, VerifyKey(parsed.public_key)


def _our_tombstone(evidence: Mapping[str, Any]) -> tuple[TombstoneRecord, VerifyKey]:
    """Step 2: the tombstone, of a belief, signed with ``our_key`` (its signer org's key)."""
    try:
        tombstone = TombstoneRecord.from_dict(evidence["our_tombstone"])
    except InvalidInputError as e:
        raise VerificationError(f"evidence: our_tombstone: {e}") from e
    if not tombstone.entity_uri.startswith(BELIEF_PREFIX):
        raise VerificationError(
            f"evidence: our_tombstone: expected an entity belief:<id>, got {tombstone.entity_uri}"
        )
    our_name, our_key = _ed25519_key(evidence["our_key"], "our_key")
    if our_name != org_of_signer(tombstone.signed_by):
        raise VerificationError(
            f"evidence: our_key is {our_name}'s, the tombstone is signed by {tombstone.signed_by}"
        )
    try:
        verify_record_signature(tombstone, our_key)
    except VerificationError as e:
        raise VerificationError(f"evidence: our_tombstone: {e}") from e
    return tombstone, our_key


def _their_key(evidence: Mapping[str, Any], peer_key: str | None) -> VerifyKey:
    """Step 4: the peer's key, ``peer_key`` if given (``their_key`` must be it), named ``peer``."""
    their_name, their_key = _ed25519_key(evidence["their_key"], "their_key")
    if peer_key is not None:
        pinned_name, pinned = _ed25519_key(peer_key, "the given peer key")
        if (pinned_name, pinned) != (their_name, their_key):
            raise VerificationError(
                f"evidence: their_key is not the given peer key {pinned_name}/{pinned.key_id}"
            )
    if their_name != evidence["peer"]:
        raise VerificationError(
            f"evidence: expected their_key of {evidence['peer']}, got one of {their_name}"
        )
    return their_key


def verify_evidence(evidence: object, peer_key: str | None = None) -> EvidenceFinding:
    """Check non-compliance evidence offline.

    Steps: (1) shape: the type and every field; (2) ``our_tombstone`` is a tombstone of an entity
    ``belief:<id>`` whose signature verifies with ``our_key``, the key of its signer's org;
    (3) the evidence's own signature verifies with ``our_key``; (4) the peer's key:
    ``peer_key`` when given (``their_key`` must be the same), else ``their_key``; its name is
    ``peer``; (5) the response statement verifies with it and covers ``body_b64``; (6) the
    statement is ``peer``'s answer 200 to ``GET`` of a probe route for that belief; (7) it was
    signed after the tombstone was created; (8) the body serves the belief (``finding``).
    Raises VerificationError naming the failing step.
    """
    # (1)
    if not isinstance(evidence, Mapping) or evidence.get("type") != EVIDENCE_TYPE:
        raise VerificationError(f"evidence: expected an object of type {EVIDENCE_TYPE}")
    missing = [f for f in _EVIDENCE_FIELDS if f not in evidence]
    if missing:
        raise VerificationError(f"evidence: missing fields {missing}")
    response = evidence["their_response"]
    if not isinstance(response, Mapping) or not isinstance(response.get("body_b64"), str):
        raise VerificationError("evidence: their_response: expected {statement, body_b64}")
    if not isinstance(evidence["peer"], str) or not isinstance(evidence["timestamp"], str):
        raise VerificationError("evidence: expected a string peer and timestamp")
    tombstone, our_key = _our_tombstone(evidence)  # (2)
    belief_id = tombstone.entity_uri.removeprefix(BELIEF_PREFIX)
    _check_signature(evidence, our_key, "evidence")  # (3)
    their_key = _their_key(evidence, peer_key)  # (4)
    # (5)
    try:
        body = b64url_decode(response["body_b64"])
    except ValueError as e:
        raise VerificationError("evidence: body_b64 is not base64url") from e
    signed = verify_response(response.get("statement"), body, their_key)
    # (6)
    if signed.node != evidence["peer"] or signed.method != "GET" or signed.status != 200:
        raise VerificationError(
            f"evidence: expected {evidence['peer']}'s 200 answer to a GET, got "
            f"{signed.node}'s {signed.status} to {signed.method}"
        )
    if belief_of_path(signed.path) != belief_id:
        raise VerificationError(
            f"evidence: the response is for {signed.path[:200]!r}, not belief {belief_id}"
        )
    # (7)
    try:
        after = parse_time(signed.signed_at) > parse_time(tombstone.created_at)
    except InvalidInputError as e:
        raise VerificationError(f"evidence: {e}") from e
    if not after:
        raise VerificationError(
            f"evidence: the response was signed at {signed.signed_at}, not after the tombstone "
            f"of {tombstone.created_at}"
        )
    # (8)
    finding = served_finding(signed.path, signed.status, body)
    if finding is None or finding != evidence["finding"]:
        raise VerificationError(
            f"evidence: expected a response that shows {evidence['finding']!r}, got one showing "
            f"{finding or 'nothing served'}"
        )
    return EvidenceFinding(
        peer=evidence["peer"],
        finding=finding,
        tombstone_id=tombstone.id,
        belief_id=belief_id,
        tombstone_created_at=tombstone.created_at,
        responded_at=signed.signed_at,
        path=signed.path,
        peer_key_pinned=peer_key is not None,
    )
