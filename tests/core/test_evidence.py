"""oblivio.federation-response.v1 and oblivio.noncompliance-evidence.v1 (core/evidence.py)
against tests/vectors/oblivio_noncompliance_evidence_v1.json (self-generated) and properties."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.errors import VerificationError
from oblivio.core.evidence import (
    belief_of_path,
    build_evidence,
    decode_statement,
    encode_statement,
    served_finding,
    sign_response,
    verify_evidence,
    verify_response,
)
from oblivio.core.note import verifier_key
from tests.core import noncompliance_vectors as vectors

VECTORS: dict[str, Any] = json.loads(vectors.PATH.read_text("utf-8"))


def test_the_vector_file_is_what_the_format_builds_today() -> None:
    """A change to the format (field, hash, signing bytes) shows as a changed vector file."""
    assert vectors.PATH.read_text("utf-8") == vectors.render()


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["name"])
def test_valid_evidence_verifies_offline(case: dict[str, Any]) -> None:
    found = verify_evidence(case["value"], VECTORS["peer_key"])
    assert found.finding == case["finding"]
    assert found.peer == "ignorer.example"
    assert found.peer_key_pinned
    assert verify_evidence(case["value"]).peer_key_pinned is False


@pytest.mark.parametrize("case", VECTORS["tampered"], ids=lambda c: c["name"])
def test_each_single_field_tampering_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(VerificationError) as refused:
        verify_evidence(case["value"], VECTORS["peer_key"])
    assert case["error"] in str(refused.value)


def test_every_field_of_the_evidence_is_tampered_with_in_the_vectors() -> None:
    """The vectors cover every leaf field of the record (but the tombstone's unsigned reason,
    which only the evidence's own signature covers: see the next test)."""
    valid = VECTORS["valid"][0]["value"]
    leaves = {"type", "peer", "finding", "our_key", "their_key", "timestamp", "key_id"}
    leaves |= {"signature", "body_b64"} | {
        f"statement.{f}" for f in valid["their_response"]["statement"]
    }
    leaves |= {f"our_tombstone.{f}" for f in valid["our_tombstone"] if f != "reason"}
    named = {c["name"].rsplit(" ", 1)[0] for c in VECTORS["tampered"]}
    assert leaves <= named


def test_the_tombstone_reason_is_bound_by_the_evidence_signature() -> None:
    value = copy.deepcopy(VECTORS["valid"][0]["value"])
    value["our_tombstone"]["reason"] = "something else"
    with pytest.raises(VerificationError, match="evidence: signature"):
        verify_evidence(value)


def test_a_peer_key_of_another_peer_is_refused() -> None:
    other = verifier_key("ignorer.example", vectors.OTHER_KEY.verify_key.public_bytes)
    with pytest.raises(VerificationError, match="not the given peer key"):
        verify_evidence(VECTORS["valid"][0]["value"], other)


def test_malformed_evidence_is_refused_not_crashed() -> None:
    for value in (None, [], "x", {"type": "oblivio.noncompliance-evidence.v1"}):
        with pytest.raises(VerificationError):
            verify_evidence(value)
    broken = copy.deepcopy(VECTORS["valid"][0]["value"])
    broken["their_response"] = {"statement": 3, "body_b64": "!!"}
    with pytest.raises(VerificationError):
        verify_evidence(broken)


# -- properties ----------------------------------------------------------------------------------

PATHS = st.sampled_from(
    [
        "/v1/federation/beliefs/b1",
        "/federation/belief/b1/status",
        "/v1/federation/tombstones?since=x&limit=3",
        "/federation/tombstone",
    ]
)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=PATHS,
    status=st.integers(100, 599),
    body=st.binary(max_size=300),
    flip=st.integers(0, 10_000),
)
def test_a_signed_response_verifies_and_covers_exactly_its_body(
    method: str, path: str, status: int, body: bytes, flip: int
) -> None:
    statement = sign_response(
        vectors.PEER_KEY,
        node="ignorer.example",
        method=method,
        path=path,
        status=status,
        body=body,
        signed_at="2026-12-02T11:00:00.000Z",
    )
    header = encode_statement(statement)
    signed = verify_response(decode_statement(header), body, vectors.PEER_KEY.verify_key)
    assert (signed.method, signed.path, signed.status, signed.body) == (method, path, status, body)
    altered = bytearray(body or b"\x00")
    altered[flip % len(altered)] ^= 0x01
    with pytest.raises(VerificationError):
        verify_response(statement, bytes(altered) if body else b"\x00", vectors.PEER_KEY.verify_key)
    with pytest.raises(VerificationError):
        verify_response(statement, body, vectors.OTHER_KEY.verify_key)


def _leaves(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*prefix, k))]
    return [prefix]


@settings(max_examples=40, deadline=None)
@given(
    belief=st.uuids(version=4).map(str),
    content=st.text(min_size=1, max_size=60),
    minutes=st.integers(1, 100_000),
    pick=st.integers(0, 10_000),
)
def test_evidence_round_trips_and_any_changed_field_is_refused(
    belief: str, content: str, minutes: int, pick: int
) -> None:
    from datetime import timedelta

    from oblivio.core.identifiers import format_time, parse_time

    record = vectors.tombstone(f"belief:{belief}")
    body = canonical_json({"id": belief, "status": "active", "content": content})
    at = format_time(parse_time(vectors.TOMBSTONE_AT) + timedelta(minutes=minutes))
    path = f"/v1/federation/beliefs/{belief}"
    evidence = build_evidence(
        vectors.OUR_KEY,
        peer="ignorer.example",
        finding="content_served",
        our_tombstone=record,
        our_key=VECTORS["our_key"],
        statement=vectors.response(path, body, at=at),
        body=body,
        their_key=VECTORS["peer_key"],
        timestamp=at,
    )
    found = verify_evidence(json.loads(canonical_json(evidence)), VECTORS["peer_key"])
    assert (found.belief_id, found.responded_at) == (belief, at)
    leaves = _leaves(evidence)
    leaf = leaves[pick % len(leaves)]
    changed: Any = copy.deepcopy(evidence)
    target = changed
    for part in leaf[:-1]:
        target = target[part]
    old = target[leaf[-1]]
    target[leaf[-1]] = (
        (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else f"{old}x")
    )
    with pytest.raises(VerificationError):
        verify_evidence(changed, VECTORS["peer_key"])


def test_what_a_response_shows() -> None:
    served = canonical_json({"status": "active", "content": "c"})
    assert served_finding("/v1/federation/beliefs/b", 200, served) == "content_served"
    assert (
        served_finding("/v1/federation/beliefs/b", 200, b'{"ciphertext":"x"}') == "content_served"
    )
    deleted = canonical_json({"status": "deleted", "tombstone": {}, "content": None})
    assert served_finding("/v1/federation/beliefs/b", 200, deleted) is None
    assert served_finding("/v1/federation/beliefs/b", 404, served) is None
    assert served_finding("/v1/federation/beliefs/b", 200, b"not json") is None
    kept = b'{"exists":true,"deleted":false}'
    assert served_finding("/federation/belief/b/status", 200, kept) == "not_deleted"
    assert (
        served_finding("/federation/belief/b/status", 200, b'{"exists":true,"deleted":true}')
        is None
    )
    assert served_finding("/federation/tombstone", 200, kept) is None
    assert belief_of_path("/federation/belief/b1/status?x=1") == "b1"
    assert belief_of_path("/v1/federation/beliefs/b1/x") is None
    assert b64url_encode(b"") == ""
