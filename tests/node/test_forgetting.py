"""Forgetting as a node service (DESIGN.md §8, §9, §13; node/forgetting.py), on SQLite and
PostgreSQL: levels 0, 1 and 2, capability subsets, entity forgets over scope patterns, legal
holds, the destruction window, tombstone-driven forgetting and its revocation, the privacy of
the public evidence, and an entity forget of 10,000 artifacts in one epoch.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from oblivio.core.canonical import parse_json
from oblivio.core.errors import (
    ArtifactForgottenError,
    ArtifactNotFoundError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from oblivio.core.forgetting import entry_hash, open_requestor_commitment
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import CAPABILITIES, ArtifactId, Capability
from oblivio.core.pof import verify_document
from oblivio.node.checkpoints import CheckpointService, check_store_agrees
from oblivio.node.forgetting import ForgetSettings, ForgettingService
from oblivio.node.node import Node
from oblivio.node.services import NodeServices, open_services
from oblivio.node.vault import ArtifactInput
from oblivio.store.database import Database
from oblivio.store.migrations import migrate
from tests.node.helpers import assert_suppressed

SCOPES = ("local", "team", "company", "public")


@pytest.fixture
def services(node: Node) -> NodeServices:
    return open_services(node)


# -- helpers ---------------------------------------------------------------------------------


def _key_kept(node: Node, artifact_id: str, capability: Capability = "decrypt") -> bool:
    """Whether the node can still unwrap this capability key (the key tree, not the read
    policy: a suppressed artifact keeps its keys)."""
    try:
        node.vault.custody.unwrap_capability_key(ArtifactId(artifact_id), capability)
    except IntegrityError:
        return False
    return True


def _readable(node: Node, artifact_id: str) -> bool:
    try:
        node.vault.get(artifact_id)
    except ArtifactForgottenError:
        return False
    return True


def _leaf(services: NodeServices, artifact_id: str) -> tuple[dict[str, Any], bool]:
    return services.forgetting.leaf_record(artifact_id)


def _count(db: Database, table: str) -> int:
    with db.transaction(write=False) as tx:
        row = tx.fetchone(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
    assert row is not None
    return int(row[0])


def _log_entries(db: Database) -> list[dict[str, Any]]:
    with db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT entry FROM log_entries ORDER BY idx")
    return [parse_json(bytes(r[0])) for r in rows]


def _verified(services: NodeServices, artifact_id: str) -> Any:
    [proven] = verify_document(
        services.forgetting.prove(artifact_id), services.checkpoints.verifier_key
    )
    assert proven.artifact_id == artifact_id
    return proven


def _put_scoped(node: Node, entity: str, scopes: Sequence[str] = SCOPES) -> dict[str, ArtifactId]:
    ids = node.vault.put_many(
        [ArtifactInput(f"{entity} {s}".encode(), {"scope": s}, entity, s) for s in scopes]
    )
    return dict(zip(scopes, ids, strict=True))


# -- levels ----------------------------------------------------------------------------------


def test_level_2_is_logged_before_the_ack_then_tombstoned_and_proven(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"Alice's address", {"kind": "address"}, "user:alice")
    bystander = node.vault.put(b"Bob's address", {}, "user:bob")
    services.forgetting.commit_due()
    size_before = services.checkpoints.log.size()

    receipt = services.forgetting.forget(artifact_id=artifact_id, level=2, authority="GDPR-17")

    # Acknowledged: the event is in the log already, reads stop at once, nothing executed yet.
    [(event_id, event_artifact, log_index)] = receipt.events
    assert event_artifact == artifact_id
    assert log_index == size_before
    logged = parse_json(services.checkpoints.log.entry(log_index))
    assert logged["type"] == "forget"
    assert logged["id"] == event_id
    assert logged["artifacts"] == [artifact_id]
    assert logged["level"] == 2
    assert_suppressed(node, artifact_id)
    assert _key_kept(node, artifact_id)
    assert services.forgetting.status(receipt.request_id)["state"] == "pending"
    with pytest.raises(ConflictError, match="level 2 only"):
        services.forgetting.prove(artifact_id)

    commit = services.forgetting.commit_due()
    assert commit is not None
    status = services.forgetting.status(receipt.request_id)
    assert status["state"] == "done"
    assert status["committed_epoch"] == commit.epoch
    with pytest.raises(ArtifactForgottenError, match="forgotten at level 2"):
        node.vault.get(artifact_id)
    for capability in CAPABILITIES:
        assert not _key_kept(node, artifact_id, capability), capability
    record, pending = _leaf(services, artifact_id)
    assert not pending
    assert record["state"] == "TOMBSTONE"
    assert record["forget_event_hash"] == entry_hash(logged).hex()

    proven = _verified(services, artifact_id)
    assert proven.level == 2
    assert proven.forget_event_id == event_id
    assert proven.epoch == commit.epoch
    assert proven.destruction_backend == "software"
    assert "holds no capability to decrypt" in proven.statement()
    assert check_store_agrees(node.db) is not None
    assert node.vault.get(bystander) == b"Bob's address"
    assert _key_kept(node, bystander)
    # Nothing is left to do: a second commit has nothing to execute.
    assert services.forgetting.commit_due() is None


def _row_leaf(db: Database, artifact_id: str) -> str:
    with db.transaction(write=False) as tx:
        row = tx.fetchone("SELECT leaf_record FROM artifacts WHERE artifact_id = ?", (artifact_id,))
    assert row is not None
    return str(row[0])


def test_a_level_2_epoch_leaves_the_artifacts_rows_alone_and_later_forgets_keep_the_tombstone(
    node: Node, services: NodeServices
) -> None:
    """docs/adr/0014: the committed level-2 event is the TOMBSTONE's source, not the row."""
    artifact_id = node.vault.put(b"twice forgotten", {})
    services.forgetting.commit_due()
    row_before = _row_leaf(node.db, artifact_id)
    services.forgetting.forget(artifact_id=artifact_id, level=2)
    first = services.forgetting.commit_due()
    assert first is not None
    assert _row_leaf(node.db, artifact_id) == row_before
    record, pending = _leaf(services, artifact_id)
    assert record["state"] == "TOMBSTONE"
    assert not pending
    proof = _verified(services, artifact_id)
    # A later level-0 and level-1 request change nothing in the leaf: the SMT still holds the
    # same TOMBSTONE, and the proof still verifies under the newer checkpoint.
    services.forgetting.forget(artifact_id=artifact_id, level=0)
    services.forgetting.forget(artifact_id=artifact_id, level=1)
    later = services.forgetting.commit_due()
    assert later is not None
    assert later.smt_root == first.smt_root
    assert _leaf(services, artifact_id) == (record, False)
    assert _verified(services, artifact_id).forget_event_id == proof.forget_event_id
    assert check_store_agrees(node.db) is not None


