"""Beliefs between two nodes in one process (federation/beliefs.py), the origin on each store.

The peer transport is an in-memory fake that hands each call to the other node's services
directly; the real HTTP path is tested by tests/federation/test_federation_processes.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from oblivio.core.belief import FederationKeys, sign_federation_key
from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import ArtifactForgottenError, InvalidInputError
from oblivio.federation.beliefs import (
    BeliefNotFoundError,
    BeliefRecipientUnknownError,
    Beliefs,
    BeliefVerificationFailedError,
)
from oblivio.federation.propagation import Federation, open_federation
from oblivio.federation.transport import PeerClient
from oblivio.node.node import init_node, open_node
from oblivio.node.services import NodeServices, open_services
from tests.interfaces.conftest import peer_token

ORIGIN = "node-a.example"
RECIPIENT = "node-b.example"
DELAY = timedelta(seconds=300)


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class FakePeers:
    """The peer transport, in memory: manifests and beliefs go straight to the other node."""

    def __init__(self) -> None:
        self.nodes: dict[str, tuple[NodeServices, Beliefs]] = {}
        self.sent: list[dict[str, Any]] = []
        self.manifest_override: dict[str, dict[str, Any]] = {}

    def _at(self, url: str) -> tuple[NodeServices, Beliefs]:
        return self.nodes[url]

    def manifest(self, base_url: str) -> dict[str, Any]:
        services, _ = self._at(base_url)
        if base_url in self.manifest_override:
            return self.manifest_override[base_url]
        return dict(services.compliance.own_manifest().raw)

    def send_belief(
        self, base_url: str, token: str | None, delivery: Mapping[str, JsonValue]
    ) -> dict[str, Any]:
        self.sent.append(dict(delivery))
        _, beliefs = self._at(base_url)
        sender = beliefs.federation.peers.require(ORIGIN)
        return beliefs.receive(dict(delivery), sender)

    def close(self) -> None:
        pass


@dataclass
class Pair:
    origin: Beliefs
    recipient: Beliefs
    clock: Clock
    peers: FakePeers

    def deliver_due(self) -> int:
        federation: Federation = self.origin.federation
        due = [d for d in federation.due() if d.kind == "belief"]
        for delivery in due:
            assert federation.deliver(delivery) is None
        return len(due)


@pytest.fixture
def pair(tmp_path: Path, store_uri: str) -> Iterator[Pair]:
    origin_home, recipient_home = tmp_path / "a", tmp_path / "b"
    init_node(origin_home, name=ORIGIN, store_uri=store_uri).close()
    init_node(recipient_home, name=RECIPIENT).close()
    peer_token(origin_home, recipient_home, url="http://b.test")
    peer_token(recipient_home, origin_home, url="http://a.test")
    clock = Clock()
    fake = FakePeers()
    opened = []
    for home, url in ((origin_home, "http://a.test"), (recipient_home, "http://b.test")):
        node = open_node(home)
        services = open_services(node)
        federation = open_federation(services, client=cast(PeerClient, fake), clock=clock)
        fake.nodes[url] = (services, Beliefs(federation))
        opened.append(services)
    try:
        yield Pair(fake.nodes["http://a.test"][1], fake.nodes["http://b.test"][1], clock, fake)
    finally:
        for services in opened:
            services.close()


def _content(answer: dict[str, Any]) -> bytes:
    return b64url_decode(answer["content"]["plaintext_b64url"])


def test_a_belief_waits_its_grace_period_then_is_delivered_and_read(pair: Pair) -> None:
    shared = pair.origin.share(b"alice prefers tea", {"topic": "tea"}, [RECIPIENT])
    belief_id = shared["id"]
    assert shared["envelope"]["recipients"][0]["kem"] == "mlkem768-x25519"
    assert pair.deliver_due() == 0  # pending_federation: nothing is due yet
    assert pair.origin.read(belief_id)["status"] == "pending_federation"
    pair.clock.now += DELAY
    assert pair.deliver_due() == 1
    [sent] = pair.peers.sent
    assert [e["node"] for e in sent["key_blob"]] == [RECIPIENT]
    on_b = pair.recipient.read(belief_id)
    assert (on_b["status"], _content(on_b)) == ("received", b"alice prefers tea")
    assert on_b["content"]["metadata"] == {"topic": "tea"}
    assert pair.origin.read(belief_id)["status"] == "federated"
    assert pair.recipient.status(belief_id) == {"exists": True, "deleted": False}
    assert pair.origin.withdraw(belief_id) is False  # it has left the node
    assert pair.recipient.receive(sent, pair.recipient.federation.peers.require(ORIGIN)) == {
        "accepted": True,
        "belief_id": belief_id,
        "new": False,
    }

    deleted = pair.origin.delete(belief_id, "dpo")
    assert deleted["status"] == "deleted"
    assert deleted["tombstone_id"].startswith("tomb_")
    answer = pair.origin.read(belief_id)
    assert (answer["status"], answer["content"]) == ("deleted", None)
    assert answer["tombstone"]["id"] == deleted["tombstone_id"]


def test_a_recipient_without_a_hybrid_key_gets_dhkem_x25519(pair: Pair) -> None:
    services, _ = pair.peers.nodes["http://b.test"]
    own = dict(services.compliance.own_manifest().raw)
    key = services.node.signing_key
    statement = sign_federation_key(
        key, RECIPIENT, FederationKeys(key.seed), str(own["federation_key"]["created_at"])
    )
    statement.pop("mlkem768_x25519_b64")
    body = {k: v for k, v in statement.items() if k != "signature_b64"}
    statement["signature_b64"] = b64url_encode(key.sign(canonical_json(body)))
    registry = pair.origin.federation.compliance.manifests
    registry.trust({**own, "federation_key": statement}, own["keys"][0]["key_id"])
    shared = pair.origin.share(b"x25519 only", {}, [RECIPIENT])
    assert shared["envelope"]["recipients"][0]["kem"] == "x25519"
    pair.clock.now += DELAY
    assert pair.deliver_due() == 1
    assert _content(pair.recipient.read(shared["id"])) == b"x25519 only"


def test_deleting_in_the_grace_period_sends_nothing_and_issues_no_tombstone(pair: Pair) -> None:
    shared = pair.origin.share(b"oops", {}, [RECIPIENT])
    belief_id = shared["id"]
    assert pair.origin.delete(belief_id, "dpo") == {
        "id": belief_id,
        "status": "withdrawn",
        "tombstone_id": None,
    }
    pair.clock.now += DELAY * 2
    assert pair.deliver_due() == 0
    assert pair.peers.sent == []
    answer = pair.origin.read(belief_id)
    assert answer == {"id": belief_id, "status": "deleted", "content": None, "tombstone": None}
    assert pair.origin.status(belief_id) == {"exists": True, "deleted": True}
    services = pair.origin.services
    assert services.compliance.tombstones.store.active_for_entity(f"belief:{belief_id}") == []
    with services.node.db.transaction(write=False) as tx:
        row = tx.fetchone("SELECT key_artifact_id FROM beliefs WHERE id = ?", (belief_id,))
    assert row is not None
    with pytest.raises(ArtifactForgottenError):
        services.node.vault.get(str(row[0]))
    with pytest.raises(BeliefNotFoundError):
        pair.recipient.read(belief_id)


def test_a_delivery_cancelled_by_a_tombstone_sends_nothing(pair: Pair) -> None:
    shared = pair.origin.share(b"tombstoned early", {}, [RECIPIENT])
    pair.origin.services.compliance.tombstones.issue(
        "dpo", f"belief:{shared['id']}", "*", "explicit tombstone"
    )
    pair.clock.now += DELAY
    assert pair.deliver_due() == 1
    assert pair.peers.sent == []
    assert pair.deliver_due() == 0  # the row was cancelled, not rescheduled


def test_refusals_change_nothing(pair: Pair) -> None:
    shared = pair.origin.share(b"kept", {}, [RECIPIENT])
    pair.clock.now += DELAY
    pair.deliver_due()
    [good] = pair.peers.sent
    sender = pair.recipient.federation.peers.require(ORIGIN)
    db = pair.recipient.services.node.db

    def rows() -> int:
        with db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT COUNT(*) FROM artifacts")
        assert row is not None
        return int(row[0])

    before = rows()
    blob = good["key_blob"][0]
    flipped = b64url_decode(blob["enc_b64"])
    bad_blob = {**blob, "enc_b64": b64url_encode(flipped[:-1] + bytes([flipped[-1] ^ 1]))}
    for body, error in (
        ({**good, "key_blob": [bad_blob]}, BeliefVerificationFailedError),
        ({**good, "key_blob": [{**blob, "kem": "x25519"}]}, BeliefVerificationFailedError),
        ({**good, "key_blob": []}, BeliefRecipientUnknownError),
        ({**good, "key_blob": "x"}, InvalidInputError),
        ({**good, "extra": 1}, InvalidInputError),
    ):
        with pytest.raises(error):
            pair.recipient.receive(body, sender)
    assert rows() == before
    with pytest.raises(BeliefRecipientUnknownError):
        pair.origin.share(b"x", {}, ["node-z.example"])
    # A recipient whose manifest (held here, and fetched again) publishes no federation key.
    services, _ = pair.peers.nodes["http://b.test"]
    without = {
        k: v for k, v in services.compliance.own_manifest().raw.items() if k != "federation_key"
    }
    pair.origin.federation.compliance.manifests.trust(without, without["keys"][0]["key_id"])
    pair.peers.manifest_override["http://b.test"] = without
    with pytest.raises(BeliefRecipientUnknownError, match="publishes no federation key"):
        pair.origin.share(b"x", {}, [RECIPIENT])
    with pytest.raises(InvalidInputError):
        pair.origin.share(b"x", {}, [])
    with pytest.raises(InvalidInputError):
        pair.origin.share(b"x" * (32 * 1024 + 1), {}, [RECIPIENT])
    with pytest.raises(InvalidInputError):
        pair.origin.share(b"x", {"note": "y" * 5000}, [RECIPIENT])
    assert shared["id"]


def test_a_belief_signed_after_the_origin_rotated_its_key_is_accepted(pair: Pair) -> None:
    """The recipient holds the origin's manifest from before the rotation: it fetches the
    origin's manifest again (it extends the pinned chain) and verifies with the new key."""
    pair.origin.services.rotate_signing_key()
    pair.clock.now = datetime.now(UTC)  # the rotation is dated by the real clock
    shared = pair.origin.share(b"after a rotation", {}, [RECIPIENT])
    pair.clock.now += DELAY
    assert pair.deliver_due() == 1
    assert _content(pair.recipient.read(shared["id"])) == b"after a rotation"
