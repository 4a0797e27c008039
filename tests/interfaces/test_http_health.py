"""GET /v1/health and the server's epoch thread (issue 11, finding 2): a key-backend failure
under a running ``oblivio serve`` no longer kills the thread; the route says unhealthy while
epochs cannot commit, and the pending forgets complete once the backend is back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from oblivio.core.encoding import b64url_encode
from oblivio.interfaces.http import create_app
from oblivio.keys.software import SoftwareBackend
from oblivio.node.node import init_node
from tests.interfaces.conftest import Api, make_keys
from tests.keys.key_file_outage import key_file_outage
from tests.processes import Served, free_port, poll

EPOCH_FIELDS = {
    "running",
    "last_success_at",
    "last_epoch",
    "consecutive_failures",
    "failing_since",
    "last_error",
    "next_attempt_at",
}
DEADLINE = 120.0
"""Seconds a poll waits at most: generous, the machine is shared (the loop retries within 60)."""


def _poll(what: str, probe: Callable[[], bool]) -> None:
    poll(what, probe, deadline=DEADLINE)


def test_health_is_public_and_ok_while_the_epoch_loop_commits(api: Api) -> None:
    response = api.client.get("/v1/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"status", "epochs"}
    assert body["status"] == "ok"
    assert set(body["epochs"]) == EPOCH_FIELDS
    assert body["epochs"]["running"] is True
    assert body["epochs"]["consecutive_failures"] == 0


def test_health_is_ok_without_an_epoch_loop(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init_node(home, name="node.example").close()
    with TestClient(create_app(home, run_epochs=False)) as client:
        response = client.get("/v1/health")
    assert response.status_code == 200, response.text
    assert response.json()["epochs"]["running"] is False


@pytest.fixture
def served(tmp_path: Path, store_uri: str) -> Iterator[Served]:
    """A node with a 1-second epoch interval, served in its own process."""
    home = tmp_path / "node"
    init_node(home, name="served.example", store_uri=store_uri).close()
    config = json.loads((home / "config.json").read_text())
    config["forgetting"] = {"epoch_interval_seconds": 1}
    (home / "config.json").write_text(json.dumps(config))
    server = Served("node", home, free_port(), make_keys(home)["admin"], tmp_path / "serve.log")
    server.start(deadline=DEADLINE)
    try:
        yield server
    finally:
        server.stop()


def _put(client: httpx.Client, plaintext: bytes) -> str:
    response = client.post("/v1/artifacts", json={"plaintext_b64url": b64url_encode(plaintext)})
    assert response.status_code == 201, response.text
    artifact_id: str = response.json()["artifact_id"]
    return artifact_id


def _state(client: httpx.Client, request_id: str) -> str:
    response = client.get(f"/v1/forget/{request_id}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def test_epoch_thread_survives_key_backend_error(served: Served) -> None:
    with served.client() as client:
        _survives_key_backend_error(served, client)


def _survives_key_backend_error(served: Served, client: httpx.Client) -> None:
    home = served.home
    key_file = home / "keys" / "software-root-keys"
    forgotten = [_put(client, b"forget me %d" % i) for i in range(2)]
    deferred = _put(client, b"forget me while the backend is out")
    kept = _put(client, b"keep me")
    epoch_before = client.get("/v1/checkpoint").json()["epoch"]

    with key_file_outage(key_file):
        requests = []
        for artifact_id in forgotten:
            response = client.post(
                f"/v1/artifacts/{artifact_id}/forget", json={"level": 2, "wait": False}
            )
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "pending"
            requests.append(response.json()["request_id"])

        # wait: true during the outage: stored and acknowledged as pending (202), not an error.
        waited = client.post(f"/v1/artifacts/{deferred}/forget", json={"level": 2, "wait": True})
        assert waited.status_code == 202, waited.text
        assert waited.json()["state"] == "pending"
        assert "KeyBackendError" in waited.json()["epoch_deferred"]
        requests.append(waited.json()["request_id"])

        unhealthy: list[httpx.Response] = []

        def reported_unhealthy() -> bool:
            response = httpx.get(served.url + "/v1/health", timeout=60)  # no API key
            if response.status_code == 503:
                unhealthy.append(response)
            else:
                assert response.status_code == 200, response.text
            return bool(unhealthy)

        _poll("GET /v1/health answering 503", reported_unhealthy)
        body: dict[str, Any] = unhealthy[0].json()
        assert body["status"] == "unhealthy"
        assert body["epochs"]["running"] is True
        assert body["epochs"]["consecutive_failures"] >= 1
        assert body["epochs"]["last_error"] == "KeyBackendError (key_backend_error)"
        assert "KeyBackendError" in body["reason"]
        # Public: no path, no artifact or request id, no error message.
        for private in [str(home), "damaged", *forgotten, *requests]:
            assert private not in unhealthy[0].text, private
        # Acknowledged and pending; reads stay suppressed.
        assert [_state(client, r) for r in requests] == ["pending"] * 3
        assert client.get(f"/v1/artifacts/{forgotten[0]}").status_code == 410

    _poll(
        "the pending forgets committed",
        lambda: [_state(client, r) for r in requests] == ["done"] * 3,
    )
    _poll("GET /v1/health answering 200", lambda: client.get("/v1/health").status_code == 200)
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    assert health["epochs"]["consecutive_failures"] == 0
    assert health["epochs"]["last_success_at"] is not None
    assert client.get("/v1/checkpoint").json()["epoch"] > epoch_before

    destroyed = set()
    for artifact_id in [*forgotten, deferred]:
        proof = client.get(f"/v1/artifacts/{artifact_id}/proof")  # checked by the server
        assert proof.status_code == 200, proof.text
        destroyed.add(proof.json()["destruction_receipt"]["key_ref"]["key_id"])
    backend = SoftwareBackend(key_file)
    try:
        assert not destroyed & backend.live_root_keys()
    finally:
        backend.close()
    read = client.get(f"/v1/artifacts/{kept}")
    assert read.status_code == 200, read.text
    assert read.json()["plaintext_b64url"] == b64url_encode(b"keep me")

    served.stop()
    log = served.log.read_text()
    assert "epoch attempt failed" in log
    assert "KeyBackendError" in log