def test_forgetting_an_artifact_put_in_the_same_epoch_tombstones_it_for_good(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"short-lived", {})  # its ACTIVE leaf is still pending
    services.forgetting.forget(artifact_id=artifact_id, level=2)
    first = services.forgetting.commit_due()
    assert first is not None
    record, pending = _leaf(services, artifact_id)
    assert record["state"] == "TOMBSTONE"
    assert not pending
    # The pending ACTIVE leaf must not come back at a later epoch.
    again = services.forgetting.commit_due(force=True)
    assert again is not None
    assert again.smt_root == first.smt_root
    assert _leaf(services, artifact_id) == (record, False)
    assert _verified(services, artifact_id).level == 2


def test_one_epoch_with_two_capability_sets_rotates_each_tree_per_batch(
    node: Node, services: NodeServices
) -> None:
    """Two key-tree batches in one epoch: the second re-keys under the first's new root before
    the epoch records either destruction (docs/adr/0012)."""
    first, second, kept = (node.vault.put(b"%d" % i, {}) for i in range(3))
    services.forgetting.commit_due()
    services.forgetting.forget(artifact_id=first, level=2)
    services.forgetting.forget(artifact_id=second, level=2, capabilities=["decrypt", "recover"])
    assert services.forgetting.commit_due() is not None
    for artifact_id in (first, second):
        assert _verified(services, artifact_id).level == 2
        assert not _key_kept(node, artifact_id, "decrypt")
        assert not _key_kept(node, artifact_id, "recover")
    assert not _key_kept(node, first, "prove")
    assert _key_kept(node, second, "prove")
    assert all(_key_kept(node, kept, c) for c in CAPABILITIES)
    with node.db.transaction(write=False) as tx:
        heads = {
            r
            for row in tx.fetchall("SELECT root_ref, standby_root FROM key_tree_heads")
            for r in row
            if r is not None
        }
        states = {r[0] for r in tx.fetchall("SELECT state FROM key_tree_journal")}
    assert node.vault.custody.backend.live_root_keys() == heads
    assert states == {"destroyed"}
    assert check_store_agrees(node.db) is not None


def test_level_0_is_reversible(node: Node, services: NodeServices) -> None:
    artifact_id = node.vault.put(b"revocable", {})
    services.forgetting.forget(artifact_id=artifact_id, level=0)
    with pytest.raises(ArtifactForgottenError, match="revoked"):
        node.vault.get(artifact_id)
    assert services.forgetting.commit_due() is not None
    record, _ = _leaf(services, artifact_id)
    assert record["state"] == "ACTIVE"
    assert record["policy"]["revoked"] is True
    assert record["capabilities"] == list(CAPABILITIES)
    assert all(_key_kept(node, artifact_id, c) for c in CAPABILITIES)
    with pytest.raises(ConflictError, match="level 2 only"):
        services.forgetting.prove(artifact_id)

    services.forgetting.restore(artifact_id, authority="DPO", reason="sent in error")
    assert node.vault.get(artifact_id) == b"revocable"
    assert services.forgetting.commit_due() is not None
    record, pending = _leaf(services, artifact_id)
    assert record["policy"]["revoked"] is False
    assert not pending
    assert any(
        e["type"] == "restore" and e["artifacts"] == [artifact_id] for e in _log_entries(node.db)
    )
    with pytest.raises(ConflictError, match="cannot be restored"):
        services.forgetting.restore(artifact_id, authority="DPO")
    assert check_store_agrees(node.db) is not None


