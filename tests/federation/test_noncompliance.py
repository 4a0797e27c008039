"""Probes, evidence, reputation and isolation (federation/noncompliance.py) on a real node of
each store, with an injected clock and an in-memory fake of the peer transport (the process
test in test_federation_processes.py uses a real misbehaving server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.core.canonical import canonical_json
from oblivio.core.evidence import encode_statement, sign_response, verify_evidence
from oblivio.core.identifiers import format_time
from oblivio.core.manifest import new_manifest
from oblivio.core.note import verifier_key
from oblivio.core.signing import SigningKey
from oblivio.federation.peers import PeerIsolatedError
from oblivio.federation.propagation import Federation
from oblivio.federation.settings import FederationSettings
from oblivio.federation.tokens import CapabilityDeniedError
from oblivio.federation.transport import PeerClient, PeerUnreachableError, RawResponse
from oblivio.node.ids import new_uuid7
from oblivio.node.node import Node, init_node
from oblivio.node.services import open_services

PEER = "ignorer.example"
DEADLINE = timedelta(seconds=10)
AGAIN = timedelta(minutes=5)


@dataclass
class FakePeer(PeerClient):
    """The peer's side of a probe, in memory: ``mode`` says how it answers."""

    key: SigningKey = field(default_factory=lambda: SigningKey(os.urandom(32)))
    mode: str = "serve"
    offset: list[timedelta] = field(default_factory=lambda: [timedelta(0)])
    asked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def clock(self) -> datetime:
        """The node's clock: real time (tombstones are stamped with it) moved on by tests."""
        return datetime.now(UTC) + self.offset[0]

    def fetch(self, base_url: str, path: str, token: str | None) -> RawResponse:
        self.asked.append(path)
        if self.mode == "down":
            raise PeerUnreachableError(f"GET {base_url}{path}: connection refused")
        status = 401 if self.mode == "refuse" else 200
        if path.endswith("/status"):
            body = {"exists": True, "deleted": self.mode not in ("serve", "unsigned")}
        else:
            served = self.mode in ("serve", "unsigned")
            body = {"status": "active", "content": "x"} if served else {"status": "deleted"}
        data = canonical_json(body)
        if self.mode == "unsigned":
            return RawResponse(status, data, None)
        statement = sign_response(
            self.key,
            node=PEER,
            method="GET",
            path=path,
            status=status,
            body=data,
            signed_at=format_time(self.clock()),
        )
        return RawResponse(status, data, encode_statement(statement))


@dataclass
class World:
    node: Node
    federation: Federation
    peer: FakePeer

    def later(self, delta: timedelta) -> None:
        self.peer.offset[0] += delta

    def row(self) -> tuple[str, float]:
        peer = self.federation.peers.require(PEER)
        return peer.state, peer.reputation

    def audit(self, event: str) -> list[dict[str, object]]:
        events = self.federation.compliance.audit.read(0, 10_000)
        return [e.to_dict() for e in events if e.event == event]

    def belief_tombstone(self) -> str:
        record, _ = self.federation.services.compliance.tombstones.issue(
            "dpo", f"belief:{new_uuid7()}", "*", "Art. 17"
        )
        return record.id


@pytest.fixture
def world(tmp_path: Path, store_uri: str) -> Iterator[World]:
    with init_node(tmp_path / "home", name="node-a.example", store_uri=store_uri) as node:
        yield from _world(node)


def _world(node: Node) -> Iterator[World]:
    peer = FakePeer()
    services = open_services(node)
    settings = FederationSettings(ack_deadline=DEADLINE, probe_interval=AGAIN)
    federation = Federation(services, settings, peer, peer.clock)
    manifest = new_manifest(PEER, peer.key, format_time(peer.clock() - timedelta(minutes=1)))
    vkey = verifier_key(PEER, peer.key.verify_key.public_bytes)
    federation.peers.add(PEER, "http://127.0.0.1:9", vkey, manifest, "token-from-the-peer")
    yield World(node, federation, peer)
    peer.close()


