"""Tombstones as a node service (node/tombstones.py, node/services.py), on SQLite and PostgreSQL:
what a tombstone does to data written after it (ADR 0018), and that what it asks for is logged
exactly as an operator's forget or hold is (ADR 0017).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import pytest

from oblivio.core.canonical import parse_json
from oblivio.core.errors import ArtifactForgottenError, IntegrityError
from oblivio.core.forgetting import COMMITTED_AUTHORITY, open_requestor_commitment
from oblivio.core.identifiers import CAPABILITIES, ArtifactId
from oblivio.core.pof import verify_document
from oblivio.node.node import Node
from oblivio.node.services import NodeServices, open_services
from oblivio.node.vault import ArtifactInput


@pytest.fixture
def services(node: Node) -> NodeServices:
    return open_services(node)


def _read_error(node: Node, artifact_id: str) -> str:
    with pytest.raises(ArtifactForgottenError) as raised:
        node.vault.get(artifact_id)
    return str(raised.value)


def _keys_kept(node: Node, artifact_id: str) -> bool:
    try:
        for capability in CAPABILITIES:
            node.vault.custody.unwrap_capability_key(ArtifactId(artifact_id), capability)
    except IntegrityError:
        return False
    return True


def _requests_of(node: Node, artifact_id: str) -> list[tuple[Any, ...]]:
    """(source, authority, level, state) of every forget request naming the artifact."""
    with node.db.transaction(write=False) as tx:
        return [
            tuple(r)
            for r in tx.fetchall(
                "SELECT r.source, r.authority, r.level, r.state FROM forget_requests r "
                "JOIN forget_events e ON e.request_id = r.id WHERE e.artifact_id = ? "
                "ORDER BY e.log_index",
                (artifact_id,),
            )
        ]


def _log_entries(services: NodeServices) -> list[dict[str, Any]]:
    log = services.checkpoints.log
    return [parse_json(log.entry(i)) for i in range(log.size())]


# -- data written after a tombstone (ADR 0018) --------------------------------------------------


def test_put_after_tombstone_is_suppressed_then_forgotten_with_a_proof(
    node: Node, services: NodeServices
) -> None:
    record, _ = services.compliance.tombstones.issue("admin-1", "user:carol", "*", "erasure")
    services.forgetting.commit_due()

    late = node.vault.put(b"carol's new address", {"k": 1}, "user:carol", "team")
    streamed = node.vault.put_stream(io.BytesIO(b"carol, streamed"), {}, "user:carol", "public")
    bystander = node.vault.put(b"dave's address", {}, "user:dave", "team")
    unplaced = node.vault.put(b"about nobody", {})

    # Never readable, not even before the next epoch: the put's transaction forgot them.
    for artifact_id in (late, streamed):
        assert "was forgotten at level 2" in _read_error(node, artifact_id)
        assert _requests_of(node, artifact_id) == [(record.id, "tombstone", 2, "pending")]
    assert node.vault.get(bystander) == b"dave's address"
    assert node.vault.get(unplaced) == b"about nobody"

    services.forgetting.commit_due()
    for artifact_id in (late, streamed):
        assert not _keys_kept(node, artifact_id)
        [proven] = verify_document(
            services.forgetting.prove(artifact_id), services.checkpoints.verifier_key
        )
        assert (proven.artifact_id, proven.level) == (artifact_id, 2)
        assert _requests_of(node, artifact_id) == [(record.id, "tombstone", 2, "done")]
    assert _keys_kept(node, bystander)
    events = [e.event for e in services.compliance.audit.read(0, 1000)]
    assert events.count("tombstone_applied") == 2


def test_put_many_forgets_only_what_the_tombstone_scope_covers(
    node: Node, services: NodeServices
) -> None:
    services.compliance.tombstones.issue("admin-1", "user:erin", ["team", "company"], None)
    ids = node.vault.put_many(
        [
            ArtifactInput(f"erin {scope}".encode(), {}, "user:erin", scope)
            for scope in ("local", "team", "company", "public")
        ]
        + [ArtifactInput(b"frank team", {}, "user:frank", "team")]
    )
    erin = dict(zip(("local", "team", "company", "public"), ids, strict=False))
    for scope in ("team", "company"):
        _read_error(node, erin[scope])
    for scope in ("local", "public"):
        assert node.vault.get(erin[scope]) == f"erin {scope}".encode()
    assert node.vault.get(ids[-1]) == b"frank team"
    # One request for the covered artifacts of the batch, as the tombstone's own was.
    with node.db.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT DISTINCT request_id FROM forget_events WHERE artifact_id IN (?, ?, ?, ?, ?)",
            ids,
        )
    assert len(rows) == 1


def test_put_after_legal_hold_tombstone_is_held_and_revocation_restores_it(
    node: Node, services: NodeServices
) -> None:
    record, _ = services.compliance.tombstones.issue(
        "admin-1", "user:gina", "*", "litigation", legal_hold=True
    )
    held = node.vault.put(b"gina's contract", {}, "user:gina", "company")
    services.forgetting.commit_due()
    services.forgetting.commit_due()
    assert "was forgotten at level 2" in _read_error(node, held)
    assert _keys_kept(node, held), "a legal hold keeps the keys"

    revocation = services.compliance.tombstones.revoke("admin-1", record.id, "hold lifted")
    assert revocation.erased_artifacts == ()
    services.forgetting.commit_due()
    assert node.vault.get(held) == b"gina's contract"


def test_put_after_revocation_is_readable(node: Node, services: NodeServices) -> None:
    record, _ = services.compliance.tombstones.issue("admin-1", "user:hugo", "*", None)
    services.compliance.tombstones.revoke("admin-1", record.id, "issued in error")
    artifact_id = node.vault.put(b"hugo", {}, "user:hugo", "local")
    assert node.vault.get(artifact_id) == b"hugo"
    assert _requests_of(node, artifact_id) == []


def test_a_put_in_the_default_scope_is_covered(node: Node, services: NodeServices) -> None:
    record, _ = services.compliance.tombstones.issue("admin-1", "user:iris", "local", None)
    artifact_id = node.vault.put(b"iris", {}, "user:iris")  # scope defaults to local
    _read_error(node, artifact_id)
    assert _requests_of(node, artifact_id)[0][0] == record.id


def _puts_while(node: Node, entity: str, act: Callable[[], object]) -> list[str]:
    """Put 40 artifacts about ``entity`` one by one in another thread, and ``act`` meanwhile."""
    put_ids: list[str] = []
    failures: list[BaseException] = []
    writing = threading.Event()

    def writer() -> None:
        try:
            for i in range(40):
                put_ids.append(node.vault.put(f"{entity} {i}".encode(), {}, entity, "team"))
                writing.set()
        except BaseException as e:  # reported by the test thread
            failures.append(e)
        finally:
            writing.set()

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(30)
    act()
    thread.join(120)
    assert not thread.is_alive()
    assert not failures, failures
    assert len(put_ids) == 40
    return put_ids


def test_puts_racing_a_tombstone_are_all_forgotten(node: Node, services: NodeServices) -> None:
    """A put that commits before the tombstone is found by the tombstone's forget, one after it
    by the put's own rule; the entity lock leaves no put in between (ADR 0018)."""
    tombstones = services.compliance.tombstones
    put_ids = _puts_while(node, "user:oscar", lambda: tombstones.issue("a", "user:oscar", "*", ""))
    for artifact_id in put_ids:
        _read_error(node, artifact_id)


