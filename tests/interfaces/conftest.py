"""HTTP fixtures: a node on each backend served in process, with API keys of every role, a
legacy ``peer`` key (made before docs/adr/0030 retired the role) and a peer's capability token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from oblivio.core.encoding import b64url_encode
from oblivio.core.hashing import API_KEY_PREFIX, sha256
from oblivio.core.identifiers import format_time
from oblivio.core.note import verifier_key
from oblivio.federation.peers import Peers
from oblivio.federation.tokens import VERBS
from oblivio.interfaces.http import create_app
from oblivio.node.api_keys import TOKEN_PREFIX
from oblivio.node.compliance import open_compliance
from oblivio.node.home import load_config, save_config
from oblivio.node.ids import new_uuid7
from oblivio.node.node import init_node, open_node

PEER_NAME = "node-b.example"
UNREACHABLE_URL = "http://127.0.0.1:9"
"""Where in-process tests say the peer is: the discard port on loopback, nothing listens."""


@dataclass
class Api:
    """A served node and bearer headers for its keys."""

    client: TestClient
    home: Path
    admin: dict[str, str]
    agent: dict[str, str]
    peer: dict[str, str]
    """A legacy ``peer`` API key (refused by the federation routes, ADR 0030)."""
    token: dict[str, str] = field(default_factory=dict)
    """A capability token of every verb, issued to the peer ``node-b.example``."""

    def count(self, table: str) -> int:
        with open_node(self.home) as node, node.db.transaction(write=False) as tx:
            row = tx.fetchone(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
        assert row is not None
        return int(row[0])


def make_keys(home: Path) -> dict[str, dict[str, str]]:
    headers = {}
    with open_node(home) as node:
        services = open_compliance(node)
        for role in ("admin", "agent"):
            _, token = services.api_keys.create(f"{role}-1", role)
            headers[role] = {"Authorization": f"Bearer {token}"}
        # A peer key as a database made before the role was retired holds one.
        legacy = TOKEN_PREFIX + b64url_encode(secrets.token_bytes(32))
        with node.db.transaction() as tx:
            tx.execute(
                "INSERT INTO api_keys (id, name, role, key_hash, created_at) "
                "VALUES (?, 'peer-1', 'peer', ?, ?)",
                (
                    new_uuid7(),
                    sha256(API_KEY_PREFIX + legacy.encode("utf-8")).hex(),
                    format_time(datetime.now(UTC)),
                ),
            )
        headers["peer"] = {"Authorization": f"Bearer {legacy}"}
    return headers


def peer_token(
    home: Path, peer_home: Path, verbs: Sequence[str] = VERBS, url: str = UNREACHABLE_URL
) -> dict[str, str]:
    """Pin the node at ``peer_home`` as a peer of the node at ``home`` (its manifest handed
    over directly, no fetch) and issue it a capability token for ``verbs``."""
    with open_node(peer_home) as peer_node:
        manifest = dict(open_compliance(peer_node).own_manifest().raw)
        name = peer_node.config.name
        vkey = verifier_key(name, peer_node.signing_key.verify_key.public_bytes)
    with open_node(home) as node:
        compliance = open_compliance(node)
        peers = Peers(
            node.db,
            compliance.audit,
            compliance.manifests,
            org=compliance.org,
            signing_key=lambda: node.signing_key,
            clock=lambda: datetime.now(UTC),
        )
        peers.add(name, url, vkey, manifest, None)
        token = peers.issue_token(name, list(verbs), 3600)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(tmp_path: Path, store_uri: str) -> Iterator[Api]:
    yield from served_api(tmp_path, store_uri)


def served_api(
    tmp_path: Path, store_uri: str, federation: dict[str, Any] | None = None
) -> Iterator[Api]:
    """The ``api`` fixture's node, with ``federation`` settings in its config.json if given."""
    home = tmp_path / "node-a"
    init_node(home, name="node-a.example", store_uri=store_uri).close()
    if federation is not None:
        save_config(home, replace(load_config(home), federation=federation))
    keys = make_keys(home)
    peer_home = tmp_path / "node-b"
    init_node(peer_home, name=PEER_NAME).close()
    token = peer_token(home, peer_home)
    with TestClient(create_app(home), raise_server_exceptions=False) as client:
        yield Api(client, home, keys["admin"], keys["agent"], keys["peer"], token)
