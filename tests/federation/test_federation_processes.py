"""Issue 12 acceptance with real ``oblivio serve`` processes on loopback: three nodes A-B-C in a
line (A and C are not peers), peered with the real command line (``peer add``, ``peer token``).

- A tombstones an entity B and C hold data about: B applies it by A's push, C by B's forward
  and by pulling from B; B's signed ack carries a Proof of Forgetting per artifact that
  ``oblivio verify`` accepts with B's verifier key; A shows B ``proved``.
- Partition and crash: B is SIGKILLed while A issues tombstones, then A is SIGKILLed with its
  outbox undelivered; both restart: every tombstone reaches B and C, each stored once.
- Bad input over the federation routes: 4xx JSON errors, audited, no state change, no 5xx.
- Beliefs: one shared A->B reads on B; A deletes it (seed 001 DeletionRequest): B and C apply
  the tombstone, B's ack proves its re-wrapped key forgotten, B answers deleted without content;
  one deleted in its grace period sends nothing and leaves no tombstone; bad deliveries refused.

B runs on PostgreSQL, A and C on SQLite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from oblivio.core.encoding import b64url_encode
from oblivio.core.signing import SigningKey
from oblivio.core.tombstones import TombstoneRecord, sign_tombstone
from oblivio.federation.tokens import issue_token
from oblivio.node.home import load_signing_key
from oblivio.node.ids import new_record_id, new_uuid7
from oblivio.node.node import init_node, open_node
from tests.interfaces.conftest import make_keys
from tests.processes import OBLIVIO, Served, cli, free_port, oblivio, poll

DEADLINE = 180.0
"""Seconds a poll waits at most: generous, the machine is shared."""
PARTITION_TOMBSTONES = int(os.environ.get("OBLIVIO_FEDERATION_TOMBSTONES", "1000"))
"""As issue 12 asks; about two minutes on a shared 2-core machine."""
SILENT_AFTER = 10
"""A's ack deadline (seconds): a peer with no ack by then is ``silent``."""
ALL_VERBS = "tombstone:read,tombstone:write,ack:write,belief:read,belief:write"
GRACE = 4
"""Seconds a shared belief waits as ``pending_federation`` (``propagation_delay_seconds``)."""
PROBE_AGAIN_AFTER = 2
"""Seconds after a probe found a belief still served before the next probe of that peer."""


def _poll(what: str, probe: Callable[[], bool]) -> None:
    poll(what, probe, deadline=DEADLINE, every=0.2)


@dataclass
class Node(Served):
    """A node home served by an ``oblivio serve`` process, with reads of its own state."""

    def count(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with open_node(self.home, recover=False) as node, node.db.transaction(write=False) as tx:
            row = tx.fetchone(sql, params)
        assert row is not None
        return int(row[0])

    def audit(self, event: str) -> list[dict[str, Any]]:
        with self.client() as client:
            events: list[dict[str, Any]] = []
            after = 0
            while True:
                page = client.get("/v1/audit", params={"after": after, "limit": 1000}).json()
                events += page["events"]
                if not page["events"]:
                    return [e for e in events if e["event"] == event]
                after = page["next_after"]


@dataclass
class Line:
    a: Node
    b: Node
    c: Node
    tokens: dict[tuple[str, str], str]
    """(issuer, holder) -> the capability token the issuer gave the holder."""


@pytest.fixture(scope="module")
def b_store() -> Iterator[str]:
    """B keeps its state in PostgreSQL (a schema of its own), A and C in SQLite: both stores
    take part in every exchange."""
    import uuid

    import psycopg

    from tests.conftest import POSTGRES_HINT, _with_schema, postgres_base_url, skip_or_fail

    url = postgres_base_url()
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        skip_or_fail(POSTGRES_HINT.format(url=url))
    schema = "oblivio_federation_" + uuid.uuid4().hex[:12]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield _with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory, b_store: str) -> Iterator[Line]:
    root = tmp_path_factory.mktemp("federation")
    nodes: dict[str, Node] = {}
    for letter in "abc":
        name = f"node-{letter}.example"
        home = root / letter
        init_node(home, name=name, store_uri=b_store if letter == "b" else None).close()
        config = json.loads((home / "config.json").read_text())
        config["forgetting"] = {"epoch_interval_seconds": 0.5}
        config["federation"] = {
            "ack_deadline_seconds": SILENT_AFTER,
            "probe_interval_seconds": PROBE_AGAIN_AFTER,
            "propagation_delay_seconds": GRACE,
        }
        (home / "config.json").write_text(json.dumps(config))
        admin = make_keys(home)["admin"]
        nodes[letter] = Node(name, home, free_port(), admin, root / f"{letter}.log")
    for node in nodes.values():
        node.start()
    keys = {letter: cli(n.home, "key") for letter, n in nodes.items()}
    edges = [("a", "b"), ("b", "c")]
    tokens: dict[tuple[str, str], str] = {}
    try:
        for x, y in edges:  # pin both ways, then exchange tokens
            for here, there in ((x, y), (y, x)):
                peer = nodes[there]
                cli(
                    nodes[here].home,
                    "peer",
                    "add",
                    peer.name,
                    "--url",
                    peer.url,
                    "--key",
                    keys[there],
                )
        for x, y in edges:
            for issuer, holder in ((x, y), (y, x)):
                token = cli(
                    nodes[issuer].home, "peer", "token", nodes[holder].name, "--verbs", ALL_VERBS
                )
                tokens[(issuer, holder)] = token
                cli(
                    nodes[holder].home,
                    "peer",
                    "add",
                    nodes[issuer].name,
                    "--url",
                    nodes[issuer].url,
                    "--key",
                    keys[issuer],
                    "--token",
                    token,
                )
        yield Line(nodes["a"], nodes["b"], nodes["c"], tokens)
    finally:
        for node in nodes.values():
            node.stop()


def _put(node: Node, entity_uri: str, text: bytes) -> str:
    with node.client() as client:
        response = client.post(
            "/v1/artifacts",
            json={
                "plaintext_b64url": b64url_encode(text),
                "entity_uri": entity_uri,
                "scope": "team",
            },
        )
    assert response.status_code == 201, response.text
    artifact_id: str = response.json()["artifact_id"]
    return artifact_id


def _tombstone(node: Node, entity_uri: str) -> dict[str, Any]:
    with node.client() as client:
        response = client.post(
            "/v1/tombstones", json={"entity_uri": entity_uri, "scope": "*", "reason": "Art. 17"}
        )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


def _ack_on(node: Node, tombstone_id: str, acker: str) -> dict[str, Any] | None:
    """The ack of ``acker`` that ``node`` holds for ``tombstone_id``, as received."""
    with open_node(node.home, recover=False) as opened, opened.db.transaction(write=False) as tx:
        row = tx.fetchone(
            "SELECT ack_json FROM federation_acks WHERE tombstone_id = ? AND peer = ?",
            (tombstone_id, acker),
        )
    return None if row is None else dict(json.loads(row[0]))


def _holds(node: Node, tombstone_id: str) -> bool:
    return node.count("SELECT COUNT(*) FROM tombstones WHERE id = ?", (tombstone_id,)) == 1


