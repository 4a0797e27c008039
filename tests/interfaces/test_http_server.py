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

from oblivio.node.node import init_node
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
