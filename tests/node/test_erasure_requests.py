"""Erasure requests as a node service (node/erasure_requests.py), on SQLite and PostgreSQL:
processing from identity check to proofs, legal holds pausing, a failed step retried from
where it failed, due dates and extensions, bad input refused with the state unchanged, and
an audit log that never holds the entity URI in clear (DESIGN.md §13)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from oblivio.core.erasure import ExtensionRefusedError, InvalidTransitionError
from oblivio.core.errors import (
    InvalidEntityUriError,
    InvalidInputError,
    InvalidScopeError,
    NotFoundError,
)
from oblivio.core.forgetting import open_requestor_commitment
from oblivio.core.pof import verify_document
from oblivio.node.erasure_requests import (
    ErasureRequestNotFoundError,
    ErasureRequestService,
)
from oblivio.node.node import Node
from oblivio.node.services import NodeServices, open_services
from tests.keys.key_file_outage import key_file_outage
from tests.node.helpers import Clock

ENTITY = "user:alice"
DAY = timedelta(days=1)


@pytest.fixture
def services(node: Node) -> NodeServices:
    return open_services(node)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def requests(services: NodeServices, clock: Clock) -> ErasureRequestService:
    return ErasureRequestService(services, clock=clock)


def _put_entity(node: Node, count: int = 2, entity: str = ENTITY) -> list[str]:
    return [node.vault.put(f"{entity} {i}".encode(), {}, entity, "team") for i in range(count)]


def _snapshot(services: NodeServices, request: object) -> tuple[object, ...]:
    """Everything a refused change must leave as it was."""
    with services.node.db.transaction(write=False) as tx:
        audit = tx.fetchone("SELECT COUNT(*) FROM audit_log")
        tombstones = tx.fetchone("SELECT COUNT(*) FROM tombstones")
    return (request, audit, tombstones)


def test_a_verified_request_is_processed_to_complete_with_a_bundle_that_verifies(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    forgotten = _put_entity(node, 3)
    kept = node.vault.put(b"bob", {}, "user:bob", "team")
    created = requests.create(ENTITY, "*", "gdpr", "Alice A. <alice@example.org>", actor="op")
    assert created.status == "received"
    assert not created.to_dict(requests._clock())["clock_running"]
    # Nothing happens before the identity is verified, however often it is advanced.
    assert requests.advance(created.id).status == "received"
    assert requests.advance_open() == 0

    requests.verify_identity(created.id, actor="op")
    done = requests.advance(created.id)

    assert done.status == "complete"
    assert done.completed_at is not None
    assert [t.to_status for t in done.transitions] == [
        "received",
        "identity_verified",
        "in_processing",
        "complete",
    ]
    described = requests.describe(created.id)
    links = described["links"]
    assert isinstance(links, dict)
    assert links["tombstone"]["id"] == done.tombstone_id
    forgets = links["forget_requests"]
    assert isinstance(forgets, list)
    events = [e for f in forgets for e in f["events"]]
    assert sorted(e["artifact_id"] for e in events) == sorted(forgotten)
    assert all(f["state"] == "done" and f["level"] == 2 for f in forgets)
    assert links["checkpoint"]["epoch"] == done.checkpoint_epoch
    proven = verify_document(requests.bundle(created.id), services.checkpoints.verifier_key)
    assert sorted(p.artifact_id for p in proven) == sorted(forgotten)
    assert node.vault.get(kept) == b"bob"
    # Advancing a complete request changes nothing.
    assert requests.advance(created.id) == requests.get(created.id)


def test_the_audit_log_has_every_transition_and_only_a_commitment_to_the_entity(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    _put_entity(node)
    request = requests.create(ENTITY, ["team", "local"], "ccpa", "Alice", actor="op")
    requests.verify_identity(request.id, actor="op")
    requests.advance(request.id)
    events = [e for e in services.compliance.audit.read(0, 1000) if e.event.startswith("erasure_")]
    assert [e.event for e in events] == [
        "erasure_request_received",
        "erasure_request_identity_verified",
        "erasure_request_in_processing",
        "erasure_request_complete",
    ]
    assert all(e.subject == request.id for e in events)
    text = json.dumps([e.to_dict() for e in events])
    assert ENTITY not in text
    assert "Alice" not in text
    commitment = events[0].details["entity_commitment"]
    with node.db.transaction(write=False) as tx:
        row = tx.fetchone("SELECT opening FROM erasure_requests WHERE id = ?", (request.id,))
    assert row is not None
    opening = json.loads(row[0])
    assert opening["value"] == {
        "entity_uri": ENTITY,
        "scope": ["team", "local"],
        "requestor": "Alice",
    }
    open_requestor_commitment(str(commitment), bytes.fromhex(opening["salt"]), opening["value"])


def test_an_entity_with_nothing_held_completes_without_a_bundle(
    requests: ErasureRequestService,
) -> None:
    request = requests.create("user:nobody", "*", "gdpr")
    requests.verify_identity(request.id)
    done = requests.advance(request.id)
    assert done.status == "complete"
    assert not done.has_bundle
    with pytest.raises(NotFoundError, match="no proof bundle"):
        requests.bundle(request.id)


def test_a_legal_hold_pauses_the_request_and_its_release_resumes_it(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    ids = _put_entity(node)
    hold_id, held = services.place_hold(entity_uri=ENTITY, authority="court", reason="case 7")
    assert sorted(held) == sorted(ids)
    request = requests.create(ENTITY, "*", "gdpr")
    requests.verify_identity(request.id)

    paused = requests.advance(request.id)
    assert paused.status == "paused"
    assert paused.step == "forget"
    assert paused.pause_reason is not None
    assert hold_id in paused.pause_reason
    # Still held: advancing again changes nothing, and no second transition is recorded.
    assert requests.advance(request.id) == requests.get(request.id)

    services.release_hold(hold_id, authority="court")
    done = requests.advance(request.id)
    assert done.status == "complete"
    assert [t.to_status for t in done.transitions][-3:] == ["paused", "in_processing", "complete"]
    assert done.pause_reason is None
    assert len(requests.bundle(request.id)["proofs"]) == 2


def test_a_legal_hold_tombstone_pauses_at_the_tombstone_step(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    _put_entity(node)
    hold, _ = services.compliance.tombstones.issue("admin-1", ENTITY, "*", "litigation", True)
    request = requests.create(ENTITY, "*", "gdpr")
    requests.verify_identity(request.id)
    paused = requests.advance(request.id)
    assert (paused.status, paused.step, paused.tombstone_id) == ("paused", "tombstone", None)
    assert paused.pause_reason is not None
    assert hold.id in paused.pause_reason

    services.compliance.tombstones.revoke("admin-1", hold.id, "litigation over")
    done = requests.advance(request.id)
    assert done.status == "complete"
    assert done.tombstone_id not in (None, hold.id)


def test_a_failed_step_goes_to_error_and_is_retried_from_that_step(
    node: Node, services: NodeServices, requests: ErasureRequestService, clock: Clock
) -> None:
    ids = _put_entity(node)
    # A first forget leaves a standby root (as in the epoch-loop tests).
    services.forgetting.forget(artifact_id=node.vault.put(b"warm-up", {}), level=2)
    services.forgetting.commit_due()
    request = requests.create(ENTITY, "*", "gdpr")
    requests.verify_identity(request.id)
    with key_file_outage(node.home / "keys" / "software-root-keys"):
        failed = requests.advance(request.id)
        assert failed.status == "error"
        assert failed.step == "forget"
        assert failed.tombstone_id is not None
        assert failed.attempts == 1
        assert failed.last_error is not None
        assert "KeyBackendError" in failed.last_error
        # Not due yet: the worker's round leaves it alone.
        assert requests.advance(request.id) == requests.get(request.id)
    audit = [
        e for e in services.compliance.audit.read(0, 1000) if e.event == "erasure_request_error"
    ]
    assert audit[-1].details == {
        "from": "in_processing",
        "to": "error",
        "step": "forget",
        "error": "KeyBackendError (key_backend_error)",
    }

    clock.now += timedelta(minutes=1)  # the retry is due
    done = requests.advance(request.id)
    assert done.status == "complete"
    assert done.tombstone_id == failed.tombstone_id
    steps = [(t.to_status, t.step) for t in done.transitions]
    assert steps[-3:] == [("error", "forget"), ("in_processing", "forget"), ("complete", "proofs")]
    with node.db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM tombstones") == (1,)
    proven = verify_document(requests.bundle(request.id), services.checkpoints.verifier_key)
    assert sorted(p.artifact_id for p in proven) == sorted(ids)


def test_due_dates_overdue_flags_and_extensions(
    services: NodeServices, requests: ErasureRequestService, clock: Clock
) -> None:
    request = requests.create(ENTITY, "*", "gdpr")
    clock.now += 5 * DAY  # waiting on the requester: the clock does not run
    verified = requests.verify_identity(request.id)
    due = verified.deadline(clock.now)
    assert due.clock_running
    assert verified.verified_at is not None
    clock.now += 40 * DAY
    assert verified.deadline(clock.now).overdue(verified.status, clock.now)
    assert requests.get(request.id).to_dict(clock.now)["overdue"] is True

    extended = requests.extend(request.id, 20, "a complex request <b>", actor="op")
    assert extended.extensions[0].reason == "a complex request <b>"
    assert extended.deadline(clock.now).due_at == due.due_at + 20 * DAY
    assert not extended.to_dict(clock.now)["overdue"]
    room = (due.latest_due_at - due.due_at).days - 20
    before = _snapshot(services, requests.get(request.id))
    with pytest.raises(ExtensionRefusedError, match=f"at most {room} more days"):
        requests.extend(request.id, room + 1, "more")
    assert _snapshot(services, requests.get(request.id)) == before
    requests.extend(request.id, room, "the rest")
    with pytest.raises(ExtensionRefusedError, match="at most 0 more days"):
        requests.extend(request.id, 1, "more")


def test_ccpa_extension_past_45_days_is_refused(
    services: NodeServices, requests: ErasureRequestService
) -> None:
    request = requests.create(ENTITY, "*", "ccpa")
    requests.extend(request.id, 30, "r")
    before = _snapshot(services, requests.get(request.id))
    with pytest.raises(ExtensionRefusedError):
        requests.extend(request.id, 16, "r")
    assert _snapshot(services, requests.get(request.id)) == before


def test_invalid_transitions_are_refused_and_change_nothing(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    _put_entity(node)
    request = requests.create(ENTITY, "*", "gdpr")
    before = _snapshot(services, requests.get(request.id))
    with pytest.raises(InvalidTransitionError, match="cannot go from received to in_processing"):
        requests._move(request, "in_processing")
    assert _snapshot(services, requests.get(request.id)) == before

    requests.verify_identity(request.id)
    requests.advance(request.id)
    complete = requests.get(request.id)
    assert complete.status == "complete"
    before = _snapshot(services, complete)
    for action in (requests.verify_identity, requests.cancel):
        with pytest.raises(InvalidTransitionError, match="from complete"):
            action(request.id)
    with pytest.raises(InvalidTransitionError, match="cannot go from complete to in_processing"):
        requests._move(complete, "in_processing")
    with pytest.raises(ExtensionRefusedError, match="the request is complete"):
        requests.extend(request.id, 3, "late")
    assert _snapshot(services, requests.get(request.id)) == before


def test_cancel_before_processing_and_nothing_after(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    ids = _put_entity(node)
    request = requests.create(ENTITY, "*", "gdpr")
    canceled = requests.cancel(request.id, actor="op")
    assert canceled.status == "canceled"
    with pytest.raises(InvalidTransitionError):
        requests.verify_identity(request.id)
    assert requests.advance(request.id).status == "canceled"
    assert node.vault.get(ids[0]) == f"{ENTITY} 0".encode()


def test_unknown_ids_and_bad_input_are_refused(
    services: NodeServices, requests: ErasureRequestService
) -> None:
    for action in (
        requests.get,
        requests.verify_identity,
        requests.cancel,
        requests.advance,
        requests.bundle,
        requests.describe,
    ):
        with pytest.raises(ErasureRequestNotFoundError, match="no erasure request nope"):
            action("nope")
    with pytest.raises(ErasureRequestNotFoundError):
        requests.extend("x" * 5000, 3, "r")
    before = _snapshot(services, requests.every())
    with pytest.raises(InvalidEntityUriError):
        requests.create("not a uri", "*", "gdpr")
    with pytest.raises(InvalidScopeError):
        requests.create(ENTITY, "galaxy", "gdpr")
    with pytest.raises(InvalidInputError, match="expected gdpr or ccpa"):
        requests.create(ENTITY, "*", "hipaa")
    with pytest.raises(InvalidInputError, match="requestor"):
        requests.create(ENTITY, "*", "gdpr", "r" * 601)
    with pytest.raises(InvalidInputError, match="status"):
        requests.every("done")
    assert _snapshot(services, requests.every()) == before


def test_the_worker_round_processes_every_verified_request(
    node: Node, requests: ErasureRequestService
) -> None:
    _put_entity(node, 1, "user:carol")
    _put_entity(node, 1, "user:dave")
    first = requests.create("user:carol", "*", "gdpr")
    second = requests.create("user:dave", "team", "ccpa")
    waiting = requests.create("user:erin", "*", "gdpr")
    requests.verify_identity(first.id)
    requests.verify_identity(second.id)
    assert requests.advance_open() == 2
    assert [r.status for r in requests.every()] == ["complete", "complete", "received"]
    assert [r.id for r in requests.every("received")] == [waiting.id]


def test_a_revoked_tombstone_sends_the_request_to_error_and_cancel_ends_it(
    node: Node, services: NodeServices, requests: ErasureRequestService
) -> None:
    _put_entity(node)
    hold_id, _ = services.place_hold(entity_uri=ENTITY, authority="court", reason="")
    request = requests.create(ENTITY, "*", "gdpr")
    requests.verify_identity(request.id)
    paused = requests.advance(request.id)
    assert paused.status == "paused"
    assert paused.tombstone_id is not None
    services.compliance.tombstones.revoke("admin-1", paused.tombstone_id, "issued by mistake")
    failed = requests.advance(request.id)
    assert (failed.status, failed.step) == ("error", "forget")
    assert failed.last_error is not None
    assert "was revoked" in failed.last_error
    assert requests.cancel(request.id).status == "canceled"
    services.release_hold(hold_id, authority="court")
