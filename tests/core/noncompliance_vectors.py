"""Builds tests/vectors/oblivio_noncompliance_evidence_v1.json (self-generated: Ed25519 is
deterministic, so the same keys and times give the same bytes; test_evidence.py checks the file
is still what this builds). Run ``python -m tests.core.noncompliance_vectors`` to rewrite it.

Each case of ``tampered`` changes one field of a valid evidence record (``path``). ``resign``
says who signs again after the change: nobody (a record altered in transit), ``evidence`` (the
reporter forging), or ``response`` then ``evidence`` (the peer genuinely signed that answer: it
just is not evidence of anything).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.evidence import build_evidence, sign_response
from oblivio.core.note import verifier_key
from oblivio.core.signing import SigningKey
from oblivio.core.tombstones import sign_tombstone

PATH = Path(__file__).parent.parent / "vectors" / "oblivio_noncompliance_evidence_v1.json"
OUR_ORG = "node-a.example"
PEER = "ignorer.example"
OUR_KEY = SigningKey(bytes(range(32)))
PEER_KEY = SigningKey(bytes(range(32, 64)))
OTHER_KEY = SigningKey(bytes(range(64, 96)))
BELIEF = "0193a1b2-0000-7000-8000-000000000001"
TOMBSTONE_AT = "2026-12-02T10:00:00.000Z"
ANSWERED_AT = "2026-12-02T11:00:00.000Z"


def tombstone(entity_uri: str = f"belief:{BELIEF}") -> dict[str, JsonValue]:
    return sign_tombstone(
        OUR_KEY,
        record_id="tomb_0193a1b2-0000-7000-8000-0000000000aa",
        entity_uri=entity_uri,
        scope="*",
        reason="redacted",
        signed_by=f"agent:{OUR_ORG}/admin",
        created_at=TOMBSTONE_AT,
        legal_hold=False,
    ).to_dict()


def response(path: str, body: bytes, status: int = 200, at: str = ANSWERED_AT) -> Any:
    return sign_response(
        PEER_KEY, node=PEER, method="GET", path=path, status=status, body=body, signed_at=at
    )


SERVED = canonical_json({"id": BELIEF, "status": "active", "content": "the belief, still here"})
KEPT = canonical_json({"exists": True, "deleted": False})


def evidence(
    path: str = f"/v1/federation/beliefs/{BELIEF}",
    body: bytes = SERVED,
    finding: str = "content_served",
) -> dict[str, JsonValue]:
    return build_evidence(
        OUR_KEY,
        peer=PEER,
        finding=finding,  # type: ignore[arg-type]  # a vector may name any finding
        our_tombstone=tombstone(),
        our_key=verifier_key(OUR_ORG, OUR_KEY.verify_key.public_bytes),
        statement=response(path, body),
        body=body,
        their_key=verifier_key(PEER, PEER_KEY.verify_key.public_bytes),
        timestamp="2026-12-02T11:00:01.000Z",
    )


def resign_evidence(value: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in value.items() if k != "signature"}
    return {**body, "signature": b64url_encode(OUR_KEY.sign(canonical_json(body)))}


def _set(value: dict[str, Any], path: list[str], new: object) -> dict[str, Any]:
    changed = copy.deepcopy(value)
    target = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = new
    return changed


def _peer_answer(case: dict[str, Any], path: str, body: bytes, **kw: Any) -> dict[str, Any]:
    """The evidence rebuilt around an answer the peer really signed (then re-signed by us)."""
    statement = response(path, body, **kw)
    value = _set(case, ["their_response", "statement"], statement)
    value = _set(value, ["their_response", "body_b64"], b64url_encode(body))
    return resign_evidence(value)


def tamperings(valid: dict[str, Any]) -> list[dict[str, Any]]:
    """(name, path, new value, who re-signs, the expected error's words)."""
    other_vkey = verifier_key(PEER, OTHER_KEY.verify_key.public_bytes)
    bad_key = verifier_key("mallory.example", OTHER_KEY.verify_key.public_bytes)
    edits: list[tuple[str, list[str], object, str]] = [
        ("type", ["type"], "oblivio.something-else.v1", "expected an object of type"),
        ("peer", ["peer"], "someone-else.example", "expected their_key of someone-else"),
        ("finding", ["finding"], "not_deleted", "expected a response that shows 'not_deleted'"),
        ("our_key", ["our_key"], bad_key, "our_key is mallory.example's"),
        ("their_key", ["their_key"], other_vkey, "their_key is not the given peer key"),
        ("timestamp", ["timestamp"], "2026-12-03T00:00:00.000Z", "evidence: signature"),
        ("key_id", ["key_id"], "00" * 32, "evidence: expected key_id"),
        ("signature", ["signature"], b64url_encode(bytes(64)), "evidence: signature"),
        (
            "body_b64",
            ["their_response", "body_b64"],
            b64url_encode(canonical_json({"status": "deleted", "content": None})),
            "body_sha256 is not the SHA-256 of the body",
        ),
    ]
    statement_fields: dict[str, object] = {
        "type": "oblivio.other.v1",
        "node": "someone-else.example",
        "key_id": OTHER_KEY.key_id,
        "method": "POST",
        "path": f"/v1/federation/beliefs/{BELIEF}x",
        "status": 404,
        "body_sha256": "00" * 32,
        "signed_at": "2026-12-02T09:00:00.000Z",
        "signature": b64url_encode(bytes(64)),
    }
    for name, new in statement_fields.items():
        words = {
            "type": "expected a statement of type",
            "key_id": "response: expected key_id",
        }.get(name, "response: signature does not verify")
        edits.append((f"statement.{name}", ["their_response", "statement", name], new, words))
    tomb_fields: dict[str, object] = {
        "id": "tomb_0193a1b2-0000-7000-8000-0000000000bb",
        "entity_uri": "belief:0193a1b2-0000-7000-8000-000000000002",
        "scope": "team",
        "signed_by": f"agent:{OUR_ORG}/someone",
        "key_id": OTHER_KEY.key_id,
        "signature": b64url_encode(bytes(64)),
        "created_at": "2026-12-02T10:30:00.000Z",
        "legal_hold": True,
    }
    for name, new in tomb_fields.items():
        words = "expected key_id" if name == "key_id" else "our_tombstone: Ed25519 signature"
        edits.append((f"our_tombstone.{name}", ["our_tombstone", name], new, words))
    cases: list[dict[str, Any]] = []
    checked_first = ("type", "key_id", "our_key", "our_tombstone")
    for name, path, new, words in edits:
        altered = _set(valid, path, new)
        in_transit = words if path[0] in checked_first else "evidence: signature does not verify"
        cases.append(
            {"name": f"{name} altered", "resign": [], "error": in_transit, "value": altered}
        )
        if path[0] not in (*checked_first, "signature", "timestamp"):
            # The reporter forging: its own signature holds, the peer's checks must not.
            forged = {"name": f"{name} forged", "resign": ["evidence"], "error": words}
            cases.append({**forged, "value": resign_evidence(altered)})
    genuine = [
        (
            "peer answered 404",
            _peer_answer(valid, f"/v1/federation/beliefs/{BELIEF}", SERVED, status=404),
            "expected ignorer.example's 200 answer to a GET",
        ),
        (
            "peer answered the deletion",
            _peer_answer(
                valid,
                f"/v1/federation/beliefs/{BELIEF}",
                canonical_json({"status": "deleted", "tombstone": {}, "content": None}),
            ),
            "got one showing nothing served",
        ),
        (
            "peer answered for another belief",
            _peer_answer(
                valid, "/v1/federation/beliefs/0193a1b2-0000-7000-8000-000000000009", SERVED
            ),
            "not belief",
        ),
        (
            "peer answered before the tombstone",
            _peer_answer(
                valid, f"/v1/federation/beliefs/{BELIEF}", SERVED, at="2026-12-02T09:59:59.999Z"
            ),
            "not after the tombstone",
        ),
        (
            "status route shows it deleted",
            _peer_answer(
                valid,
                f"/federation/belief/{BELIEF}/status",
                canonical_json({"exists": True, "deleted": True}),
            ),
            "got one showing nothing served",
        ),
    ]
    for name, value, words in genuine:
        cases.append(
            {"name": name, "resign": ["response", "evidence"], "error": words, "value": value}
        )
    return cases


def build() -> dict[str, Any]:
    valid = evidence()
    kept = evidence(f"/federation/belief/{BELIEF}/status", KEPT, "not_deleted")
    return {
        "note": (
            "self-generated by oblivio's core/evidence.py (tests/core/noncompliance_vectors.py): "
            "it pins oblivio.noncompliance-evidence.v1 and oblivio.federation-response.v1; "
            "not an independent vector"
        ),
        "our_key": verifier_key(OUR_ORG, OUR_KEY.verify_key.public_bytes),
        "peer_key": verifier_key(PEER, PEER_KEY.verify_key.public_bytes),
        "valid": [
            {"name": "belief route serves content", "finding": "content_served", "value": valid},
            {"name": "status route: not deleted", "finding": "not_deleted", "value": kept},
        ],
        "tampered": tamperings(valid),
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    PATH.write_text(render(), "utf-8")