def test_level_1_is_not_reversible(node: Node, services: NodeServices) -> None:
    artifact_id = node.vault.put(b"erasable", {})
    services.forgetting.forget(artifact_id=artifact_id, level=1)
    assert services.forgetting.commit_due() is not None
    with pytest.raises(ArtifactForgottenError, match="forgotten at level 1"):
        node.vault.get(artifact_id)
    assert not any(_key_kept(node, artifact_id, c) for c in CAPABILITIES)
    record, _ = _leaf(services, artifact_id)
    assert record["state"] == "ACTIVE"  # level 1 does not tombstone the leaf
    assert record["capabilities"] == []
    with pytest.raises(ConflictError, match="cannot be restored"):
        services.forgetting.restore(artifact_id, authority="DPO")
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(artifact_id)
    with pytest.raises(ConflictError, match="level 2 only"):
        services.forgetting.prove(artifact_id)
    receipts = [e for e in _log_entries(node.db) if e.get("type") == "oblivio.destruction.v1"]
    assert receipts, "a level-1 forget logs the destruction receipt of the old root"


def test_level_2_after_level_1_binds_the_receipt_of_the_earlier_destruction(
    node: Node, services: NodeServices
) -> None:
    # The keys are already gone when the level-2 request executes, so its epoch destroys
    # nothing new; the tombstone must still bind the receipt of the destruction that erased
    # them, not claim level 2 without evidence.
    artifact_id = node.vault.put(b"first level 1, then a proof", {})
    services.forgetting.forget(artifact_id=artifact_id, level=1)
    services.forgetting.commit_due()
    with node.db.transaction(write=False) as tx:
        hashes = {r[0] for r in tx.fetchall("SELECT receipt_hash FROM destruction_receipts")}
    services.forgetting.forget(artifact_id=artifact_id, level=2)
    services.forgetting.commit_due()
    proof = services.forgetting.prove(artifact_id)
    record = proof["record"]
    assert isinstance(record, dict)
    assert record["destruction_receipt_hash"] in hashes
    assert _verified(services, artifact_id).destruction_backend == "software"


def test_proofs_exist_for_forgotten_level_2_artifacts_only(
    node: Node, services: NodeServices
) -> None:
    kept = node.vault.put(b"kept", {})
    services.forgetting.commit_due()
    with pytest.raises(ConflictError, match="level 2 only"):
        services.forgetting.prove(kept)
    with pytest.raises(ArtifactNotFoundError):
        services.forgetting.prove("ab" * 32)
    with pytest.raises(NotFoundError):
        services.forgetting.prove_request("01a204fe-a205-7362-86a2-7fd3f85a2f91")


def test_forgetting_only_the_prove_capability_keeps_reads(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"still readable", {})
    receipt = services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["prove"])
    assert receipt.capabilities == ("prove",)
    assert node.vault.get(artifact_id) == b"still readable"  # not suppressed either
    services.forgetting.commit_due()
    assert node.vault.get(artifact_id) == b"still readable"
    assert not _key_kept(node, artifact_id, "prove")
    assert _key_kept(node, artifact_id, "decrypt")
    assert _key_kept(node, artifact_id, "recover")
    proven = _verified(services, artifact_id)
    assert proven.capabilities == ("prove",)
    statement = proven.statement()
    assert "no prove capability for artifact" in statement
    assert "forgotten: prove)" in statement
    assert "decrypt" not in statement


def test_forgetting_decrypt_at_level_1_keeps_the_recover_escrow(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"escrowed", {})
    services.forgetting.forget(artifact_id=artifact_id, level=1, capabilities=["decrypt"])
    services.forgetting.commit_due()
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(artifact_id)
    assert not _key_kept(node, artifact_id, "decrypt")
    assert _key_kept(node, artifact_id, "prove")
    assert _key_kept(node, artifact_id, "recover")
    record, _ = _leaf(services, artifact_id)
    assert record["capabilities"] == ["prove", "recover"]


# -- entities and scopes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "covered"),
    [("*", SCOPES), ("team", ("team",)), (["local", "public"], ("local", "public"))],
)
def test_entity_forget_touches_only_the_covered_scopes(
    node: Node, services: NodeServices, pattern: object, covered: tuple[str, ...]
) -> None:
    alice = _put_scoped(node, "user:alice")
    bob = _put_scoped(node, "user:bob")
    loose = node.vault.put(b"no entity", {})
    receipt = services.forgetting.forget(entity_uri="user:alice", scope=pattern, level=2)
    expected = {alice[s] for s in covered}
    assert {a for _, a, _ in receipt.events} == expected
    services.forgetting.commit_due()
    for scope, artifact_id in alice.items():
        assert _readable(node, artifact_id) == (scope not in covered), scope
        assert _key_kept(node, artifact_id) == (scope not in covered), scope
    assert all(_readable(node, a) for a in bob.values())
    assert _readable(node, loose)
    bundle = services.forgetting.prove_request(receipt.request_id)
    proven = verify_document(bundle, services.checkpoints.verifier_key)
    assert {p.artifact_id for p in proven} == expected
    assert len({p.checkpoint_size for p in proven}) == 1


def test_an_entity_without_artifacts_in_the_scope_is_refused(
    node: Node, services: NodeServices
) -> None:
    _put_scoped(node, "user:alice", ("local",))
    size = services.checkpoints.log.size()
    with pytest.raises(InvalidInputError, match="has no artifact"):
        services.forgetting.forget(entity_uri="user:alice", scope="public", level=2)
    with pytest.raises(InvalidInputError, match="has no artifact"):
        services.forgetting.forget(entity_uri="user:nobody", level=2)
    assert services.checkpoints.log.size() == size
    assert _count(node.db, "forget_requests") == 0


