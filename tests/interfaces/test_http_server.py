"""The API over real HTTP: ``oblivio serve`` in its own process, many concurrent clients."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from oblivio.node.home import load_config
from oblivio.node.node import init_node
from oblivio.store.database import open_database
from tests.interfaces import third_party_verifier
from tests.interfaces.conftest import make_keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path, store_uri: str) -> Iterator[tuple[str, dict[str, str], Path]]:
    home = tmp_path / "node"
    init_node(home, name="served.example", store_uri=store_uri).close()
    admin = make_keys(home)["admin"]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "oblivio", "serve", "--home", str(home), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/v1/manifest", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail(f"server did not start: {process.stderr.read() if process.stderr else ''}")
        yield base, admin, home
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_fifty_concurrent_identical_posts_create_one_record(
    server: tuple[str, dict[str, str], Path],
) -> None:
    base, admin, _ = server
    body = {"entity_uri": "user:alice", "scope": "*", "reason": "GDPR"}
    with httpx.Client(base_url=base, headers=admin, timeout=60) as client:

        def post(_: int) -> httpx.Response:
            return client.post("/v1/tombstones", json=body)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(post, range(50)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201] + [409] * 49, statuses
        created = next(r.json() for r in responses if r.status_code == 201)
        assert all(r.json()["tombstone"] == created for r in responses if r.status_code == 409)
        status = client.get("/v1/tombstones/user:alice").json()
        assert [t["id"] for t in status["tombstones"]] == [created["id"]]
        third_party_verifier.verify(created, client.get("/v1/manifest").json())


def _store_counts(home: Path) -> dict[str, int]:
    """Rows of the served node's store, read with a connection of this process (the server
    keeps the node open: opening a second node here would run its crash recovery)."""
    with open_database(load_config(home).store_uri) as db, db.transaction(write=False) as tx:
        counts = {}
        for table in ("forget_requests", "forget_events", "checkpoints", "artifacts"):
            row = tx.fetchone(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            assert row is not None
            counts[table] = int(row[0])
        pending = tx.fetchone("SELECT COUNT(*) FROM artifacts WHERE leaf_pending = 1")
        assert pending is not None
        counts["pending"] = int(pending[0])
    return counts


def test_parallel_identical_forgets_make_one_request(
    server: tuple[str, dict[str, str], Path],
) -> None:
    base, admin, home = server
    with httpx.Client(base_url=base, headers=admin, timeout=60) as client:
        put = client.post("/v1/artifacts", json={"plaintext_b64url": "b25jZQ"})
        assert put.status_code == 201, put.text
        artifact_id = put.json()["artifact_id"]
        deadline = time.monotonic() + 30
        while _store_counts(home)["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the epoch timer commits the new leaf
        before = _store_counts(home)
        assert before["pending"] == 0
        body = {"level": 2, "capabilities": ["decrypt"], "authority": "GDPR-17"}

        def forget(_: int) -> httpx.Response:
            return client.post(f"/v1/artifacts/{artifact_id}/forget", json=body)

        with ThreadPoolExecutor(max_workers=50) as pool:
            responses = list(pool.map(forget, range(50)))
        assert [r.status_code for r in responses] == [200] * 50, responses[0].text
        answers = [r.json() for r in responses]
        assert len({a["request_id"] for a in answers}) == 1
        assert sorted(a["existing"] for a in answers) == [False] + [True] * 49
        assert all(a["state"] == "done" for a in answers)
        after = _store_counts(home)
        assert after["forget_requests"] == before["forget_requests"] + 1
        assert after["forget_events"] == before["forget_events"] + 1
        assert after["checkpoints"] == before["checkpoints"] + 1
        assert client.get(f"/v1/artifacts/{artifact_id}").status_code == 410