def test_a_belief_tombstone_is_probed_after_its_deadline_only(world: World) -> None:
    noncompliance = world.federation.noncompliance
    world.federation.services.compliance.tombstones.issue("dpo", "user:not-a-belief", "*", None)
    tombstone_id = world.belief_tombstone()
    assert [p.tombstone_id for p in noncompliance.due()] == []
    world.later(DEADLINE)
    due = noncompliance.due()
    assert [(p.tombstone_id, p.peer) for p in due] == [(tombstone_id, PEER)]


def test_a_peer_still_serving_is_caught_penalised_and_isolated(world: World) -> None:
    noncompliance = world.federation.noncompliance
    tombstone_id = world.belief_tombstone()
    world.later(DEADLINE)
    (probe,) = noncompliance.due()
    assert noncompliance.run(probe) == "violation"
    assert world.row() == ("active", 0.5)
    assert noncompliance.due() == []  # asked again after the probe interval
    (kept,) = noncompliance.evidence_list()
    evidence = noncompliance.evidence(kept["id"])
    found = verify_evidence(evidence, verifier_key(PEER, world.peer.key.verify_key.public_bytes))
    assert (found.tombstone_id, found.finding) == (tombstone_id, "content_served")
    assert evidence["our_tombstone"]["reason"] == "redacted"  # type: ignore[index]

    world.later(AGAIN)
    (probe,) = noncompliance.due()
    assert noncompliance.run(probe) == "violation"
    assert world.row() == ("isolated", -0.5)
    assert noncompliance.due() == []  # an isolated peer is not asked
    changes = [e["details"] for e in world.audit("reputation_changed")]
    assert [(c["event"], c["to"]) for c in changes] == [  # type: ignore[index]
        ("tombstone_ignored", 0.5),
        ("repeated_violation", -0.5),
    ]
    assert [e["subject"] for e in world.audit("peer_isolated")] == [PEER]
    assert len(world.audit("noncompliance_evidence")) == 2


def test_nothing_more_is_shared_with_an_isolated_peer(world: World) -> None:
    federation = world.federation
    noncompliance = federation.noncompliance
    world.belief_tombstone()
    for _ in range(2):
        world.later(AGAIN)
        for probe in noncompliance.due():
            noncompliance.run(probe)
    assert world.row()[0] == "isolated"
    later = world.belief_tombstone()
    with world.node.db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT peer FROM federation_outbox WHERE record_id = ?", (later,))
    assert rows == []
    assert federation.due() == []


def test_an_isolated_peer_may_deliver_tombstones_and_acks_only(world: World) -> None:
    federation = world.federation
    peers = federation.peers
    token = peers.issue_token(PEER, ["tombstone:write", "tombstone:read", "belief:write"], 3600)
    with world.node.db.transaction() as tx:
        tx.execute("UPDATE federation_peers SET state = 'isolated' WHERE name = ?", (PEER,))
    assert peers.authorize(token, "tombstone:write").name == PEER
    for verb in ("tombstone:read", "belief:write"):
        with pytest.raises(PeerIsolatedError):
            peers.authorize(token, verb)
    peers.remove(PEER)
    with pytest.raises(CapabilityDeniedError):
        peers.authorize(token, "tombstone:write")


def test_peer_add_does_not_lift_an_isolation(world: World) -> None:
    with world.node.db.transaction() as tx:
        tx.execute("UPDATE federation_peers SET state = 'isolated' WHERE name = ?", (PEER,))
    peer = world.federation.peers.require(PEER)
    manifest = new_manifest(
        PEER, world.peer.key, format_time(world.peer.clock() - timedelta(hours=1))
    )
    world.federation.peers.add(PEER, peer.url, peer.verifier_key, manifest, None)
    assert world.row()[0] == "isolated"