def test_forgetting_an_unknown_artifact_logs_nothing(node: Node, services: NodeServices) -> None:
    node.vault.put(b"something", {})
    services.forgetting.commit_due()
    size = services.checkpoints.log.size()
    with pytest.raises(ArtifactNotFoundError, match="not stored on this node"):
        services.forgetting.forget(artifact_id="cd" * 32, level=2)
    with pytest.raises(InvalidInputError):
        services.forgetting.forget(artifact_id="not-an-id", level=2)
    with pytest.raises(InvalidInputError):
        services.forgetting.forget(artifact_id="cd" * 32, entity_uri="user:alice", level=2)
    assert services.checkpoints.log.size() == size
    for table in ("forget_requests", "forget_events", "artifact_states"):
        assert _count(node.db, table) == 0, table
    assert services.forgetting.commit_due() is None


# -- legal holds -----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 2])
def test_a_legal_hold_blocks_destruction_until_released(
    node: Node, services: NodeServices, level: int
) -> None:
    held = node.vault.put(b"held", {}, "user:carol", "team")
    free = node.vault.put(b"free", {}, "user:carol", "local")
    hold_id, targets = services.forgetting.place_hold(
        entity_uri="user:carol", scope="team", authority="court order 12", reason="litigation"
    )
    assert targets == [held]
    receipt = services.forgetting.forget(entity_uri="user:carol", level=level)
    services.forgetting.commit_due()
    services.forgetting.commit_due()
    # The held artifact is suppressed but keeps its keys; the other one is gone.
    assert_suppressed(node, held)
    assert _key_kept(node, held)
    assert not _key_kept(node, free)
    status = services.forgetting.status(receipt.request_id)
    assert status["state"] == "pending"
    epochs = {e["artifact_id"]: e["epoch"] for e in status["events"]}
    assert epochs[held] is None
    assert epochs[free] is not None
    if level == 2:
        with pytest.raises(ConflictError):
            services.forgetting.prove(held)

    assert services.forgetting.release_hold(hold_id, authority="court") == [held]
    with pytest.raises(ConflictError, match="was released"):
        services.forgetting.release_hold(hold_id, authority="court")
    assert services.forgetting.commit_due() is not None
    assert not _key_kept(node, held)
    with pytest.raises(ArtifactForgottenError, match=f"forgotten at level {level}"):
        node.vault.get(held)
    assert services.forgetting.status(receipt.request_id)["state"] == "done"
    if level == 2:
        assert _verified(services, held).level == 2
    actions = [(e["action"], e["id"]) for e in _log_entries(node.db) if e["type"] == "legal_hold"]
    assert actions == [("place", hold_id), ("release", hold_id)]
    with pytest.raises(NotFoundError):
        services.forgetting.release_hold("01a204fe-a205-7362-86a2-7fd3f85a2f91", authority="x")


def test_commit_due_puts_every_logged_entry_under_a_checkpoint(
    node: Node, services: NodeServices
) -> None:
    # Holds, releases and cancellations are logged outside any forget execution; the next
    # commit must still sign a checkpoint covering them (the log and the latest checkpoint
    # agree after every commit), not leave them for a heartbeat minutes later.
    artifact_id = node.vault.put(b"held", {}, "user:lena", "team")
    services.forgetting.commit_due()
    hold_id, _ = services.forgetting.place_hold(
        artifact_id=artifact_id, authority="court", reason="x"
    )
    services.forgetting.commit_due()
    assert check_store_agrees(node.db) is not None
    services.forgetting.release_hold(hold_id, authority="court")
    services.forgetting.commit_due()
    latest = check_store_agrees(node.db)
    assert latest is not None
    assert latest.size == services.checkpoints.log.size()
    record, _ = services.compliance.tombstones.issue("admin-1", "user:lena", "*", None, True)
    services.forgetting.commit_due()
    services.compliance.tombstones.revoke("admin-1", record.id, "lifted")
    services.forgetting.commit_due()
    assert check_store_agrees(node.db) is not None


# -- privacy of the evidence (DESIGN.md §13) ---------------------------------------------------


def _public_bytes(db: Database) -> bytes:
    """Everything auditors may see: log entries and nodes, SMT leaves and nodes, checkpoints."""
    queries = [
        "SELECT entry FROM log_entries",
        "SELECT hash FROM log_nodes",
        "SELECT leaf_record FROM artifacts",
        "SELECT nodes FROM smt_nodes",
        "SELECT root FROM smt_versions",
        "SELECT note FROM checkpoints",
    ]
    chunks: list[bytes] = []
    with db.transaction(write=False) as tx:
        for sql in queries:
            for (value,) in tx.fetchall(sql):
                chunks.append(value.encode() if isinstance(value, str) else bytes(value))
    return b"\n".join(chunks)