def _has_revocation(node: Node, revocation_id: str) -> bool:
    query = "SELECT COUNT(*) FROM tombstone_revocations WHERE id = ?"
    return node.count(query, (revocation_id,)) == 1


def _ack_held(node: Node, tombstone_id: str, peer: str) -> dict[str, Any]:
    """The ack ``peer`` sent ``node`` for a tombstone, as ``node`` holds it (it must)."""
    ack = _ack_on(node, tombstone_id, peer)
    assert ack is not None
    return ack


def _forgotten(node: Node, artifact_id: str) -> bool:
    with node.client() as client:
        return client.get(f"/v1/artifacts/{artifact_id}").status_code == 410


def test_peer_add_refuses_a_key_its_manifest_does_not_reach(line: Line, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    init_node(stranger, name="node-b.example").close()  # same name, another key
    wrong_key = cli(stranger, "key")
    command = [*OBLIVIO, "--home", str(line.a.home), "peer", "add", "node-b.example"]
    done = subprocess.run(
        [*command, "--url", line.b.url, "--key", wrong_key],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    assert b"does not reach the pinned key" in done.stderr
    listed = json.loads(cli(line.a.home, "peer", "list", "--json"))["peers"]
    assert [p["name"] for p in listed] == ["node-b.example"]


def test_tombstone_reaches_b_by_push_and_c_through_b_and_comes_back_proved(line: Line) -> None:
    a, b, c = line.a, line.b, line.c
    on_b = [_put(b, "user:zoe", b"zoe on b %d" % i) for i in range(2)]
    on_c = _put(c, "user:zoe", b"zoe on c")
    record = _tombstone(a, "user:zoe")
    tombstone_id = record["id"]

    _poll("B holds A's tombstone", lambda: _holds(b, tombstone_id))
    _poll("C holds A's tombstone", lambda: _holds(c, tombstone_id))
    _poll("B forgot zoe", lambda: all(_forgotten(b, x) for x in on_b))
    _poll("C forgot zoe", lambda: _forgotten(c, on_c))

    # B got it from A (push or pull: both from A), C from B only: A and C are not peers.
    assert [e["actor"] for e in b.audit("tombstone_received") if e["subject"] == tombstone_id] == [
        a.name
    ]
    assert [e["actor"] for e in c.audit("tombstone_received") if e["subject"] == tombstone_id] == [
        b.name
    ]
    # Relayed unchanged (signed_by, signature), reason redacted (§23.4.1).
    with c.client() as client:
        on_c_record = client.get("/v1/tombstones/" + quote("user:zoe", safe="")).json()
    relayed = on_c_record["tombstones"][0]
    assert relayed["signature"] == record["signature"]
    assert relayed["signed_by"] == record["signed_by"] == "agent:node-a.example/admin-1"
    assert relayed["reason"] == "redacted"

    def propagation() -> dict[str, Any]:
        with a.client() as client:
            response = client.get(f"/v1/federation/propagation/{tombstone_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def status_on_a(peer: str) -> str:
        return next((str(p["status"]) for p in propagation()["peers"] if p["peer"] == peer), "")

    _poll("A shows B proved", lambda: status_on_a(b.name) == "proved")
    status = propagation()
    direct = [p for p in status["peers"] if p["via"] is None]
    assert [p["peer"] for p in direct] == [b.name]  # C is B's peer, not A's
    assert direct[0]["delivered_at"] is not None
    cli_status = json.loads(cli(a.home, "propagation", tombstone_id, "--json"))
    assert cli_status["tombstones"][0]["peers"][0]["status"] == "proved"

    # The ack as A holds it: signed by B, a PoF per artifact B held, each verified offline
    # with B's verifier key by the command line.
    ack = _ack_held(a, tombstone_id, b.name)
    assert ack["type"] == "oblivio.tombstone-ack.v1"
    assert (ack["node"], ack["status"], ack["level"]) == (b.name, "applied", 2)
    assert sorted(ack["artifacts"]) == sorted(on_b)
    assert sorted(p["artifact_id"] for p in ack["proofs"]) == sorted(on_b)
    b_key = cli(b.home, "key")
    for proof in ack["proofs"]:
        path = a.home.parent / f"pof-{proof['artifact_id']}.json"
        path.write_text(json.dumps(proof))
        cli(a.home, "verify", str(path), "--key", b_key)
        wrong = subprocess.run(
            [sys.executable, "-m", "oblivio", "verify", str(path), "--key", cli(c.home, "key")],
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert wrong.returncode == 8  # another node's key: the proof is invalid

    # C's ack went to B (the peer that delivered it), proved as well.
    def c_proved_on_b() -> bool:
        with b.client() as client:
            peers = client.get(f"/v1/federation/propagation/{tombstone_id}").json()["peers"]
        return any(p["peer"] == c.name and p["status"] == "proved" for p in peers)

    _poll("B shows C proved", c_proved_on_b)

    # ... and B relays C's ack, unchanged, to A: A verifies it with C's manifest (pinned from
    # B) and C's proofs with C's key, and shows C proved, via B (docs/adr/0028).
    _poll("A shows C proved, via B", lambda: status_on_a(c.name) == "proved")
    relayed = next(p for p in propagation()["peers"] if p["peer"] == c.name)
    assert (relayed["via"], relayed["delivered_at"]) == (b.name, None)
    cli_peers = json.loads(cli(a.home, "propagation", tombstone_id, "--json"))["tombstones"][0]
    assert {p["peer"]: p["status"] for p in cli_peers["peers"]} == {
        b.name: "proved",
        c.name: "proved",
    }
    c_ack = _ack_on(a, tombstone_id, c.name)
    assert c_ack is not None
    assert (c_ack["node"], c_ack["key_id"]) == (c.name, load_signing_key(c.home).key_id)
    assert [p["artifact_id"] for p in c_ack["proofs"]] == [on_c]


def test_c_applies_by_pull_alone_when_b_cannot_push_to_it(line: Line) -> None:
    """B holds a token for C that C refuses, so B's pushes to C fail (and are retried); C still
    gets A's tombstone by pulling from B after B announces it."""
    a, b, c = line.a, line.b, line.c
    c_key = cli(c.home, "key")
    bogus = cli(c.home, "peer", "token", b.name, "--verbs", "tombstone:read")  # no write
    cli(b.home, "peer", "add", c.name, "--url", c.url, "--key", c_key, "--token", bogus)
    try:
        record = _tombstone(a, "user:pulled")
        _poll("C holds the tombstone", lambda: _holds(c, record["id"]))
        received = [e for e in c.audit("tombstone_received") if e["subject"] == record["id"]]
        assert [(e["actor"], e["details"]["channel"]) for e in received] == [(b.name, "pull")]

        def push_refused() -> bool:
            query = (
                "SELECT COUNT(*) FROM federation_outbox WHERE record_id = ? AND peer = ? "
                "AND kind = 'tombstone' AND last_error LIKE '%capability_verb_missing%'"
            )
            return b.count(query, (record["id"], c.name)) == 1

        _poll("B's push to C refused and kept for retry", push_refused)
    finally:
        good = line.tokens[("c", "b")]
        cli(b.home, "peer", "add", c.name, "--url", c.url, "--key", c_key, "--token", good)
    _poll(
        "B's retried push to C delivered (answered: already held)",
        lambda: (
            b.count(
                "SELECT COUNT(*) FROM federation_outbox WHERE record_id = ? AND peer = ? "
                "AND kind = 'tombstone' AND delivered_at IS NOT NULL",
                (record["id"], c.name),
            )
            == 1
        ),
    )


def test_a_legal_hold_tombstone_comes_back_held(line: Line) -> None:
    """Seed 001 legal hold: B keeps the keys (reads suppressed) and answers ``held``."""
    a, b = line.a, line.b
    kept = _put(b, "user:on-hold", b"evidence")
    with a.client() as client:
        response = client.post(
            "/v1/tombstones",
            json={"entity_uri": "user:on-hold", "scope": "*", "legal_hold": True},
        )
    assert response.status_code == 201, response.text
    tombstone_id = response.json()["id"]

    def status_of_b() -> str:
        with a.client() as client:
            peers = client.get(f"/v1/federation/propagation/{tombstone_id}").json()["peers"]
        return str(peers[0]["status"])

    _poll("A shows B held", lambda: status_of_b() == "held")
    assert _forgotten(b, kept)  # suppressed while held
    with b.client() as client:
        assert client.get(f"/v1/artifacts/{kept}/proof").status_code == 409  # keys kept


def test_revocation_travels_the_same_way(line: Line) -> None:
    a, b, c = line.a, line.b, line.c
    record = _tombstone(a, "user:revoked-later")
    _poll("C holds the tombstone", lambda: _holds(c, record["id"]))
    with a.client() as client:
        response = client.post(
            f"/v1/tombstones/{record['id']}/revoke", json={"reason": "court order #7"}
        )
    assert response.status_code == 200, response.text
    revocation_id = response.json()["id"]
    for node in (b, c):
        _poll(
            f"{node.name} holds the revocation",
            partial(_has_revocation, node, revocation_id),
        )
        with node.client() as client:
            status = client.get("/v1/tombstones/" + quote("user:revoked-later", safe="")).json()
        assert status["tombstoned"] is False
        assert status["revocations"][0]["signature"] == response.json()["signature"]


def test_a_push_only_peer_may_fetch_the_manifests_it_needs(line: Line) -> None:
    """Regression: a peer holding ``tombstone:write`` alone (push-only) must be able to fetch
    the manifest of an org whose records it was sent, or those records stay unverified."""
    a, b = line.a, line.b
    for verbs, status in (("tombstone:write", 200), ("tombstone:read", 200), ("ack:write", 401)):
        token = cli(b.home, "peer", "token", a.name, "--verbs", verbs)
        with b.client({"Authorization": f"Bearer {token}"}) as client:
            response = client.get("/v1/federation/manifests/node-c.example")
        assert response.status_code == status, response.text
        if status == 200:
            assert response.json()["org"] == "node-c.example"
        else:
            assert response.json()["error"]["code"] == "capability_verb_missing"


def test_pull_route_pages_with_an_opaque_cursor(line: Line) -> None:
    """What C pulls from B: §23.4.3 shape, records unchanged but for a redacted reason."""
    a, b = line.a, line.b
    ids = [_tombstone(a, f"user:page-{i}")["id"] for i in range(3)]
    for tombstone_id in ids:
        _poll("B holds the tombstone", partial(_holds, b, tombstone_id))
    headers = {"Authorization": f"Bearer {line.tokens[('b', 'c')]}"}
    seen: list[str] = []
    since = "1970-01-01T00:00:00.000Z"
    with b.client(headers) as client:
        while True:
            page = client.get("/v1/federation/tombstones", params={"since": since, "limit": 2})
            assert page.status_code == 200, page.text
            body = page.json()
            assert set(body) == {"tombstones", "revocations", "cursor"}
            seen += [t["id"] for t in body["tombstones"]]
            if body["cursor"] == since:
                break
            since = body["cursor"]
    assert set(ids) <= set(seen)
    assert len(seen) == len(set(seen))


# -- beliefs ---------------------------------------------------------------------------------


def _share(a: Node, recipients: list[str], text: bytes) -> dict[str, Any]:
    with a.client() as client:
        response = client.post(
            "/v1/beliefs",
            json={
                "plaintext_b64url": b64url_encode(text),
                "metadata": {"topic": "tea"},
                "recipients": recipients,
            },
        )
    assert response.status_code == 201, response.text
    shared: dict[str, Any] = response.json()
    assert shared["status"] == "pending_federation"
    return shared


def _deletion_request(a: Node, belief_id: str) -> dict[str, Any]:
    """Seed 001 ``DeletionRequest``, signed by A's identity key."""
    import rfc8785

    request: dict[str, Any] = {
        "belief_id": belief_id,
        "tombstone_id": new_uuid7(),
        "reason": "user_request",
        "originator_id": a.name,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "propagate": True,
    }
    request["signature"] = b64url_encode(load_signing_key(a.home).sign(rfc8785.dumps(request)))
    return request


def _belief_on(node: Node, belief_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with node.client(headers) as client:
        path = "/v1/federation/beliefs/" if headers else "/v1/beliefs/"
        return client.get(path + belief_id)


def test_a_belief_shared_a_to_b_is_read_on_b_and_its_deletion_comes_back_proved(
    line: Line,
) -> None:
    a, b, c = line.a, line.b, line.c
    shared = json.loads(
        cli(a.home, "share", "--text", "alice prefers tea", "--to", b.name, "--json")
    )
    assert shared["status"] == "pending_federation"
    belief_id = shared["id"]
    assert shared["envelope"]["recipients"][0]["kem"] == "mlkem768-x25519"  # both publish it
    assert _belief_on(a, belief_id).json()["status"] == "pending_federation"

    _poll("B reads the belief", lambda: _belief_on(b, belief_id).status_code == 200)
    on_b = _belief_on(b, belief_id).json()
    assert (on_b["status"], on_b["origin"]) == ("received", a.name)
    assert on_b["content"] == {
        "plaintext_b64url": b64url_encode(b"alice prefers tea"),
        "metadata": {},
    }
    assert _belief_on(a, belief_id).json()["status"] == "federated"
    as_a = {"Authorization": f"Bearer {line.tokens[('b', 'a')]}"}
    assert _belief_on(b, belief_id, as_a).json()["content"] == on_b["content"]  # A's probe
    as_c = {"Authorization": f"Bearer {line.tokens[('b', 'c')]}"}
    assert _belief_on(b, belief_id, as_c).status_code == 404  # C is not a recipient
    assert _belief_on(c, belief_id).status_code == 404  # shared with B only
    with b.client(as_a) as client:
        status = client.get(f"/federation/belief/{belief_id}/status").json()
    assert (status["exists"], status["deleted"]) == (True, False)
    key_artifact = [
        e["details"]["key_artifact_id"]
        for e in b.audit("belief_received")
        if e["subject"] == belief_id
    ]
    assert len(key_artifact) == 1

    deleting = time.monotonic()
    with a.client() as client:
        response = client.post("/federation/delete", json=_deletion_request(a, belief_id))
    assert response.status_code == 200, response.text
    assert response.json()["propagation_status"] == "enqueued for 1 peers"
    tombstone_id = response.json()["tombstone_id"]
    _poll("B forgot its key of the belief", lambda: _forgotten(b, key_artifact[0]))
    _poll("C holds it through B", lambda: _holds(c, tombstone_id))
    # Issue 12 asks for 60 s; measured, not gated (the machine is shared).
    print(f"belief deletion applied on B and C in {time.monotonic() - deleting:.2f} s")
    deleted = _belief_on(b, belief_id).json()
    assert (deleted["status"], deleted["content"]) == ("deleted", None)
    assert deleted["tombstone"]["id"] == tombstone_id
    assert deleted["tombstone"]["entity_uri"] == f"belief:{belief_id}"
    probe = _belief_on(b, belief_id, as_a).json()
    assert (probe["status"], probe["content"]) == ("deleted", None)
    assert _belief_on(a, belief_id).json()["content"] is None
    shown = json.loads(cli(b.home, "belief", "show", belief_id, "--json"))
    assert (shown["status"], shown["content"]) == ("deleted", None)
    with b.client(as_a) as client:
        status = client.get(f"/federation/belief/{belief_id}/status").json()
    assert (status["exists"], status["deleted"]) == (True, True)

    def b_status() -> str:
        with a.client() as client:
            peers = client.get(f"/v1/federation/propagation/{tombstone_id}").json()["peers"]
        return str(peers[0]["status"])

    _poll("A shows B proved", lambda: b_status() == "proved")
    ack = _ack_held(a, tombstone_id, b.name)
    assert (ack["status"], ack["level"], ack["artifacts"]) == ("applied", 2, key_artifact)
    [proof] = ack["proofs"]
    path = a.home.parent / f"belief-pof-{belief_id}.json"
    path.write_text(json.dumps(proof))
    cli(a.home, "verify", str(path), "--key", cli(b.home, "key"))


def test_a_belief_deleted_in_its_grace_period_sends_nothing_and_leaves_no_tombstone(
    line: Line,
) -> None:
    a, b = line.a, line.b
    shared = _share(a, [b.name], b"sent to the wrong node")
    belief_id = shared["id"]
    with a.client() as client:
        response = client.post("/federation/delete", json=_deletion_request(a, belief_id))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "tombstone_id": None,
        "propagation_status": "withdrawn_in_grace_period",
    }
    entity = (f"belief:{belief_id}",)
    assert a.count("SELECT COUNT(*) FROM tombstones WHERE entity_uri = ?", entity) == 0
    assert a.count("SELECT COUNT(*) FROM federation_outbox WHERE record_id = ?", (belief_id,)) == 0
    assert a.count(
        "SELECT COUNT(*) FROM beliefs WHERE id = ? AND state = 'withdrawn' AND ciphertext IS NULL",
        (belief_id,),
    )
    answer = _belief_on(a, belief_id).json()
    assert (answer["status"], answer["tombstone"], answer["content"]) == ("deleted", None, None)
    with a.client({"Authorization": f"Bearer {line.tokens[('a', 'b')]}"}) as client:
        status = client.get(f"/federation/belief/{belief_id}/status").json()
    assert status == {"exists": True, "deleted": True}  # withdrawn: deleted, no tombstone
    # The key was forgotten like any artifact: its forget committed by an epoch.
    _poll(
        "A's key of the belief forgotten",
        lambda: (
            a.count(
                "SELECT COUNT(*) FROM forget_events e JOIN artifacts x "
                "ON x.artifact_id = e.artifact_id WHERE x.entity_uri = ? AND e.epoch >= 0",
                entity,
            )
            == 1
        ),
    )
    # Nothing reaches B, even once the grace period is over (a wait for an absence).
    time.sleep(GRACE + 2)
    assert b.count("SELECT COUNT(*) FROM beliefs WHERE id = ?", (belief_id,)) == 0
    assert b.count("SELECT COUNT(*) FROM tombstones WHERE entity_uri = ?", entity) == 0
    assert not [e for e in b.audit("belief_refused") if e["subject"] == belief_id]


def _delivery(
    signer_home: Path, origin: str, recipient: str, recipient_url: str, **envelope: Any
) -> dict[str, Any]:
    """A delivery body as an origin would send it, for the bad-input checks."""
    from oblivio.core.belief import (
        recipient_for,
        seal_belief,
        sign_envelope,
        wrap_belief_key,
    )
    from oblivio.core.manifest import verify_manifest

    manifest = verify_manifest(httpx.get(f"{recipient_url}/v1/manifest").json())
    assert manifest.federation_key is not None
    public = manifest.federation_key.x25519
    belief_id = new_uuid7()
    belief_key = os.urandom(32)
    ciphertext = seal_belief(belief_key, os.urandom(12), b"a belief", belief_id)
    signed = sign_envelope(
        load_signing_key(signer_home),
        belief_id=belief_id,
        origin=origin,
        ciphertext=ciphertext,
        metadata={},
        recipients=[recipient_for(recipient, "x25519", public)],
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    blob = wrap_belief_key("x25519", public, belief_key, belief_id)
    return {
        "envelope": {**signed, **envelope},
        "ciphertext_b64": b64url_encode(ciphertext),
        "key_blob": [{"node": recipient, "kem": "x25519", "enc_b64": b64url_encode(blob)}],
    }


def test_bad_beliefs_are_refused_audited_and_change_nothing(line: Line) -> None:
    a, b, c = line.a, line.b, line.c
    as_a = {"Authorization": f"Bearer {line.tokens[('b', 'a')]}"}
    good = _delivery(a.home, a.name, b.name, b.url)
    with b.client(as_a) as client:  # a well-formed one first (DHKEM(X25519)), then its replay
        first = client.post("/v1/federation/beliefs", json=good)
        assert first.status_code == 200, first.text
        assert first.json()["new"] is True
        again = client.post("/v1/federation/beliefs", json=good)
        assert again.json() == {**first.json(), "new": False}

    def state() -> tuple[int, int]:
        return (
            b.count("SELECT COUNT(*) FROM beliefs"),
            b.count("SELECT COUNT(*) FROM artifacts"),
        )

    before = state()
    refused_before = len(b.audit("belief_refused"))
    denied_before = len(b.audit("capability_denied"))
    wrong_signer = _delivery(c.home, a.name, b.name, b.url)  # signed with C's key as A
    claims_c = _delivery(c.home, c.name, b.name, b.url)  # C's envelope, relayed by A
    not_for_b = _delivery(a.home, a.name, c.name, c.url)
    tampered = {**good, "ciphertext_b64": b64url_encode(b"another ciphertext entirely")}
    with b.client(as_a) as client:
        for body, status, code in (
            ({}, 400, "invalid_input"),
            ({**good, "envelope": {"type": "oblivio.belief.v1"}}, 400, "invalid_input"),
            (wrong_signer, 400, "belief_verification_failed"),
            (claims_c, 400, "belief_verification_failed"),
            (not_for_b, 400, "belief_recipient_unknown"),
            (tampered, 400, "belief_verification_failed"),
        ):
            _error(client.post("/v1/federation/beliefs", json=body), status, code)
        _refuses_oversize(client, "/v1/federation/beliefs")
    read_only = cli(b.home, "peer", "token", a.name, "--verbs", "belief:read")
    for headers, code in (
        ({}, "capability_denied"),
        ({"Authorization": f"Bearer {read_only}"}, "capability_verb_missing"),
    ):
        with b.client(headers) as client:
            _error(client.post("/v1/federation/beliefs", json=good), 401, code)
    with b.client({"Authorization": f"Bearer {line.tokens[('b', 'a')]}"}) as client:
        _error(client.get("/v1/federation/beliefs/" + new_uuid7()), 404, "belief_not_found")
    assert state() == before
    assert len(b.audit("belief_refused")) == refused_before + 6
    assert len(b.audit("capability_denied")) == denied_before + 2
    with a.client() as client:  # an origin cannot share with a node that is not its peer
        response = client.post(
            "/v1/beliefs",
            json={"plaintext_b64url": "eA", "recipients": [c.name]},
        )
        _error(response, 400, "belief_recipient_unknown")


@pytest.mark.slow
def test_partition_and_crashes_lose_nothing_and_duplicate_nothing(line: Line) -> None:
    a, b, c = line.a, line.b, line.c
    b.kill()
    issued = [_tombstone(a, f"user:partition-{i}")["id"] for i in range(PARTITION_TOMBSTONES)]
    pending = a.count(
        "SELECT COUNT(*) FROM federation_outbox WHERE kind = 'tombstone' AND delivered_at IS NULL "
        "AND peer = ?",
        (b.name,),
    )
    assert pending >= PARTITION_TOMBSTONES  # nothing could go out: B is down
    b.start()
    a.kill()  # mid-outbox: whatever A had pushed or not, its rows are in its database
    a.start()

    def everywhere() -> bool:
        placeholders = ",".join("?" * len(issued))
        query = f"SELECT COUNT(*) FROM tombstones WHERE id IN ({placeholders})"  # noqa: S608
        return b.count(query, tuple(issued)) == len(issued) and c.count(
            query, tuple(issued)
        ) == len(issued)

    _poll(f"all {len(issued)} tombstones on B and C", everywhere)
    for node in (b, c):
        received = [e["subject"] for e in node.audit("tombstone_received")]
        assert sorted(t for t in received if t in set(issued)) == sorted(issued)  # once each
    _poll(
        "A's outbox to B drained",
        lambda: (
            a.count(
                "SELECT COUNT(*) FROM federation_outbox WHERE delivered_at IS NULL AND peer = ?",
                (b.name,),
            )
            == 0
        ),
    )


# -- bad input over the federation routes ----------------------------------------------------


def _signed_as_a(a: Node, **fields: Any) -> dict[str, Any]:
    key = load_signing_key(a.home)
    args: dict[str, Any] = {
        "record_id": new_record_id("tomb_"),
        "entity_uri": "user:mallory",
        "scope": "*",
        "reason": None,
        "signed_by": "agent:node-a.example/dpo",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "legal_hold": False,
    } | fields
    record: TombstoneRecord = sign_tombstone(key, **args)
    return record.to_dict()


def _state(node: Node) -> tuple[int, int, int]:
    return (
        node.count("SELECT COUNT(*) FROM tombstones"),
        node.count("SELECT COUNT(*) FROM tombstone_revocations"),
        # Acks relayed from further away arrive whenever they come: not the input's doing.
        node.count("SELECT COUNT(*) FROM federation_outbox WHERE kind NOT LIKE 'relay:%'"),
    )


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code, response.text


def _refuses_oversize(client: httpx.Client, path: str) -> None:
    oversize = b'{"id": "' + b"x" * 200_000 + b'"}'
    response = client.post(path, content=oversize, headers={"Content-Type": "application/json"})
    _error(response, 413, "request_too_large")


def test_bad_input_is_refused_audited_and_changes_nothing(line: Line) -> None:
    a, b = line.a, line.b
    as_a = {"Authorization": f"Bearer {line.tokens[('b', 'a')]}"}
    accepted = _signed_as_a(a, entity_uri="user:replayed")
    with b.client(as_a) as client:
        first = client.post("/federation/tombstone", json=accepted)
        assert first.status_code == 200, first.text
        assert first.json()["new"] is True
    before = _state(b)
    failures_before = len(b.audit("tombstone_verification_failed"))
    denied_before = len(b.audit("capability_denied"))

    forged = {**_signed_as_a(a), "entity_uri": "user:someone-else"}
    other_org_key = load_signing_key(line.c.home)
    with_c_key = sign_tombstone(
        other_org_key,
        record_id=new_record_id("tomb_"),
        entity_uri="user:mallory",
        scope="*",
        reason=None,
        signed_by="agent:node-a.example/dpo",
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        legal_hold=False,
    ).to_dict()
    claims_c = _signed_as_a(a, signed_by="agent:node-c.example/dpo")
    too_old = _signed_as_a(a, created_at="2000-01-01T00:00:00.000Z")
    b_key = load_signing_key(b.home)
    expired = issue_token(
        b_key,
        issuer=b.name,
        subject=a.name,
        verbs=["tombstone:write"],
        jti=new_uuid7(),
        now=datetime.now(UTC) - timedelta(days=2),
        lifetime=timedelta(days=1),
    )
    read_only = cli(b.home, "peer", "token", a.name, "--verbs", "tombstone:read")
    with b.client(as_a) as client:
        for record, why in (
            (forged, "does not verify"),
            (with_c_key, "not in the manifest of org node-a.example"),
            (claims_c, "not in the manifest of org node-c.example"),
            (too_old, "2000-01-01"),
        ):
            response = client.post("/federation/tombstone", json=record)
            _error(response, 400, "tombstone_verification_failed")
            assert why in response.json()["error"]["message"]
        replay = client.post("/federation/tombstone", json=accepted)
        assert replay.status_code == 200
        assert replay.json() == {"accepted": True, "tombstone_id": accepted["id"], "new": False}
        _error(
            client.get("/v1/federation/tombstones", params={"since": "c1.not-a-cursor"}),
            400,
            "invalid_cursor",
        )
        _error(
            client.get("/v1/federation/tombstones", params={"since": "yesterday"}),
            400,
            "invalid_cursor",
        )
        _refuses_oversize(client, "/federation/tombstone")
        _error(
            client.post(
                "/federation/tombstone",
                content=b'{"id": ',
                headers={"Content-Type": "application/json"},
            ),
            400,
            "invalid_input",
        )
        _error(
            client.post("/federation/tombstone", json=["not", "a", "record"]), 400, "invalid_input"
        )
    record = _signed_as_a(a, entity_uri="user:token-checks")
    for headers, code in (
        ({"Authorization": f"Bearer {expired}"}, "capability_expired"),
        ({"Authorization": f"Bearer {read_only}"}, "capability_verb_missing"),
        ({"Authorization": f"Bearer {line.tokens[('a', 'b')]}"}, "capability_denied"),
        (b.admin, "capability_denied"),
        ({}, "capability_denied"),
    ):
        with b.client(headers) as client:
            _error(client.post("/federation/tombstone", json=record), 401, code)
    assert _state(b) == before
    assert len(b.audit("tombstone_verification_failed")) == failures_before + 4
    _bad_acks_are_refused_or_judged(line)
    assert len(b.audit("capability_denied")) == denied_before + 5
    refused = [(e["actor"], e["details"]["code"]) for e in b.audit("federation_request_refused")]
    assert refused.count((a.name, "invalid_cursor")) >= 2
    assert (a.name, "request_too_large") in refused
    assert refused.count((a.name, "invalid_input")) >= 2  # not JSON, not an object
    replays = [e for e in b.audit("tombstone_replayed") if e["subject"] == accepted["id"]]
    assert [e["actor"] for e in replays] == [a.name]


def _deletion_request_of_a(a: Node, **fields: Any) -> dict[str, Any]:
    """A seed 001 Tombstone whose DeletionRequest A's key signs (seed 001 "Deletion Flow")."""
    from oblivio.core.canonical import canonical_json

    belief_id = str(uuid.uuid4())
    request = {
        "belief_id": belief_id,
        "tombstone_id": new_uuid7(),
        "reason": "user_request",
        "originator_id": "agent:node-a.example/dpo",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "propagate": True,
    } | fields
    signature = load_signing_key(a.home).sign(canonical_json(request))
    request["signature"] = b64url_encode(signature)
    return {
        "id": request["tombstone_id"],
        "belief_id": request["belief_id"],
        "deletion_request": request,
        "key_revocation": {
            "revoked_key_hash": "00" * 32,
            "revocation_timestamp": request["timestamp"],
        },
        "created_at": request["timestamp"],
    }


def test_a_seed001_tombstone_is_verified_applied_forwarded_and_proved(line: Line) -> None:
    """Seed 001's six duties for a ``Tombstone`` pushed to B by A: its signed DeletionRequest
    verified against A's manifest, stored once, applied (B and C forget the belief), forwarded
    unchanged to C (``propagate``), acked with proofs, audited; one with ``propagate: false``
    goes no further; forged or malformed ones change nothing (400, audited)."""
    a, b, c = line.a, line.b, line.c
    as_a = {"Authorization": f"Bearer {line.tokens[('b', 'a')]}"}
    tombstone = _deletion_request_of_a(a)
    entity = f"belief:{tombstone['belief_id']}"
    on_b, on_c = _put(b, entity, b"belief on b"), _put(c, entity, b"belief on c")
    record_id = "tomb_" + tombstone["id"]
    with b.client(as_a) as client:
        first = client.post("/federation/tombstone", json=tombstone)
        assert first.status_code == 200, first.text
        assert first.json() == {"accepted": True, "tombstone_id": record_id, "new": True}
        again = client.post("/federation/tombstone", json=tombstone)
        assert again.json()["new"] is False
    _poll("C holds the seed 001 tombstone", lambda: _holds(c, record_id))
    _poll("B and C forgot the belief", lambda: _forgotten(b, on_b) and _forgotten(c, on_c))
    with c.client() as client:
        held = client.get("/v1/tombstones/" + quote(entity, safe="")).json()["tombstones"]
    assert held[0]["seed001"] == tombstone  # relayed exactly as A signed it
    assert held[0]["signature"] == tombstone["deletion_request"]["signature"]
    received = [e for e in c.audit("tombstone_received") if e["subject"] == record_id]
    assert [(e["actor"], e["details"]["form"]) for e in received] == [(b.name, "seed001")]

    def c_on_b() -> str:
        with b.client() as client:
            peers = client.get(f"/v1/federation/propagation/{record_id}").json()["peers"]
        return next((str(p["status"]) for p in peers if p["peer"] == c.name), "")

    _poll("B shows C proved", lambda: c_on_b() == "proved")

    local = _deletion_request_of_a(a, propagate=False)
    before = _state(b)
    failures = len(b.audit("tombstone_verification_failed"))
    with b.client(as_a) as client:
        assert client.post("/federation/tombstone", json=local).status_code == 200
        forged = {**tombstone, "deletion_request": {**tombstone["deletion_request"]}}
        forged["deletion_request"]["propagate"] = False
        forged_other = _deletion_request_of_a(a)
        forged_other["deletion_request"]["belief_id"] = forged_other["belief_id"] = str(
            uuid.uuid4()
        )
        for bad in (forged, forged_other):
            _error(
                client.post("/federation/tombstone", json=bad), 400, "tombstone_verification_failed"
            )
        malformed = {**_deletion_request_of_a(a), "key_revocation": None}
        _error(client.post("/federation/tombstone", json=malformed), 400, "invalid_input")
    tombstones, revocations, outbox = _state(b)
    assert (tombstones, revocations) == (before[0] + 1, before[1])  # the local one only
    assert outbox == before[2] + 1  # its ack to A; nothing for C
    assert len(b.audit("tombstone_verification_failed")) == failures + 2
    offered: list[str] = []
    since = "1970-01-01T00:00:00.000Z"
    with b.client({"Authorization": f"Bearer {line.tokens[('b', 'c')]}"}) as client:
        while True:
            page = client.get("/v1/federation/tombstones", params={"since": since}).json()
            offered += [t["id"] for t in page["tombstones"]]
            if page["cursor"] == since:
                break
            since = page["cursor"]
    assert tombstone["id"] in offered  # seed 001 tombstones are pulled as they came
    assert local["id"] not in offered


def _bad_acks_are_refused_or_judged(line: Line) -> None:
    """Acks B sends A: one signed by another key is refused (400, audited); one whose proof was
    tampered with is kept but judged ``non_compliant``; a genuine one afterwards is ``proved``."""
    from oblivio.federation.acks import sign_ack

    a, b = line.a, line.b
    on_b = _put(b, "user:acked", b"acked on b")
    record = _tombstone(a, "user:acked")

    genuine = partial(_ack_on, a, record["id"], b.name)

    _poll("B's ack on A", lambda: genuine() is not None)
    ack = genuine()
    assert ack is not None
    assert ack["artifacts"] == [on_b]
    fields = {k: v for k, v in ack.items() if k not in ("type", "key_id", "signature", "node")}
    as_b = {"Authorization": f"Bearer {line.tokens[('a', 'b')]}"}
    failures = len(a.audit("ack_verification_failed"))
    with a.client(as_b) as client:
        forged = sign_ack(load_signing_key(line.c.home), node=b.name, **fields)
        _error(client.post("/v1/federation/acks", json=forged), 400, "verification_failed")
        # B "relaying" an ack of C that B signed itself: checked against C's manifest.
        relayed = sign_ack(load_signing_key(b.home), node=line.c.name, **fields)
        _error(client.post("/v1/federation/acks", json=relayed), 400, "verification_failed")
        proof = dict(ack["proofs"][0])
        proof["artifact_id"] = "00" * 32
        tampered = sign_ack(load_signing_key(b.home), node=b.name, **(fields | {"proofs": [proof]}))
        judged = client.post("/v1/federation/acks", json=tampered)
        assert judged.status_code == 200, judged.text
        assert judged.json()["status"] == "non_compliant"
        with a.client() as admin:
            peers = admin.get(f"/v1/federation/propagation/{record['id']}").json()["peers"]
        assert {p["peer"]: p["status"] for p in peers}[b.name] == "non_compliant"
        again = client.post("/v1/federation/acks", json=ack)
        assert again.json()["status"] == "proved"
    assert len(a.audit("ack_verification_failed")) == failures + 2


# -- a misbehaving peer: a real HTTP server that takes tombstones and never acknowledges -------


class Impostor:
    """``node-d.example``: serves its manifest, answers every push ``accepted`` and never
    acks; relays (``/v1/federation/manifests/node-z.example``) whichever manifest of
    node-z.example the test sets."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from oblivio.core.manifest import new_manifest
        from oblivio.core.note import verifier_key
        from oblivio.core.signing import SigningKey

        now = datetime.now(UTC) - timedelta(minutes=1)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self.key = SigningKey(os.urandom(32))
        self.manifest = new_manifest("node-d.example", self.key, stamp)
        self.verifier_key = verifier_key("node-d.example", self.key.verify_key.public_bytes)
        self.z_manifest: dict[str, Any] = {}
        self.pushed: list[str] = []
        self.offered: list[dict[str, Any]] = []
        """What the impostor's pull route serves (one page, then an unchanged cursor)."""
        impostor = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/manifest":
                    self._answer(200, impostor.manifest)
                elif self.path == "/v1/federation/manifests/node-z.example":
                    self._answer(200, impostor.z_manifest)
                elif self.path.startswith("/v1/federation/tombstones"):
                    done = "since=c1.done" in self.path
                    offered = [] if done else impostor.offered
                    self._answer(
                        200, {"tombstones": offered, "revocations": [], "cursor": "c1.done"}
                    )
                else:
                    self._answer(404, {"error": {"code": "not_found", "message": self.path}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                impostor.pushed.append(str(body.get("id")))
                self._answer(200, {"accepted": True, "tombstone_id": body.get("id"), "new": True})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def impostor() -> Iterator[Impostor]:
    """One impostor (one key) for the module: a removed peer stays pinned to its key."""
    server = Impostor()
    try:
        yield server
    finally:
        server.close()


def test_a_peer_that_never_acks_turns_silent(line: Line, impostor: Impostor) -> None:
    a = line.a
    cli(
        a.home,
        "peer",
        "add",
        "node-d.example",
        "--url",
        impostor.url,
        "--key",
        impostor.verifier_key,
    )
    try:
        record = _tombstone(a, "user:silent")
        _poll("the impostor got the push", lambda: record["id"] in impostor.pushed)

        def status_of_d() -> str:
            with a.client() as client:
                peers = client.get(f"/v1/federation/propagation/{record['id']}").json()["peers"]
            return str(next(p["status"] for p in peers if p["peer"] == "node-d.example"))

        assert status_of_d() in ("pending", "silent")
        _poll("D silent after the ack deadline", lambda: status_of_d() == "silent")
    finally:
        cli(a.home, "peer", "remove", "node-d.example")
    listed = json.loads(cli(a.home, "peer", "list", "--json"))["peers"]
    assert {p["name"]: p["state"] for p in listed}["node-d.example"] == "removed"


def test_a_relayed_manifest_is_pinned_on_first_use_and_a_conflicting_one_refused(
    line: Line, impostor: Impostor
) -> None:
    from oblivio.core.manifest import new_manifest
    from oblivio.core.signing import SigningKey

    c = line.c
    cli(
        c.home,
        "peer",
        "add",
        "node-d.example",
        "--url",
        impostor.url,
        "--key",
        impostor.verifier_key,
    )
    try:
        token = cli(c.home, "peer", "token", "node-d.example", "--verbs", "tombstone:write")
        as_d = {"Authorization": f"Bearer {token}"}
        stamp = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        z1, z2 = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))

        def signed_by_z(key: SigningKey, entity_uri: str) -> dict[str, Any]:
            return sign_tombstone(
                key,
                record_id=new_record_id("tomb_"),
                entity_uri=entity_uri,
                scope="*",
                reason=None,
                signed_by="agent:node-z.example/dpo",
                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                legal_hold=False,
            ).to_dict()

        impostor.z_manifest = new_manifest("node-z.example", z1, stamp)
        with c.client(as_d) as client:
            first = client.post("/federation/tombstone", json=signed_by_z(z1, "user:z-one"))
            assert first.status_code == 200, first.text
            pinned = [e["subject"] for e in c.audit("manifest_pinned")]
            assert pinned.count("node-z.example") == 1
            assert "node-a.example" in pinned  # C, no peer of A, pinned A's from B too
            impostor.z_manifest = new_manifest("node-z.example", z2, stamp)  # a split view
            before = _state(c)
            second = client.post("/federation/tombstone", json=signed_by_z(z2, "user:z-two"))
            _error(second, 400, "tombstone_verification_failed")
            assert _state(c) == before
        conflicts = c.audit("manifest_conflict")
        assert [e["subject"] for e in conflicts] == ["node-z.example"]
        assert "anchor" in conflicts[0]["details"]["why"]
    finally:
        cli(c.home, "peer", "remove", "node-d.example")


def test_a_forged_record_pulled_from_a_peer_is_kept_for_the_operator(
    line: Line, impostor: Impostor
) -> None:
    """The impostor's pull route offers a record of A with a changed entity: C refuses it
    (audited), stores no tombstone, and keeps it as ``failed`` where the operator sees it."""
    a, c = line.a, line.c
    known = _tombstone(a, "user:before-the-forgery")  # C learns A's manifest (from B)
    _poll("C holds A's tombstone", lambda: _holds(c, known["id"]))
    forged = {**_signed_as_a(a, entity_uri="user:pulled-forgery"), "entity_uri": "user:victim"}
    impostor.offered = [forged]
    before = _state(c)
    cli(
        c.home,
        "peer",
        "add",
        "node-d.example",
        "--url",
        impostor.url,
        "--key",
        impostor.verifier_key,
        "--token",
        "v4.public.the-impostor-checks-nothing",
    )
    try:

        def kept() -> bool:
            shown = json.loads(cli(c.home, "propagation", "--json"))["unverified"]
            return any(u["record_id"] == forged["id"] and u["state"] == "failed" for u in shown)

        _poll("the forgery kept as failed", kept)
        refused = [
            e for e in c.audit("tombstone_verification_failed") if e["subject"] == forged["id"]
        ]
        assert refused
        assert refused[0]["actor"] == "node-d.example"
        assert c.count("SELECT COUNT(*) FROM tombstones WHERE id = ?", (forged["id"],)) == 0
    finally:
        cli(c.home, "peer", "remove", "node-d.example")
    tombstones, revocations, _ = _state(c)
    assert (tombstones, revocations) == before[:2]


# -- a peer that ignores tombstones: caught with signed evidence, penalised, isolated ---------


@dataclass
class IgnoringPeer:
    """tests/federation/ignoring_peer.py running in a process of its own."""

    name: str
    url: str
    key: SigningKey
    verifier_key: str
    process: subprocess.Popen[bytes]

    def pushed(self) -> list[str]:
        ids: list[str] = httpx.get(self.url + "/test/pushed", timeout=10).json()["pushed"]
        return ids


@pytest.fixture
def ignoring_peer(tmp_path: Path) -> Iterator[IgnoringPeer]:
    from oblivio.core.note import verifier_key
    from oblivio.core.signing import SigningKey

    name = "ignorer.example"
    seed = os.urandom(32)
    (tmp_path / "seed").write_bytes(seed)
    port = free_port()
    with (tmp_path / "ignorer.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.federation.ignoring_peer",
                "--name",
                name,
                "--port",
                str(port),
                "--seed-file",
                str(tmp_path / "seed"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    key = SigningKey(seed)
    peer = IgnoringPeer(
        name,
        f"http://127.0.0.1:{port}",
        key,
        verifier_key(name, key.verify_key.public_bytes),
        process,
    )

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "ignorer.log").read_text()
        try:
            return httpx.get(peer.url + "/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _poll("the ignoring peer answering", up)
        yield peer
    finally:
        process.terminate()  # by PID: the process this fixture started
        process.wait(timeout=30)


def _peer_row(node: Node, name: str) -> dict[str, Any]:
    listed = json.loads(cli(node.home, "peer", "list", "--json"))["peers"]
    row: dict[str, Any] = next(p for p in listed if p["name"] == name)
    return row


def test_a_peer_that_ignores_tombstones_is_caught_with_signed_evidence_and_isolated(
    line: Line, ignoring_peer: IgnoringPeer, tmp_path: Path
) -> None:
    from oblivio.core.evidence import SIGNATURE_HEADER, decode_statement, verify_response

    a, double = line.a, ignoring_peer
    # A real belief A -> B, deleted before the double is a peer: B, its recipient, is probed
    # even though its ack proves the forgetting.
    shared = _share(a, [line.b.name], b"B forgets this")["id"]
    _poll("B holds the shared belief", lambda: _belief_on(line.b, shared).status_code == 200)
    shared_tombstone = _tombstone(a, f"belief:{shared}")["id"]
    cli(
        a.home,
        "peer",
        "add",
        double.name,
        "--url",
        double.url,
        "--key",
        double.verifier_key,
        "--token",
        "v4.public.the-double-takes-any-bearer-token",
    )
    as_double = {
        "Authorization": "Bearer "
        + cli(
            a.home,
            "peer",
            "token",
            double.name,
            "--verbs",
            "tombstone:write,tombstone:read,belief:write",
        )
    }
    try:
        assert _peer_row(a, double.name)["reputation"] == 1.0
        belief = str(new_uuid7())
        record = _tombstone(a, f"belief:{belief}")
        _poll("the double got the tombstone", lambda: record["id"] in double.pushed())

        # After the ack deadline A probes: the double's signed answers still serve the belief.
        _poll(
            "tombstone_ignored: 1.0 -> 0.5", lambda: _peer_row(a, double.name)["reputation"] == 0.5
        )
        _poll(
            "repeated_violation: -0.5, isolated",
            lambda: _peer_row(a, double.name)["state"] == "isolated",
        )
        assert _peer_row(a, double.name)["reputation"] == -0.5
        changes = [e["details"] for e in a.audit("reputation_changed") if e["actor"] == double.name]
        assert [(c["event"], c["from"], c["to"]) for c in changes] == [
            ("tombstone_ignored", 1.0, 0.5),
            ("repeated_violation", 0.5, -0.5),
        ]
        assert [e["subject"] for e in a.audit("peer_isolated")] == [double.name]
        assert len(a.audit("noncompliance_evidence")) == 2

        # The evidence, exported, verifies offline with the double's key; a tampered copy fails.
        listed = json.loads(cli(a.home, "evidence", "list", "--peer", double.name, "--json"))
        assert {(e["tombstone_id"], e["finding"]) for e in listed["evidence"]} == {
            (record["id"], "content_served")
        }
        path = tmp_path / "evidence.json"
        cli(a.home, "evidence", "show", listed["evidence"][0]["id"], "-o", str(path))
        checked = oblivio("verify-evidence", str(path), "--key", double.verifier_key)
        assert checked.returncode == 0, checked.stderr
        assert "non-compliance proven" in checked.stdout
        assert belief in checked.stdout
        evidence = json.loads(path.read_text())
        evidence["their_response"]["statement"]["signed_at"] = record["created_at"]
        path.write_text(json.dumps(evidence))
        refused = oblivio("verify-evidence", str(path), "--key", double.verifier_key)
        assert refused.returncode == 8, refused.stderr
        with a.client() as admin:
            served = admin.get(f"/v1/federation/evidence/{listed['evidence'][0]['id']}")
            assert served.json()["type"] == "oblivio.noncompliance-evidence.v1"
            # A's own federation answers are signed the same way, with A's key.
            statement = decode_statement(served.headers[SIGNATURE_HEADER])
            a_key = load_signing_key(a.home).verify_key
            assert verify_response(statement, served.content, a_key).node == a.name
            probes = admin.get("/v1/federation/probes", params={"tombstone_id": record["id"]})
        states = {p["peer"]: (p["state"], p["last_result"]) for p in probes.json()["probes"]}
        assert states[double.name][0] == "due"  # resumes if the double is ever reinstated
        assert states["node-b.example"] == ("done", "clean")  # B applied it: signed answers agree

        def recipient_b() -> tuple[bool, str, str] | None:
            with a.client() as admin:
                rows = admin.get("/v1/federation/probes", params={"tombstone_id": shared_tombstone})
            row = {p["peer"]: p for p in rows.json()["probes"]}.get(line.b.name)
            return (
                None if row is None else (row["belief_recipient"], row["state"], row["last_result"])
            )

        _poll("B, the belief's recipient, probed", lambda: recipient_b() == (True, "done", "clean"))

        # Isolated: nothing more is shared with it, its data is refused, its tombstones applied.
        later = _tombstone(a, "user:after-isolation")
        assert (
            a.count(
                "SELECT COUNT(*) FROM federation_outbox WHERE record_id = ? AND peer = ?",
                (later["id"], double.name),
            )
            == 0
        )
        with httpx.Client(base_url=a.url, headers=as_double, timeout=30) as client:
            _error(client.get("/v1/federation/tombstones"), 403, "peer_isolated")
            _error(client.post("/v1/federation/beliefs", json={}), 403, "peer_isolated")
            artifact = _put(a, "user:asked-the-double", b"forget me")
            theirs = sign_tombstone(
                double.key,
                record_id=new_record_id("tomb_"),
                entity_uri="user:asked-the-double",
                scope="*",
                reason=None,
                signed_by=f"agent:{double.name}/dpo",
                created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                legal_hold=False,
            ).to_dict()
            accepted = client.post("/federation/tombstone", json=theirs)
            assert accepted.status_code == 200, accepted.text
        _poll("A applied the isolated peer's tombstone", partial(_forgotten, a, artifact))
        assert any(
            e["details"].get("code") == "peer_isolated" for e in a.audit("capability_denied")
        )

        row = json.loads(cli(a.home, "peer", "reinstate", double.name, "--json"))
        assert (row["state"], row["reputation"]) == ("active", 1.0)
        assert [e["subject"] for e in a.audit("peer_reinstated")] == [double.name]
        # Its probe resumes at once; its history stays, so the next finding is a repeated one.
        _poll("probed again: 1.0 -> 0.0", lambda: _peer_row(a, double.name)["reputation"] == 0.0)
    finally:
        cli(a.home, "peer", "remove", double.name)
