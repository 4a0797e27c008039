"""HTTP fixtures: a node on each backend served in process, with API keys of every role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from oblivio.interfaces.http import create_app
from oblivio.node.compliance import open_compliance
from oblivio.node.node import init_node, open_node


@dataclass
class Api:
    """A served node and bearer headers for its keys."""

    client: TestClient
    home: Path
    admin: dict[str, str]
    agent: dict[str, str]
    peer: dict[str, str]

    def count(self, table: str) -> int:
        with open_node(self.home) as node, node.db.transaction(write=False) as tx:
            row = tx.fetchone(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
        assert row is not None
        return int(row[0])


def make_keys(home: Path) -> dict[str, dict[str, str]]:
    headers = {}
    with open_node(home) as node:
        services = open_compliance(node)
        for role in ("admin", "agent", "peer"):
            _, token = services.api_keys.create(f"{role}-1", role)
            headers[role] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.fixture
def api(tmp_path: Path, store_uri: str) -> Iterator[Api]:
    home = tmp_path / "node-a"
    init_node(home, name="node-a.example", store_uri=store_uri).close()
    keys = make_keys(home)
    with TestClient(create_app(home), raise_server_exceptions=False) as client:
        yield Api(client, home, keys["admin"], keys["agent"], keys["peer"])