def test_no_entity_requestor_authority_or_reason_in_clear_in_the_evidence(
    node: Node, services: NodeServices
) -> None:
    entity = "user:alice.privacy-7f3a"
    requestor = "mailto:alice.privacy@example.org"
    reason = "Alice withdrew consent on 2026-11-01"
    authority = "GDPR Art. 17 (privacy-7f3a)"
    hold_authority = "court order (privacy-7f3a)"
    ids = _put_scoped(node, entity)
    receipt = services.forgetting.forget(
        entity_uri=entity,
        scope="*",
        level=2,
        requestor=requestor,
        authority=authority,
        reason=reason,
    )
    hold_id, _ = services.forgetting.place_hold(
        artifact_id=ids["local"], authority=hold_authority, reason="hold reason: " + reason
    )
    services.forgetting.release_hold(hold_id, authority=hold_authority)
    services.compliance.tombstones.issue("admin-1", entity, "team", "tombstone: " + reason)
    services.forgetting.commit_due()
    services.forgetting.commit_due()

    public = _public_bytes(node.db)
    assert len(public) > 1000
    assert ids["team"].encode() in public  # the scan does see the evidence
    # Not why anything was forgotten either, nor that a tombstone asked (ADR 0017).
    for secret in (entity, requestor, reason, "alice", authority, hold_authority, "tombstone"):
        assert secret.encode() not in public, secret
        # Nor an unsalted hash of it, which anyone could recompute from a guess.
        assert sha256(secret.encode()).hex().encode() not in public, secret
        assert bytes(sha256(secret.encode())) not in public, secret

    # The requestor's receipt opens the commitment in every event of the request.
    opening = receipt.opening
    salt = bytes.fromhex(str(opening["salt"]))
    value = opening["value"]
    assert isinstance(value, dict)
    assert value["requestor"] == requestor
    assert value["authority"] == authority
    assert value["reason"] == reason
    assert value["entity_uri"] == entity
    for _, _, log_index in receipt.events:
        event = parse_json(services.checkpoints.log.entry(log_index))
        assert event["requestor_commitment"] == receipt.requestor_commitment
        open_requestor_commitment(event["requestor_commitment"], salt, value)
        with pytest.raises(VerificationError):
            open_requestor_commitment(event["requestor_commitment"], salt, {**value, "reason": ""})
        with pytest.raises(VerificationError):
            open_requestor_commitment(event["requestor_commitment"], bytes(32), value)
    # Another request by the same requestor for the same reason commits differently (fresh
    # salt): requests are unlinkable. (The same request again is answered with this one.)
    again = services.forgetting.forget(
        entity_uri=entity, level=1, requestor=requestor, reason=reason
    )
    assert not again.existing
    assert again.requestor_commitment != receipt.requestor_commitment
    assert receipt.to_dict()["opening"] == {"salt": salt.hex(), "value": value}


# -- tombstones (issue 6 point 4) --------------------------------------------------------------


def test_a_tombstone_forgets_the_entity_in_its_scopes_at_level_2(
    node: Node, services: NodeServices
) -> None:
    frank = _put_scoped(node, "user:frank")
    other = _put_scoped(node, "user:grace", ("team",))
    record, created = services.compliance.tombstones.issue(
        "admin-1", "user:frank", ["team", "company"], "erasure request"
    )
    assert created
    for scope in ("team", "company"):
        assert_suppressed(node, frank[scope])
    services.forgetting.commit_due()
    for scope, artifact_id in frank.items():
        forgotten = scope in ("team", "company")
        assert _readable(node, artifact_id) != forgotten, scope
        assert _key_kept(node, artifact_id) != forgotten, scope
        if forgotten:
            assert _verified(services, artifact_id).level == 2
    assert _readable(node, other["team"])
    # Re-issuing the same tombstone is idempotent: no second request.
    requests = _count(node.db, "forget_requests")
    again, created = services.compliance.tombstones.issue(
        "admin-1", "user:frank", ["team", "company"], "erasure request"
    )
    assert not created
    assert again.id == record.id
    assert _count(node.db, "forget_requests") == requests


def test_a_legal_hold_tombstone_suppresses_and_its_revocation_restores(
    node: Node, services: NodeServices
) -> None:
    henry = _put_scoped(node, "user:henry", ("local", "team"))
    record, _ = services.compliance.tombstones.issue(
        "admin-1", "user:henry", "*", "litigation hold", legal_hold=True
    )
    services.forgetting.commit_due()
    services.forgetting.commit_due()
    for artifact_id in henry.values():
        assert_suppressed(node, artifact_id)
        assert _key_kept(node, artifact_id), "a legal hold keeps the keys"

    revocation = services.compliance.tombstones.revoke("admin-1", record.id, "hold lifted")
    assert revocation.erased_artifacts == ()
    services.forgetting.commit_due()
    for scope, artifact_id in henry.items():
        assert node.vault.get(artifact_id) == f"user:henry {scope}".encode()
        assert _key_kept(node, artifact_id)


def test_revoking_a_tombstone_after_erasure_reports_what_stays_erased(
    node: Node, services: NodeServices
) -> None:
    ivan = _put_scoped(node, "user:ivan", ("local", "public"))
    record, _ = services.compliance.tombstones.issue("admin-1", "user:ivan", "public", None)
    services.forgetting.commit_due()
    revocation = services.compliance.tombstones.revoke("admin-1", record.id, "issued in error")
    assert revocation.erased_artifacts == (ivan["public"],)
    with pytest.raises(ArtifactForgottenError, match="forgotten at level 2"):
        node.vault.get(ivan["public"])
    assert not _key_kept(node, ivan["public"])
    assert node.vault.get(ivan["local"]) == b"user:ivan local"
    assert _verified(services, ivan["public"]).level == 2


