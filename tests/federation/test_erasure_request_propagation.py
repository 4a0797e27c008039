"""An erasure request waits for the node's peers (federation/propagation.py) before it
completes: until each peer was delivered the tombstone, answered it, or stayed silent past the
ack deadline; per-peer status is what the request links. On both stores, with the node's real
federation and a peer pinned at a loopback port nothing listens on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.federation.propagation import Federation, open_federation
from oblivio.node.erasure_requests import ErasureRequestService
from oblivio.node.node import init_node, open_node
from oblivio.node.services import NodeServices, open_services
from tests.interfaces.conftest import PEER_NAME, peer_token
from tests.node.helpers import Clock


@pytest.fixture
def federated(tmp_path: Path, store_uri: str) -> Iterator[tuple[NodeServices, Federation, Clock]]:
    home = tmp_path / "node-a"
    init_node(home, name="node-a.example", store_uri=store_uri).close()
    init_node(tmp_path / "node-b", name=PEER_NAME).close()
    peer_token(home, tmp_path / "node-b")  # pins node-b at a port nothing listens on
    clock = Clock()
    with open_node(home) as node:
        services = open_services(node)
        federation = open_federation(services, clock=clock)
        try:
            yield services, federation, clock
        finally:
            federation.client.close()


def test_the_request_waits_for_a_silent_peer_until_the_ack_deadline(
    federated: tuple[NodeServices, Federation, Clock],
) -> None:
    services, federation, clock = federated
    services.node.vault.put(b"alice", {}, "user:alice", "team")
    requests = ErasureRequestService(services, propagation=federation.propagation, clock=clock)
    request = requests.create("user:alice", "*", "gdpr")
    requests.verify_identity(request.id)

    waiting = requests.advance(request.id)
    assert (waiting.status, waiting.step) == ("in_processing", "propagation")
    assert waiting.tombstone_id is not None
    # A delivery attempt fails (nothing listens): still waiting, and the status says why.
    for delivery in federation.due():
        assert federation.deliver(delivery) is not None
    assert requests.advance(request.id).step == "propagation"
    links = requests.describe(request.id)["links"]
    assert isinstance(links, dict)
    peers = links["propagation"]["peers"]
    assert [(p["peer"], p["status"], p["attempts"]) for p in peers] == [(PEER_NAME, "pending", 1)]
    assert peers[0]["last_error"]

    # Past the deadline counted from the tombstone's creation (by the node's real clock).
    clock.now = datetime.now(UTC) + federation.settings.ack_deadline + timedelta(seconds=1)
    done = requests.advance(request.id)
    assert done.status == "complete"
    links = requests.describe(request.id)["links"]
    assert isinstance(links, dict)
    peers = links["propagation"]["peers"]
    assert [(p["peer"], p["status"]) for p in peers] == [(PEER_NAME, "silent")]
