"""Forgetting over HTTP: forget, proofs, checkpoints and log proofs, tombstone-driven forgetting
(a tombstone forgets its entity's artifacts; with legal_hold it only suppresses; a revocation
restores what was not erased) and the epoch timer of the served app."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oblivio.core.canonical import canonical_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.merkle_log import ConsistencyProof, InclusionProof, leaf_hash
from oblivio.core.note import open_checkpoint, parse_verifier_key
from oblivio.core.pof import verify_document
from oblivio.interfaces.http import create_app
from oblivio.node.node import init_node
from tests.interfaces.conftest import Api, make_keys


@pytest.fixture
def timed_api(tmp_path: Path, store_uri: str) -> Iterator[Api]:
    """A served node whose epoch timer ticks every 0.1 s."""
    home = tmp_path / "node"
    init_node(home, name="timer.example", store_uri=store_uri).close()
    config = json.loads((home / "config.json").read_text())
    config["forgetting"] = {"epoch_interval_seconds": 0.1, "heartbeat_seconds": 3600}
    (home / "config.json").write_text(json.dumps(config))
    keys = make_keys(home)
    with TestClient(create_app(home), raise_server_exceptions=False) as client:
        yield Api(client, home, keys["admin"], keys["agent"], keys["peer"])


def put(api: Api, text: bytes, entity: str | None = None, scope: str | None = None) -> str:
    body: dict[str, Any] = {"plaintext_b64url": b64url_encode(text), "metadata": {"k": 1}}
    if entity:
        body |= {"entity_uri": entity, "scope": scope or "local"}
    response = api.client.post("/v1/artifacts", json=body, headers=api.agent)
    assert response.status_code == 201, response.text
    artifact_id: str = response.json()["artifact_id"]
    return artifact_id


def wait_for_status(api: Api, artifact_id: str, status: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if api.client.get(f"/v1/artifacts/{artifact_id}", headers=api.agent).status_code == status:
            return
        time.sleep(0.05)
    pytest.fail(f"artifact {artifact_id} never answered {status}")


def test_forget_prove_verify_over_http(api: Api) -> None:
    artifact_id = put(api, b"alice's secret")
    kept = put(api, b"bob's note")
    forgotten = api.client.post(
        f"/v1/artifacts/{artifact_id}/forget",
        json={"level": 2, "reason": "erasure", "authority": "GDPR-17"},
        headers=api.admin,
    )
    assert forgotten.status_code == 200, forgotten.text
    assert forgotten.json()["state"] == "done"
    gone = api.client.get(f"/v1/artifacts/{artifact_id}", headers=api.agent)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "artifact_forgotten"
    assert api.client.get(f"/v1/artifacts/{kept}", headers=api.agent).status_code == 200

    proof = api.client.get(f"/v1/artifacts/{artifact_id}/proof", headers=api.agent).json()
    checkpoint = api.client.get("/v1/checkpoint").json()
    proven = verify_document(proof, checkpoint["verifier_key"])
    assert proven[0].artifact_id == artifact_id

    request_id = forgotten.json()["request_id"]
    bundle = api.client.get(f"/v1/forget/{request_id}/proof", headers=api.admin).json()
    assert len(verify_document(bundle, checkpoint["verifier_key"])) == 1


def test_checkpoint_and_log_proofs_verify(api: Api) -> None:
    first = api.client.get("/v1/checkpoint").json()
    artifact_id = put(api, b"x")
    api.client.post(f"/v1/artifacts/{artifact_id}/forget", json={"level": 1}, headers=api.admin)
    second = api.client.get("/v1/checkpoint").json()
    verifier = parse_verifier_key(second["verifier_key"])
    cp1 = open_checkpoint(first["checkpoint"].encode(), verifier)
    cp2 = open_checkpoint(second["checkpoint"].encode(), verifier)
    assert cp2.size > cp1.size
    consistency = api.client.get(
        "/v1/log/consistency", params={"first": cp1.size, "second": cp2.size}
    ).json()
    ConsistencyProof.from_dict(consistency).verify(cp1.root, cp2.root)
    last = cp2.size - 1
    entry = api.client.get(f"/v1/log/entries/{last}").json()["entry"]
    assert json.loads(entry)["type"] == "map_root"
    inclusion = api.client.get("/v1/log/inclusion", params={"index": last, "size": cp2.size})
    InclusionProof.from_dict(inclusion.json()).verify(leaf_hash(entry.encode()), cp2.root)
    history = api.client.get("/v1/checkpoints").json()["checkpoints"]
    assert [c["tree_size"] for c in history][-1] == cp2.size
    bad = api.client.get("/v1/log/inclusion", params={"index": cp2.size, "size": cp2.size})
    assert bad.status_code == 400


def test_level_0_and_1_have_no_proof_and_agents_cannot_forget(api: Api) -> None:
    artifact_id = put(api, b"y")
    denied = api.client.post(
        f"/v1/artifacts/{artifact_id}/forget", json={"level": 2}, headers=api.agent
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    api.client.post(f"/v1/artifacts/{artifact_id}/forget", json={"level": 0}, headers=api.admin)
    assert api.client.get(f"/v1/artifacts/{artifact_id}", headers=api.agent).status_code == 410
    no_proof = api.client.get(f"/v1/artifacts/{artifact_id}/proof", headers=api.agent)
    assert no_proof.status_code == 409


def test_tombstone_forgets_the_entity_in_covered_scopes(timed_api: Api) -> None:
    api = timed_api
    team = put(api, b"alice team fact", "user:alice", "team")
    public = put(api, b"alice public fact", "user:alice", "public")
    other = put(api, b"carol", "user:carol", "team")
    issued = api.client.post(
        "/v1/tombstones",
        json={"entity_uri": "user:alice", "scope": "team", "reason": "erasure"},
        headers=api.admin,
    )
    assert issued.status_code == 201
    wait_for_status(api, team, 410)
    # Wait for the epoch to execute it, then the proof exists (level 2 by default).
    deadline = time.monotonic() + 20
    while api.client.get(f"/v1/artifacts/{team}/proof", headers=api.agent).status_code != 200:
        assert time.monotonic() < deadline, "the timer epoch never executed the tombstone"
        time.sleep(0.05)
    assert api.client.get(f"/v1/artifacts/{public}", headers=api.agent).status_code == 200
    assert api.client.get(f"/v1/artifacts/{other}", headers=api.agent).status_code == 200

    revoked = api.client.post(
        f"/v1/tombstones/{issued.json()['id']}/revoke", json={"reason": "court"}, headers=api.admin
    )
    assert revoked.status_code == 200
    assert revoked.headers["Oblivio-Erased-Artifacts"] == "1"
    assert "stay unreadable" in revoked.headers["Oblivio-Restoration"]
    assert api.client.get(f"/v1/artifacts/{team}", headers=api.agent).status_code == 410


def test_legal_hold_tombstone_suppresses_and_revocation_restores(timed_api: Api) -> None:
    api = timed_api
    held = put(api, b"evidence", "user:dave", "company")
    issued = api.client.post(
        "/v1/tombstones",
        json={"entity_uri": "user:dave", "scope": "*", "reason": "hold", "legal_hold": True},
        headers=api.admin,
    )
    assert issued.status_code == 201
    wait_for_status(api, held, 410)
    time.sleep(0.5)  # several timer epochs: the hold keeps the keys
    revoked = api.client.post(
        f"/v1/tombstones/{issued.json()['id']}/revoke",
        json={"reason": "released"},
        headers=api.admin,
    )
    assert revoked.headers["Oblivio-Erased-Artifacts"] == "0"
    restored = api.client.get(f"/v1/artifacts/{held}", headers=api.agent)
    assert restored.status_code == 200, restored.text
    events = [e["event"] for e in api.client.get("/v1/audit", headers=api.admin).json()["events"]]
    assert "legal_hold_placed" in events
    assert "legal_hold_released" in events


def test_holds_over_http_defer_destruction(api: Api) -> None:
    artifact_id = put(api, b"z")
    hold = api.client.post(
        "/v1/holds", json={"artifact_id": artifact_id, "authority": "court"}, headers=api.admin
    )
    assert hold.status_code == 201
    forgotten = api.client.post(
        f"/v1/artifacts/{artifact_id}/forget", json={"level": 1}, headers=api.admin
    ).json()
    assert forgotten["state"] == "pending"
    released = api.client.post(
        f"/v1/holds/{hold.json()['hold_id']}/release",
        json={"authority": "court"},
        headers=api.admin,
    )
    assert released.status_code == 200
    status = api.client.get(f"/v1/forget/{forgotten['request_id']}", headers=api.admin).json()
    assert status["state"] == "pending"
    api.client.post(f"/v1/artifacts/{artifact_id}/forget", json={"level": 1}, headers=api.admin)
    status = api.client.get(f"/v1/forget/{forgotten['request_id']}", headers=api.admin).json()
    assert status["state"] == "done"
    assert canonical_json(status)  # JSON all the way


def test_get_after_partial_forgets_says_forgotten(api: Api) -> None:
    artifact_id = put(api, b"recover, then decrypt")
    path = f"/v1/artifacts/{artifact_id}"
    for capability in ("recover", "decrypt"):
        done = api.client.post(
            path + "/forget", json={"level": 2, "capabilities": [capability]}, headers=api.admin
        )
        assert done.status_code == 200, done.text
        assert done.json()["state"] == "done"
        if capability == "recover":
            assert api.client.get(path, headers=api.agent).status_code == 200
    gone = api.client.get(path, headers=api.agent)
    assert gone.status_code == 410, gone.text
    assert gone.json()["error"]["code"] == "artifact_forgotten"
    assert "was forgotten at level 2" in gone.json()["error"]["message"]
    proof = api.client.get(path + "/proof", headers=api.agent).json()
    checkpoint = api.client.get("/v1/checkpoint").json()
    [proven] = verify_document(proof, checkpoint["verifier_key"])
    assert proven.capabilities == ("decrypt", "recover")


def test_an_identical_forget_over_http_answers_with_the_existing_request(api: Api) -> None:
    artifact_id = put(api, b"once over http")
    path = f"/v1/artifacts/{artifact_id}/forget"
    first = api.client.post(path, json={"level": 2, "requestor": "alice"}, headers=api.admin)
    assert first.status_code == 200, first.text
    assert first.json()["existing"] is False
    size = api.client.get("/v1/checkpoint").json()["tree_size"]
    again = api.client.post(path, json={"level": 2, "capabilities": ["prove"]}, headers=api.admin)
    assert again.status_code == 200, again.text
    assert again.json()["existing"] is True
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.json()["opening"] is None  # alice's opening is hers
    assert api.client.get("/v1/checkpoint").json()["tree_size"] == size
    assert api.count("forget_requests") == 1
