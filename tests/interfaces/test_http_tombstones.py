"""The HTTP API's tombstone routes: seed 002 §23.6 shapes and every §23.7 code, on both stores.

Every bad request is checked to change no tombstone state and to answer 4xx, never 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from oblivio.core.encoding import b64url_encode
from oblivio.core.tombstones import sign_tombstone
from oblivio.node.compliance import open_compliance
from oblivio.node.ids import new_record_id
from oblivio.node.node import init_node, open_node
from tests.interfaces import third_party_verifier
from tests.interfaces.conftest import Api

ALICE = {"entity_uri": "user:alice", "scope": "*", "reason": "GDPR Art. 17 erasure #2026-042"}


def manifest(api: Api) -> dict[str, Any]:
    response = api.client.get("/v1/manifest")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def state(api: Api) -> tuple[int, int]:
    return api.count("tombstones"), api.count("tombstone_revocations")


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def test_issue_returns_a_record_a_third_party_can_verify(api: Api) -> None:
    response = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin)
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["id"].startswith("tomb_")
    assert record["signed_by"] == "agent:node-a.example/admin-1"
    assert (record["entity_uri"], record["scope"], record["legal_hold"]) == (
        "user:alice",
        "*",
        False,
    )
    third_party_verifier.verify(record, manifest(api))

    status = api.client.get("/v1/tombstones/" + quote("user:alice", safe=""), headers=api.admin)
    assert status.status_code == 200
    body = status.json()
    assert body["tombstoned"] is True
    assert body["tombstones"] == [record]
    for served in body["tombstones"]:
        third_party_verifier.verify(served, manifest(api))


def test_scope_arrays_and_unknown_entities(api: Api) -> None:
    response = api.client.post(
        "/v1/tombstones",
        json={"entity_uri": "user:bob", "scope": ["team", "local"], "reason": None},
        headers=api.admin,
    )
    assert response.status_code == 201
    assert response.json()["scope"] == ["team", "local"]
    third_party_verifier.verify(response.json(), manifest(api))
    nothing = api.client.get("/v1/tombstones/user:nobody", headers=api.admin)
    assert nothing.json() == {"tombstoned": False, "tombstones": []}


def test_already_exists_is_409_with_the_active_record(api: Api) -> None:
    first = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin).json()
    before = state(api)
    again = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin)
    assert_error(again, 409, "tombstone_already_exists")
    assert again.json()["tombstone"] == first
    third_party_verifier.verify(again.json()["tombstone"], manifest(api))
    assert state(api) == before


def test_revoke_then_already_revoked_then_reissue(api: Api) -> None:
    record = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin).json()
    revoked = api.client.post(
        f"/v1/tombstones/{record['id']}/revoke",
        json={"reason": "Court order #2026-CR-1234"},
        headers=api.admin,
    )
    assert revoked.status_code == 200, revoked.text
    revocation = revoked.json()
    assert revocation["id"].startswith("tombrevoke_")
    assert revocation["tombstone_id"] == record["id"]
    assert revoked.headers["Oblivio-Restoration"].startswith("suppression lifted")
    third_party_verifier.verify(revocation, manifest(api))

    again = api.client.post(
        f"/v1/tombstones/{record['id']}/revoke", json={"reason": "again"}, headers=api.admin
    )
    assert_error(again, 409, "tombstone_already_revoked")

    status = api.client.get("/v1/tombstones/user:alice", headers=api.admin).json()
    assert status["tombstoned"] is False
    assert status["revocations"] == [revocation]
    # The tombstone stays (immutable); a new one may be issued for the same entity and scope.
    reissued = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin)
    assert reissued.status_code == 201
    assert state(api) == (2, 1)


def test_revoke_unknown_is_404(api: Api) -> None:
    unknown = "tomb_" + new_record_id()
    assert_error(
        api.client.post(
            f"/v1/tombstones/{unknown}/revoke", json={"reason": "x"}, headers=api.admin
        ),
        404,
        "tombstone_not_found",
    )
    assert state(api) == (0, 0)


@pytest.mark.parametrize(
    "scope", ["global", "", [], ["team", "team"], ["*"], 3, None, {"a": 1}, True]
)
def test_invalid_scope(api: Api, scope: object) -> None:
    response = api.client.post(
        "/v1/tombstones", json={"entity_uri": "user:alice", "scope": scope}, headers=api.admin
    )
    assert_error(response, 400, "tombstone_invalid_scope")
    assert state(api) == (0, 0)


@pytest.mark.parametrize(
    "entity_uri", ["user:*", "*", "alice", "", "User:alice", "user:a b", 42, None, "a:" + "x" * 513]
)
def test_invalid_entity_uri(api: Api, entity_uri: object) -> None:
    response = api.client.post(
        "/v1/tombstones", json={"entity_uri": entity_uri, "scope": "*"}, headers=api.admin
    )
    assert_error(response, 400, "tombstone_entity_uri_invalid")
    assert state(api) == (0, 0)


def test_invalid_entity_uri_on_status_route(api: Api) -> None:
    response = api.client.get("/v1/tombstones/" + quote("user:*", safe=""), headers=api.admin)
    assert_error(response, 400, "tombstone_entity_uri_invalid")


def test_agent_and_peer_keys_are_denied_every_tombstone_route(api: Api) -> None:
    record = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin).json()
    before = state(api)
    for headers in (api.agent, api.peer):
        assert_error(
            api.client.post(
                "/v1/tombstones", json={**ALICE, "entity_uri": "user:eve"}, headers=headers
            ),
            403,
            "tombstone_access_denied",
        )
        assert_error(
            api.client.get("/v1/tombstones/user:alice", headers=headers),
            403,
            "tombstone_access_denied",
        )
        assert_error(
            api.client.post(
                f"/v1/tombstones/{record['id']}/revoke", json={"reason": "x"}, headers=headers
            ),
            403,
            "tombstone_access_denied",
        )
        assert_error(api.client.get("/v1/audit", headers=headers), 403, "tombstone_access_denied")
    assert state(api) == before


def test_missing_or_unknown_key_is_401(api: Api) -> None:
    assert_error(api.client.post("/v1/tombstones", json=ALICE), 401, "access_denied")
    bad = {"Authorization": "Bearer obk_not-a-real-key"}
    assert_error(api.client.post("/v1/tombstones", json=ALICE, headers=bad), 401, "access_denied")
    assert state(api) == (0, 0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "invalid_request"),
        (b'{"entity_uri":"user:alice"}', "tombstone_invalid_scope"),
        (b'{"entity_uri":"user:alice","scope":"*","legal_hold":"yes"}', "invalid_request"),
        (b'{"entity_uri":"user:alice","scope":"*","reason":7}', "invalid_request"),
        (b'{"entity_uri":"user:alice","scope":"*","colour":"red"}', "invalid_request"),
        (b"", "invalid_request"),
    ],
)
def test_malformed_bodies(api: Api, body: bytes, code: str) -> None:
    response = api.client.post(
        "/v1/tombstones", content=body, headers={**api.admin, "Content-Type": "application/json"}
    )
    assert_error(response, 400, code)
    assert state(api) == (0, 0)


def test_oversize_body_is_413(api: Api) -> None:
    huge = {**ALICE, "reason": "x" * 100_000}
    assert_error(
        api.client.post("/v1/tombstones", json=huge, headers=api.admin), 413, "request_too_large"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"entity_uri":"user:alice","scope":"*","reason":"'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    streamed = api.client.post(
        "/v1/tombstones",
        content=chunks(),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert_error(streamed, 413, "request_too_large")
    assert state(api) == (0, 0)


def test_unknown_route_and_method_are_json(api: Api) -> None:
    assert_error(api.client.get("/v1/nothing"), 404, "not_found")
    assert_error(
        api.client.put("/v1/tombstones", json=ALICE, headers=api.admin), 405, "method_not_allowed"
    )


def test_audit_records_issue_and_revoke(api: Api) -> None:
    record = api.client.post("/v1/tombstones", json=ALICE, headers=api.admin).json()
    api.client.post(
        f"/v1/tombstones/{record['id']}/revoke", json={"reason": "court"}, headers=api.admin
    )
    events = api.client.get("/v1/audit", headers=api.admin).json()["events"]
    kinds = [e["event"] for e in events]
    assert "tombstone_issued" in kinds
    assert "tombstone_revoked" in kinds
    issued = next(e for e in events if e["event"] == "tombstone_issued")
    assert issued["subject"] == record["id"]
    assert issued["actor"] == "agent:node-a.example/admin-1"


def test_legal_hold_tombstone_is_audited_as_a_hold(api: Api) -> None:
    response = api.client.post(
        "/v1/tombstones", json={**ALICE, "legal_hold": True}, headers=api.admin
    )
    assert response.status_code == 201
    assert response.json()["legal_hold"] is True
    kinds = [e["event"] for e in api.client.get("/v1/audit", headers=api.admin).json()["events"]]
    assert "legal_hold_placed" in kinds


# -- inbound federation tombstones (§23.4.2) ------------------------------------------------------


@pytest.fixture
def org_b(api: Api, tmp_path: Path) -> Path:
    """The peer the ``api`` fixture pinned (``api.token`` is its capability token)."""
    return tmp_path / "node-b"


def trust(api: Api, other: Path) -> None:
    with open_node(other) as node:
        own = open_compliance(node).own_manifest()
    with open_node(api.home) as node:
        open_compliance(node).manifests.trust(dict(own.raw), own.keys[0].key_id)


def issue_at(home: Path, entity_uri: str) -> dict[str, Any]:
    with open_node(home) as node:
        record, _ = open_compliance(node).tombstones.issue("dpo", entity_uri, "*", "erasure")
    return record.to_dict()


def test_inbound_tombstone_from_a_trusted_org(api: Api, org_b: Path) -> None:
    trust(api, org_b)
    record = issue_at(org_b, "user:carol")
    accepted = api.client.post("/federation/tombstone", json=record, headers=api.token)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"accepted": True, "tombstone_id": record["id"], "new": True}
    replay = api.client.post("/federation/tombstone", json=record, headers=api.token)
    assert replay.json() == {"accepted": True, "tombstone_id": record["id"], "new": False}
    assert state(api) == (1, 0)
    status = api.client.get("/v1/tombstones/user:carol", headers=api.admin).json()
    assert status["tombstones"] == [record]


def test_reason_redacted_to_redacted_still_verifies(api: Api, org_b: Path) -> None:
    trust(api, org_b)
    record = {**issue_at(org_b, "user:dave"), "reason": "redacted"}
    response = api.client.post("/federation/tombstone", json=record, headers=api.token)
    assert response.status_code == 200, response.text
    with open_node(org_b) as node:
        third_party_verifier.verify(record, dict(open_compliance(node).own_manifest().raw))


def test_inbound_from_an_org_whose_manifest_cannot_be_had_is_kept_unverified(
    api: Api, tmp_path: Path
) -> None:
    """Relayed by peer B from org C, whose manifest B cannot hand over (B is unreachable):
    kept as unverified and audited (§23.4.2: never dropped), not stored as a tombstone."""
    org_c = tmp_path / "node-c"
    init_node(org_c, name="node-c.example").close()
    record = issue_at(org_c, "user:erin")
    response = api.client.post("/federation/tombstone", json=record, headers=api.token)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] is False
    assert response.json()["status"] == "unverified"
    assert state(api) == (0, 0)
    assert api.count("federation_unverified") == 1
    kinds = [e["event"] for e in api.client.get("/v1/audit", headers=api.admin).json()["events"]]
    assert "tombstone_unverified" in kinds


def test_inbound_with_a_tampered_field_fails(api: Api, org_b: Path) -> None:
    trust(api, org_b)
    record = {**issue_at(org_b, "user:frank"), "entity_uri": "user:george"}
    assert_error(
        api.client.post("/federation/tombstone", json=record, headers=api.token),
        400,
        "tombstone_verification_failed",
    )
    assert state(api) == (0, 0)


def test_inbound_signed_with_another_orgs_key_fails(api: Api, org_b: Path, tmp_path: Path) -> None:
    """signed_by names org B, but the signature is org C's, made with B's key id named."""
    trust(api, org_b)
    org_c = tmp_path / "node-c"
    init_node(org_c, name="node-c.example").close()
    trust(api, org_c)
    with open_node(org_c) as node:
        forged = sign_tombstone(
            node.signing_key,
            record_id=new_record_id("tomb_"),
            entity_uri="user:henry",
            scope="*",
            reason=None,
            signed_by="agent:node-b.example/dpo",
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            legal_hold=False,
        )
    response = api.client.post("/federation/tombstone", json=forged.to_dict(), headers=api.token)
    assert_error(response, 400, "tombstone_verification_failed")
    assert "not in the manifest of org node-b.example" in response.json()["error"]["message"]
    assert state(api) == (0, 0)


def test_rotated_out_key_verifies_history_but_not_new_records(api: Api, org_b: Path) -> None:
    old_record = issue_at(org_b, "user:ivy")
    with open_node(org_b) as node:
        services = open_compliance(node)
        old_key = node.signing_key
        services.rotate_signing_key()
    new_record = issue_at(org_b, "user:jack")
    trust(api, org_b)
    assert new_record["key_id"] != old_record["key_id"]
    for record in (old_record, new_record):
        response = api.client.post("/federation/tombstone", json=record, headers=api.token)
        assert response.status_code == 200, response.text
    late = sign_tombstone(
        old_key,
        record_id=new_record_id("tomb_"),
        entity_uri="user:kim",
        scope="*",
        reason=None,
        signed_by="agent:node-b.example/dpo",
        created_at=(datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        legal_hold=False,
    )
    response = api.client.post("/federation/tombstone", json=late.to_dict(), headers=api.token)
    assert_error(response, 400, "tombstone_verification_failed")
    assert "rotated out" in response.json()["error"]["message"]
    assert state(api) == (2, 0)


def test_inbound_requires_a_capability_token(api: Api, org_b: Path) -> None:
    trust(api, org_b)
    record = issue_at(org_b, "user:liam")
    for headers in (api.agent, api.admin, {}):
        assert_error(
            api.client.post("/federation/tombstone", json=record, headers=headers),
            401,
            "capability_denied",
        )
    assert_error(
        api.client.post("/federation/tombstone", json=record, headers=api.peer),
        401,
        "peer_api_key_retired",
    )
    assert state(api) == (0, 0)


def test_malformed_inbound_record_is_400(api: Api) -> None:
    for bad in ({}, {"id": "tomb_x"}, {"entity_uri": "user:*"}):
        response = api.client.post("/federation/tombstone", json=bad, headers=api.token)
        assert 400 <= response.status_code < 500, response.text
    assert state(api) == (0, 0)


# -- seed 001 deletion requests -----------------------------------------------------------------


def test_federation_delete_and_belief_status(api: Api) -> None:
    belief_id = new_record_id()
    tombstone_uuid = new_record_id()
    with open_node(api.home) as node:
        key = node.signing_key
    request = {
        "belief_id": belief_id,
        "tombstone_id": tombstone_uuid,
        "reason": "accidental_share",
        "originator_id": "node-a.example",
        "timestamp": (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "propagate": False,
    }
    import rfc8785

    request["signature"] = b64url_encode(key.sign(rfc8785.dumps(request)))
    response = api.client.post("/federation/delete", json=request, headers=api.admin)
    assert response.status_code == 200, response.text
    assert response.json()["propagation_status"] == "local_only"
    status = api.client.get(f"/federation/belief/{belief_id}/status", headers=api.token).json()
    assert status["exists"] is True
    assert status["deleted"] is True
    assert status["tombstone"]["entity_uri"] == f"belief:{belief_id}"

    forged = {**request, "reason": "other"}
    assert_error(
        api.client.post("/federation/delete", json=forged, headers=api.admin),
        400,
        "verification_failed",
    )