# -- the destruction window ------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_the_destruction_window_defers_erasure_and_allows_cancellation(node: Node) -> None:
    clock = Clock()
    window = timedelta(hours=1)
    checkpoints = CheckpointService(node.db, node.config.name, node.signing_key)
    forgetting = ForgettingService(
        node, checkpoints, ForgetSettings(destruction_window=window), clock=clock
    )
    kept, erased = node.vault.put(b"cancelled in time", {}), node.vault.put(b"erased", {})
    first = forgetting.forget(artifact_id=kept, level=2, source="ts_cancelled")
    second = forgetting.forget(artifact_id=erased, level=2, source="ts_kept")
    assert first.not_before == "2026-11-22T13:00:00.000Z"

    for minutes in (0, 30, 59):
        clock.now = datetime(2026, 11, 22, 12, minutes, tzinfo=UTC)
        forgetting.commit_due()
        assert _key_kept(node, kept)
        assert _key_kept(node, erased)
        assert forgetting.status(second.request_id)["state"] == "pending"
    for artifact_id in (kept, erased):
        assert_suppressed(node, artifact_id)

    # What a tombstone revocation does within the window: the data reads again.
    restored, gone = forgetting.cancel_from_source("ts_cancelled")
    assert (restored, gone) == ([kept], [])
    assert node.vault.get(kept) == b"cancelled in time"

    clock.now = datetime(2026, 11, 22, 13, 0, 1, tzinfo=UTC)
    assert forgetting.commit_due() is not None
    assert not _key_kept(node, erased)
    with pytest.raises(ArtifactForgottenError, match="forgotten at level 2"):
        node.vault.get(erased)
    assert node.vault.get(kept) == b"cancelled in time"
    assert _key_kept(node, kept)
    assert forgetting.status(first.request_id)["state"] == "cancelled"
    assert forgetting.status(second.request_id)["state"] == "done"
    # After the window nothing restores the data; the revocation only reports it.
    assert forgetting.cancel_from_source("ts_kept") == ([], [erased])
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(erased)
    [proven] = verify_document(forgetting.prove(erased), checkpoints.verifier_key)
    assert proven.artifact_id == erased


def test_a_configured_destruction_window_lets_a_tombstone_revocation_restore(node: Node) -> None:
    node.config = replace(node.config, forgetting={"destruction_window_seconds": 3600})
    services = open_services(node)
    assert services.forgetting.settings.destruction_window == timedelta(hours=1)
    judy = _put_scoped(node, "user:judy", ("team",))["team"]
    record, _ = services.compliance.tombstones.issue("admin-1", "user:judy", "team", None)
    services.forgetting.commit_due()
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(judy)
    assert _key_kept(node, judy)
    revocation = services.compliance.tombstones.revoke("admin-1", record.id, "withdrawn")
    assert revocation.erased_artifacts == ()
    assert node.vault.get(judy) == b"user:judy team"
    # Even once the window would have elapsed, nothing cancelled is destroyed.
    services.forgetting.commit_due(now=datetime.now(UTC) + timedelta(hours=2))
    assert node.vault.get(judy) == b"user:judy team"
    assert _key_kept(node, judy)

    kate = _put_scoped(node, "user:kate", ("team",))["team"]
    record, _ = services.compliance.tombstones.issue("admin-1", "user:kate", "team", None)
    services.forgetting.commit_due(now=datetime.now(UTC) + timedelta(hours=2))
    assert not _key_kept(node, kate)
    revocation = services.compliance.tombstones.revoke("admin-1", record.id, "too late")
    assert revocation.erased_artifacts == (kate,)
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(kate)


# -- scale -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_entity_forget_of_10000_artifacts_commits_in_one_epoch(
    node: Node, services: NodeServices
) -> None:
    started = time.perf_counter()
    entity = "user:prolific"
    ids: list[ArtifactId] = []
    for batch in range(10):
        ids += node.vault.put_many(
            [
                ArtifactInput(b"fact %d" % (batch * 1000 + i), {}, entity, "local")
                for i in range(1000)
            ]
        )
    bystander = node.vault.put(b"other", {}, "user:other", "local")
    services.forgetting.commit_due()
    epochs_before = _count(node.db, "checkpoints")
    put_done = time.perf_counter()

    receipt = services.forgetting.forget(entity_uri=entity, level=2)
    # The batch may have filled inside forget (batch_size 10,000): then this commits nothing.
    services.forgetting.commit_due()
    forget_done = time.perf_counter()
    assert _count(node.db, "checkpoints") == epochs_before + 1
    status = services.forgetting.status(receipt.request_id)
    assert status["state"] == "done"
    assert isinstance(status["events"], list)
    assert len(status["events"]) == 10_000
    assert {e["epoch"] for e in status["events"]} == {status["committed_epoch"]}
    assert services.forgetting.commit_due() is None

    bundle = services.forgetting.prove_request(receipt.request_id)
    prove_done = time.perf_counter()
    proven = verify_document(bundle, services.checkpoints.verifier_key)
    verify_done = time.perf_counter()
    assert len(proven) == 10_000
    assert {p.artifact_id for p in proven} == set(ids)
    assert len({(p.checkpoint_size, p.epoch) for p in proven}) == 1
    assert len({p["checkpoint"] for p in bundle["proofs"]}) == 1
    for artifact_id in (ids[0], ids[4999], ids[-1]):
        with pytest.raises(ArtifactForgottenError):
            node.vault.get(artifact_id)
    assert node.vault.get(bystander) == b"other"
    assert check_store_agrees(node.db) is not None
    print(  # the timing profile, shown with -s
        f"10k entity forget: put {put_done - started:.1f}s, forget+commit "
        f"{forget_done - put_done:.1f}s, prove {prove_done - forget_done:.1f}s, "
        f"verify {verify_done - prove_done:.1f}s"
    )