def test_puts_racing_a_revocation_are_all_restored(node: Node, services: NodeServices) -> None:
    """A put the tombstone forgot before its revocation is restored by the revocation's
    cancellation; one after it is not forgotten at all (no epoch runs in between)."""
    tombstones = services.compliance.tombstones
    record, _ = tombstones.issue("admin-1", "user:pia", "*", None)
    put_ids = _puts_while(node, "user:pia", lambda: tombstones.revoke("a", record.id, "error"))
    for i, artifact_id in enumerate(put_ids):
        assert node.vault.get(artifact_id) == f"user:pia {i}".encode()


# -- what a tombstone's requests look like in public (ADR 0017) ---------------------------------


def _shape(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with what differs between any two requests (ids, hashes, times) blanked."""
    blank = {"id", "artifacts", "requestor_commitment", "requested_at", "at"}
    return {k: ("…" if k in blank else v) for k, v in entry.items()}


def test_tombstone_requests_are_logged_as_an_operators_are(
    node: Node, services: NodeServices
) -> None:
    for entity in ("user:jack", "user:kate", "user:liam", "user:mona"):
        node.vault.put(entity.encode(), {}, entity, "team")
    start = services.checkpoints.log.size()
    services.compliance.tombstones.issue("admin-1", "user:jack", "*", "erasure #12")
    services.compliance.tombstones.issue("admin-1", "user:kate", "*", "hold #7", legal_hold=True)
    tombstone_entries = _log_entries(services)[start:]
    start = services.checkpoints.log.size()
    services.forgetting.forget(entity_uri="user:liam", level=2, authority="GDPR-17", reason="x")
    services.place_hold(entity_uri="user:mona", authority="court order 7", reason="y")
    services.forgetting.forget(entity_uri="user:mona", level=2, authority="GDPR-17")
    operator_entries = _log_entries(services)[start:]

    assert [_shape(e) for e in tombstone_entries] == [_shape(e) for e in operator_entries]
    for entry in tombstone_entries + operator_entries:
        assert entry["authority"] == COMMITTED_AUTHORITY
    # The node keeps the openings: each commitment opens to the authority asked for.
    with node.db.transaction(write=False) as tx:
        requests = {
            commitment: parse_json(opening)
            for commitment, opening in tx.fetchall(
                "SELECT requestor_commitment, opening FROM forget_requests"
            )
        }
        holds = {
            hold_id: parse_json(opening)
            for hold_id, opening in tx.fetchall("SELECT id, opening FROM legal_holds")
        }
    for entry in tombstone_entries + operator_entries:
        opening = (
            holds[entry["id"]]
            if entry["type"] == "legal_hold"
            else requests[entry["requestor_commitment"]]
        )
        salt = bytes.fromhex(opening["salt"])
        open_requestor_commitment(entry["requestor_commitment"], salt, opening["value"])
    authorities = [str(o["value"]["authority"]) for o in [*requests.values(), *holds.values()]]
    assert sorted(authorities) == sorted(
        ["tombstone", "tombstone", "legal-hold tombstone", "GDPR-17", "GDPR-17", "court order 7"]
    )