def test_unsigned_answers_prove_nothing_and_unreachable_peers_are_asked_again(
    world: World,
) -> None:
    noncompliance = world.federation.noncompliance
    world.belief_tombstone()
    world.later(DEADLINE)
    world.peer.mode = "unsigned"
    (probe,) = noncompliance.due()
    assert noncompliance.run(probe) == "unverifiable"
    assert world.row() == ("active", 1.0)
    results = [e["details"]["result"] for e in world.audit("peer_probed")]  # type: ignore[index]
    assert results == ["unverifiable"]
    world.later(AGAIN)
    world.peer.mode = "refuse"  # signed 401s: it would not say, which proves nothing either way
    (probe,) = noncompliance.due()
    assert noncompliance.run(probe) == "refused"
    world.later(AGAIN)
    world.peer.mode = "down"
    (probe,) = noncompliance.due()
    assert noncompliance.run(probe) == "unreachable"
    world.later(timedelta(minutes=6))  # past any backoff (5 min cap)
    world.peer.mode = "forgot"
    (probe,) = noncompliance.due()
    assert probe.attempts == 3
    assert noncompliance.run(probe) == "clean"
    assert noncompliance.due() == []
    (row,) = noncompliance.probes()
    assert (row["state"], row["last_result"]) == ("done", "clean")
    results = [e["details"]["result"] for e in world.audit("peer_probed")]  # type: ignore[index]
    assert results == ["unverifiable", "refused", "unreachable", "clean"]
    assert world.row() == ("active", 1.0)


def test_reputation_recovers_with_time_but_isolation_needs_the_operator(world: World) -> None:
    noncompliance = world.federation.noncompliance
    world.belief_tombstone()
    for _ in range(2):
        world.later(AGAIN)
        for probe in noncompliance.due():
            noncompliance.run(probe)
    assert world.row() == ("isolated", -0.5)
    world.later(timedelta(days=61))
    assert noncompliance.refresh() == 1
    assert world.row() == ("isolated", -0.4)
    assert noncompliance.refresh() == 0
    peer = noncompliance.reinstate(PEER, actor="operator")
    assert (peer.state, peer.reputation) == ("active", 1.0)
    assert [e["subject"] for e in world.audit("peer_reinstated")] == [PEER]
    with pytest.raises(Exception, match="not isolated"):
        noncompliance.reinstate(PEER)


def _proved(world: World, tombstone_id: str) -> None:
    """Record that the peer's ack proved the forgetting (as record_ack stores a verified one)."""
    with world.node.db.transaction() as tx:
        tx.execute(
            "INSERT INTO federation_acks (tombstone_id, peer, ack_json, status, detail, "
            "received_at) VALUES (?, ?, '{}', 'proved', 'test', ?)",
            (tombstone_id, PEER, format_time(world.peer.clock())),
        )


def test_a_proved_peer_is_not_probed_unless_the_belief_went_to_it(world: World) -> None:
    noncompliance = world.federation.noncompliance
    tombstone_id = world.belief_tombstone()
    _proved(world, tombstone_id)
    world.later(DEADLINE)
    (probe,) = noncompliance.due()
    assert not probe.belief_recipient
    assert noncompliance.run(probe) == "proved"
    assert world.peer.asked == []

    belief = str(new_uuid7())
    with world.node.db.transaction() as tx:  # the belief was delivered to the peer
        tx.execute(
            "INSERT INTO federation_outbox (record_id, peer, kind, created_at, next_attempt_at, "
            "delivered_at) VALUES (?, ?, 'belief', ?, ?, ?)",
            (belief, PEER, *[format_time(world.peer.clock())] * 3),
        )
    record, _ = world.federation.services.compliance.tombstones.issue(
        "dpo", f"belief:{belief}", "*", None
    )
    _proved(world, record.id)
    world.later(DEADLINE)
    (probe,) = noncompliance.due()
    assert (probe.tombstone_id, probe.belief_recipient) == (record.id, True)
    assert noncompliance.run(probe) == "violation"
    assert world.row() == ("active", 0.5)