# -- partial forgets in sequence (issue 11 finding 5) ------------------------------------------


def test_get_after_partial_forgets_says_forgotten(node: Node, services: NodeServices) -> None:
    artifact_id = node.vault.put(b"partially forgotten", {})
    services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["recover"])
    services.forgetting.commit_due()
    assert node.vault.get(artifact_id) == b"partially forgotten"
    first = _verified(services, artifact_id)
    assert first.capabilities == ("recover",)

    services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["decrypt"])
    services.forgetting.commit_due()
    # The decrypt key is gone: reads say forgotten, not "stored data was altered".
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.get(artifact_id)
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.read_into(artifact_id, io.BytesIO())
    # The latest proof names every capability forgotten so far.
    proven = _verified(services, artifact_id)
    assert proven.capabilities == ("decrypt", "recover")
    assert "(forgotten: decrypt, recover)" in proven.statement()
    assert "holds no capability to decrypt artifact" in proven.statement()
    assert "holds no recover capability for artifact" in first.statement()
    assert proven.forget_event_id != first.forget_event_id


def test_a_later_event_states_capabilities_erased_at_level_1_but_not_revoked_ones(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"three steps", {})
    services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["recover"])
    services.forgetting.forget(artifact_id=artifact_id, level=1, capabilities=["prove"])
    services.forgetting.commit_due()
    # A request not yet executed may still be cancelled: later events do not count on it.
    services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["decrypt"])
    services.forgetting.commit_due()
    proven = _verified(services, artifact_id)
    assert proven.capabilities == ("decrypt", "prove")  # recover was only revoked
    assert _key_kept(node, artifact_id, "recover")
    assert not _key_kept(node, artifact_id, "prove")
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.get(artifact_id)


def test_a_revocation_after_a_pending_erasure_does_not_mask_it(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"erased, then revoked", {})
    services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["decrypt"])
    services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["decrypt"])
    services.forgetting.commit_due()
    assert not _key_kept(node, artifact_id, "decrypt")
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.get(artifact_id)
    # Nothing to restore: the revocation does not stand for the erasure.
    with pytest.raises(ConflictError, match="cannot be restored"):
        services.forgetting.restore(artifact_id, authority="test")


def test_restoring_a_revocation_keeps_what_an_erasure_of_other_capabilities_did(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"revoked, escrow erased", {})
    services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["decrypt"])
    services.forgetting.forget(artifact_id=artifact_id, level=2, capabilities=["recover"])
    services.forgetting.commit_due()
    with pytest.raises(ArtifactForgottenError, match="is revoked"):
        node.vault.get(artifact_id)
    services.forgetting.restore(artifact_id, authority="test")
    assert node.vault.get(artifact_id) == b"revoked, escrow erased"
    services.forgetting.forget(artifact_id=artifact_id, level=1, capabilities=["decrypt"])
    services.forgetting.commit_due()
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 1"):
        node.vault.get(artifact_id)


def test_cancelling_one_pending_erasure_keeps_another_suppressing_reads(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"asked twice", {})
    services.forgetting.forget(
        artifact_id=artifact_id, level=2, capabilities=["decrypt"], source="tomb_first"
    )
    services.forgetting.forget(
        artifact_id=artifact_id, level=2, capabilities=["decrypt"], source="tomb_second"
    )
    restored, erased = services.forgetting.cancel_from_source("tomb_second")
    assert (restored, erased) == ([artifact_id], [])
    assert_suppressed(node, artifact_id)
    services.forgetting.commit_due()
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.get(artifact_id)


def test_migration_17_says_forgotten_where_earlier_builds_left_another_state(
    node: Node, services: NodeServices
) -> None:
    first = node.vault.put(b"recover, then decrypt", {})
    second = node.vault.put(b"state row lost", {})
    kept = node.vault.put(b"only escrow erased", {})
    for aid in (first, kept):
        services.forgetting.forget(artifact_id=aid, level=2, capabilities=["recover"])
    services.forgetting.commit_due()
    services.forgetting.forget(artifact_id=first, level=2, capabilities=["decrypt"])
    services.forgetting.forget(artifact_id=second, level=1, capabilities=["decrypt", "prove"])
    services.forgetting.commit_due()
    with node.db.transaction() as tx:
        # What earlier builds left: the first request's row, and no row at all.
        row = tx.fetchone("SELECT request_id FROM artifact_states WHERE artifact_id = ?", (kept,))
        assert row is not None
        tx.execute(
            "UPDATE artifact_states SET capabilities = '[\"recover\"]', request_id = ? "
            "WHERE artifact_id = ?",
            (row[0], first),
        )
        tx.execute("DELETE FROM artifact_states WHERE artifact_id = ?", (second,))
        tx.execute("DELETE FROM schema_migrations WHERE version = 17")
    for aid in (first, second):
        with pytest.raises(IntegrityError):
            node.vault.get(aid)
    assert [m.version for m in migrate(node.db)] == [17]
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 2"):
        node.vault.get(first)
    with pytest.raises(ArtifactForgottenError, match="was forgotten at level 1"):
        node.vault.get(second)
    assert node.vault.get(kept) == b"only escrow erased"


# -- idempotent forgets (issue 11 finding 5) ---------------------------------------------------


def _epochs(db: Database) -> int:
    return _count(db, "checkpoints")


def test_parallel_identical_forgets_make_one_request(node: Node, services: NodeServices) -> None:
    artifact_id = node.vault.put(b"forget me once", {})
    services.forgetting.commit_due()
    counts = (_count(node.db, "forget_requests"), _count(node.db, "forget_events"))
    epochs, log_size = _epochs(node.db), services.checkpoints.log.size()

    def forget(_: int) -> Any:
        receipt = services.forgetting.forget(
            artifact_id=artifact_id, level=2, capabilities=["decrypt"], authority="GDPR-17"
        )
        services.forgetting.commit_due()
        return receipt

    with ThreadPoolExecutor(max_workers=50) as pool:
        receipts = list(pool.map(forget, range(50)))
    assert len({r.request_id for r in receipts}) == 1
    assert sorted(r.existing for r in receipts) == [False] + [True] * 49
    assert all(r.opening is None for r in receipts if r.existing)
    assert _count(node.db, "forget_requests") == counts[0] + 1
    assert _count(node.db, "forget_events") == counts[1] + 1
    assert _epochs(node.db) == epochs + 1
    # One forget event and the epoch's receipt and map_root: nothing else was logged.
    assert services.checkpoints.log.size() == log_size + 3
    with pytest.raises(ArtifactForgottenError):
        node.vault.get(artifact_id)


def test_a_forget_is_answered_with_an_existing_request_only_if_it_covers_it(
    node: Node, services: NodeServices
) -> None:
    artifact_id, other = node.vault.put_many([ArtifactInput(b"a", {}), ArtifactInput(b"b", {})])
    first = services.forgetting.forget(artifact_id=[artifact_id, other], level=2)
    services.forgetting.commit_due()
    # Already forgotten at that level with these capabilities (or fewer; by a request that
    # named more artifacts): the existing request, its state as it is now.
    for caps, ids in (
        (CAPABILITIES, [artifact_id, other]),
        (("decrypt",), [artifact_id]),
        (("prove", "recover"), [other]),
    ):
        again = services.forgetting.forget(artifact_id=ids, level=2, capabilities=caps)
        assert again.existing
        assert again.request_id == first.request_id
        assert again.state == "done"
        assert again.events == first.events
        assert again.to_dict()["opening"] is None
    # Another level, or a tombstone's request (its own, to cancel on revocation): new ones.
    assert not services.forgetting.forget(artifact_id=artifact_id, level=1).existing
    sourced = services.forgetting.forget(artifact_id=artifact_id, level=2, source="tomb_x")
    assert not sourced.existing
    again = services.forgetting.forget(artifact_id=artifact_id, level=2, source="tomb_x")
    assert again.request_id == sourced.request_id


def test_a_direct_forget_is_answered_by_a_tombstones_request_once_it_is_executed(
    node: Node, services: NodeServices
) -> None:
    executed, pending = node.vault.put_many([ArtifactInput(b"x", {}), ArtifactInput(b"y", {})])
    by_tombstone = services.forgetting.forget(artifact_id=executed, level=2, source="tomb_x")
    services.forgetting.commit_due()
    services.forgetting.forget(artifact_id=pending, level=2, source="tomb_y")
    # Executed: no revocation can undo it, so it answers a direct forget.
    answer = services.forgetting.forget(artifact_id=executed, level=2)
    assert answer.existing
    assert answer.request_id == by_tombstone.request_id
    # Still pending, the tombstone's revocation would cancel it: a direct forget is its own.
    own = services.forgetting.forget(artifact_id=pending, level=2)
    assert not own.existing
    restored, erased = services.forgetting.cancel_from_source("tomb_y")
    assert (restored, erased) == ([pending], [])
    assert_suppressed(node, pending)
    # A tombstone's forget is never answered by another source's request (its revocation
    # must find what it erased).
    assert not services.forgetting.forget(artifact_id=executed, level=2, source="tomb_z").existing


def test_a_revocation_is_answered_again_only_while_it_stands(
    node: Node, services: NodeServices
) -> None:
    artifact_id = node.vault.put(b"revoke me", {})
    first = services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["decrypt"])
    again = services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["decrypt"])
    assert again.existing
    assert again.request_id == first.request_id
    # A wider revocation is a new request.
    wider = services.forgetting.forget(artifact_id=artifact_id, level=0)
    assert not wider.existing
    services.forgetting.commit_due()
    services.forgetting.restore(artifact_id, authority="test")
    assert node.vault.get(artifact_id) == b"revoke me"
    after = services.forgetting.forget(artifact_id=artifact_id, level=0, capabilities=["decrypt"])
    assert not after.existing
    with pytest.raises(ArtifactForgottenError, match="is revoked"):
        node.vault.get(artifact_id)
