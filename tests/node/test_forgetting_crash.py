"""Crash safety of forgetting (DESIGN.md §8; node/forgetting.py), on SQLite and PostgreSQL.

A forget request is acknowledged once its events are in the log; execution waits for the next
epoch commit. A child process opens the node and forgets an entity's artifacts; the parent
kills it with SIGKILL, either right after it printed the acknowledgement (before any commit:
the default batch size is far from full) or at seeded random moments while it forgets and
commits. After a restart (``open_node`` finishes interrupted key-tree work) and one
``commit_due``, every acknowledged forget has completed: the artifacts are unreadable, their
keys are gone, their proofs verify with the destruction receipt bound, and the store's latest
SMT root, log and checkpoint agree. A request the kill cut short left nothing behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from oblivio.core.errors import ArtifactForgottenError, IntegrityError, StorageError
from oblivio.core.identifiers import CAPABILITIES, ArtifactId
from oblivio.core.pof import verify_document
from oblivio.node.checkpoints import check_store_agrees
from oblivio.node.node import Node, init_node, open_node
from oblivio.node.services import open_services
from oblivio.node.vault import ArtifactInput

SRC = str(Path(__file__).resolve().parents[2] / "src")

# The child: open the node, say READY, forget the entity, say ACK with the request id, then
# (mode "commit") commit the epoch and say COMMITTED; then wait to be killed.
CHILD = """
import sys, time
from pathlib import Path
from oblivio.node.node import open_node
from oblivio.node.services import open_services

home, entity, level, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
node = open_node(home)
services = open_services(node)
print("READY", flush=True)
receipt = services.forgetting.forget(entity_uri=entity, level=level, reason="crash test")
print("ACK", receipt.request_id, flush=True)
if mode == "commit":
    commit = services.forgetting.commit_due()
    print("COMMITTED", commit.epoch if commit else 0, flush=True)
time.sleep(600)
"""


@dataclass(frozen=True)
class Run:
    """What a killed child printed."""

    lines: list[str]

    @property
    def request_id(self) -> str | None:
        acks = [line.split()[1] for line in self.lines if line.startswith("ACK ")]
        return acks[0] if acks else None

    @property
    def committed(self) -> bool:
        return any(line.startswith("COMMITTED") for line in self.lines)


def _child(home: Path, entity: str, level: int, mode: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), entity, str(level), mode],
        stdout=subprocess.PIPE,
        env=env,
    )


def _read_line(child: subprocess.Popen[bytes]) -> str:
    assert child.stdout is not None
    line = child.stdout.readline().decode().strip()
    assert line, f"the child exited early with status {child.poll()}"
    return line


def _kill(child: subprocess.Popen[bytes], lines: list[str]) -> Run:
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return Run(lines + out.decode().split("\n"))


def _put_entity(home: Path, entity: str, count: int) -> list[ArtifactId]:
    with open_node(home) as node:
        ids = node.vault.put_many(
            [ArtifactInput(b"%s fact %d" % (entity.encode(), i), {}, entity) for i in range(count)]
        )
        open_services(node).forgetting.commit_due()
    return ids


def _requests_for(home: Path, ids: list[ArtifactId]) -> set[str]:
    with open_node(home) as node, node.db.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT DISTINCT request_id FROM forget_events WHERE artifact_id = ?", (ids[0],)
        )
    return {r[0] for r in rows}


def _check_recovered(home: Path, ids: list[ArtifactId], request_id: str | None, level: int) -> None:
    """Restart, commit what is due, and check the request completed (or never existed)."""
    with open_node(home) as node:
        services = open_services(node)
        if request_id is not None:
            # Acknowledged: reads stopped before anything executed, and stay stopped.
            with pytest.raises(ArtifactForgottenError):
                node.vault.get(ids[0])
        services.forgetting.commit_due()
        assert services.forgetting.commit_due() is None
        check_store_agrees(node.db)
        if request_id is None:
            for artifact_id in ids:
                assert node.vault.get(artifact_id).startswith(b"user:")
            return
        status = services.forgetting.status(request_id)
        assert status["state"] == "done", status["state"]
        assert isinstance(status["events"], list)
        assert {e["artifact_id"] for e in status["events"]} == set(ids)
        for artifact_id in ids:
            with pytest.raises(ArtifactForgottenError, match=f"forgotten at level {level}"):
                node.vault.get(artifact_id)
            with pytest.raises(IntegrityError):
                node.vault.custody.unwrap_capability_key(artifact_id, "decrypt")
        if level == 2:
            bundle = services.forgetting.prove_request(request_id)
            proven = verify_document(bundle, services.checkpoints.verifier_key)
            assert {p.artifact_id for p in proven} == set(ids)
            proofs = bundle["proofs"]
            assert isinstance(proofs, list)
            for proof in proofs:
                assert isinstance(proof, dict)
                # The tombstone binds the receipt of the destruction that erased the key.
                assert proof["destruction_receipt"] is not None, "the receipt was not bound"


@pytest.fixture
def home(tmp_path: Path, store_uri: str) -> Path:
    home = tmp_path / "home"
    init_node(home, name="crash.test", store_uri=store_uri).close()
    return home


@pytest.mark.parametrize("level", [1, 2])
def test_a_forget_killed_after_its_ack_completes_after_restart(home: Path, level: int) -> None:
    for run in range(3):
        entity = f"user:acked-{level}-{run}"
        ids = _put_entity(home, entity, 5)
        child = _child(home, entity, level, "ack")
        lines = [_read_line(child)]
        assert lines == ["READY"]
        lines.append(_read_line(child))
        assert lines[-1].startswith("ACK ")
        killed = _kill(child, lines)
        assert killed.request_id is not None
        assert _requests_for(home, ids) == {killed.request_id}
        _check_recovered(home, ids, killed.request_id, level)


@pytest.mark.slow
def test_forgets_killed_at_random_moments_leave_a_consistent_store(
    home: Path, store_uri: str
) -> None:
    rng = random.Random(2026)  # noqa: S311 - reproducible kill times
    count = 60
    # A first run that is not killed measures how long forgetting and committing take.
    ids = _put_entity(home, "user:calibration", count)
    child = _child(home, "user:calibration", 2, "commit")
    lines = [_read_line(child)]
    started = time.monotonic()
    lines.append(_read_line(child))
    acked = time.monotonic()
    lines.append(_read_line(child))
    assert lines[-1].startswith("COMMITTED"), lines
    forget_span, commit_span = acked - started, time.monotonic() - acked
    _check_recovered(home, ids, _kill(child, lines).request_id, 2)

    # Even runs are killed while the request is being recorded, odd runs while its epoch
    # commits (after the acknowledgement was read).
    kill_points = 12 if store_uri.startswith("sqlite") else 8
    outcomes = {"nothing": 0, "acked, not committed": 0, "committed": 0}
    for point in range(kill_points):
        entity = f"user:random-{point}"
        ids = _put_entity(home, entity, count)
        child = _child(home, entity, 2, "commit")
        lines = [_read_line(child)]
        if point % 2:
            lines.append(_read_line(child))
            time.sleep(rng.uniform(0.0, commit_span * 1.2))
        else:
            time.sleep(rng.uniform(0.0, forget_span * 1.2))
        killed = _kill(child, lines)
        requests = _requests_for(home, ids)
        if killed.request_id is not None:
            assert requests == {killed.request_id}
        # A forget cut short before its acknowledgement is all or nothing.
        assert len(requests) <= 1
        request_id = next(iter(requests), None)
        _check_recovered(home, ids, request_id, 2)
        if killed.committed:
            outcomes["committed"] += 1
        elif request_id is not None:
            outcomes["acked, not committed"] += 1
        else:
            outcomes["nothing"] += 1
    print(
        f"kill outcomes over {kill_points} runs (forget {forget_span:.3f}s, commit "
        f"{commit_span:.3f}s): {outcomes}"
    )
    # Some kill must have fallen between the acknowledgement and the epoch commit.
    assert outcomes["acked, not committed"] >= 1, outcomes


def test_a_crash_between_key_destruction_and_the_epoch_commit_keeps_the_receipt_bound(
    home: Path,
) -> None:
    # commit_due destroys the keys (the key tree commits its own batch and destroys the old
    # root) before the epoch commits. Reproduce a crash exactly there: forget, run the key
    # destruction of the epoch, and stop. After a restart the epoch must still bind the
    # receipt of that destruction in the tombstone, as it does without a crash.
    [artifact_id] = _put_entity(home, "user:between", 1)
    with open_node(home) as node:
        receipt = open_services(node).forgetting.forget(artifact_id=artifact_id, level=2)
        destroyed = node.vault.custody.forget([artifact_id], CAPABILITIES)
        assert destroyed, "the key destruction issued no receipt"
    with open_node(home) as node:
        services = open_services(node)
        assert services.forgetting.commit_due() is not None
        assert services.forgetting.status(receipt.request_id)["state"] == "done"
        proof = services.forgetting.prove(artifact_id)
        verify_document(proof, services.checkpoints.verifier_key)
        record = proof["record"]
        assert isinstance(record, dict)
        assert proof["destruction_receipt"] is not None, "the tombstone binds no receipt"
        assert record["destruction_receipt_hash"] in {r.digest().hex() for r in destroyed}


def test_a_recovery_commit_mixing_old_and_new_forgets_binds_each_its_own_receipt(
    home: Path,
) -> None:
    """Regression: when an epoch executed forgets whose keys an interrupted earlier batch had
    already destroyed together with fresh ones, every tombstone bound the new batch's receipt,
    though that batch never held the earlier artifacts' keys."""
    earlier, fresh = _put_entity(home, "user:mixed", 2)
    with open_node(home) as node:
        forgetting = open_services(node).forgetting
        first = forgetting.forget(artifact_id=earlier, level=2)
        second = forgetting.forget(artifact_id=fresh, level=2)
        # The crash: the earlier artifact's keys were destroyed, no epoch committed.
        destroyed_first = node.vault.custody.forget([earlier], CAPABILITIES)
        assert destroyed_first
    with open_node(home) as node:
        services = open_services(node)
        commit = services.forgetting.commit_due()
        assert commit is not None
        for request in (first, second):
            assert services.forgetting.status(request.request_id)["state"] == "done"
        bound = {}
        for artifact_id in (earlier, fresh):
            proof = services.forgetting.prove(artifact_id)
            verify_document(proof, services.checkpoints.verifier_key)
            record = proof["record"]
            assert isinstance(record, dict)
            bound[artifact_id] = record["destruction_receipt_hash"]
    assert bound[earlier] in {r.digest().hex() for r in destroyed_first}
    assert bound[fresh] is not None
    assert bound[fresh] not in {r.digest().hex() for r in destroyed_first}


def test_a_crash_after_the_roots_are_destroyed_and_before_the_epoch_records_them(
    home: Path,
) -> None:
    # An epoch destroys the old roots and records the destructions in its own transaction
    # (docs/adr/0012). Crash between the two: the roots are gone, nothing says so yet.
    [artifact_id] = _put_entity(home, "user:unrecorded", 1)
    with open_node(home) as node:
        receipt = open_services(node).forgetting.forget(artifact_id=artifact_id, level=2)
        custody = node.vault.custody
        destroyed = custody.destroy_roots(custody.begin_forget([artifact_id], CAPABILITIES))
        assert {d.entry.tree for d in destroyed} == {"wrap", "escrow"}
        # Unrecorded: the tree no longer holds their leaf keys, so a second batch finds
        # nothing to forget.
        assert custody.begin_forget([artifact_id], CAPABILITIES) == []
    with open_node(home) as node:  # recovery records the destructions, with fresh receipts
        for capability in CAPABILITIES:
            with pytest.raises(IntegrityError):
                node.vault.custody.unwrap_capability_key(artifact_id, capability)
        services = open_services(node)
        assert services.forgetting.commit_due() is not None
        assert services.forgetting.status(receipt.request_id)["state"] == "done"
        proof = services.forgetting.prove(artifact_id)
        verify_document(proof, services.checkpoints.verifier_key)
        bound = proof["destruction_receipt"]
        assert isinstance(bound, dict)
        assert bound["key_ref"]["tree"] == "wrap"  # type: ignore[index]
        # The receipt of the lost epoch was never stored; the recorded one is bound instead.
        assert bound not in [d.receipt.to_dict() for d in destroyed]
        assert node.vault.custody.backend.live_root_keys() == _head_roots(node)


def test_an_epoch_that_fails_after_destroying_the_roots_is_finished_by_the_next(
    home: Path,
) -> None:
    [artifact_id] = _put_entity(home, "user:failing-epoch", 1)
    with open_node(home) as node:
        services = open_services(node)
        receipt = services.forgetting.forget(artifact_id=artifact_id, level=2)
        commit_epoch = services.checkpoints.commit_epoch

        def failing(*args: object, **kwargs: object) -> object:
            raise StorageError("store: commit failed: disk I/O error")

        services.checkpoints.commit_epoch = failing  # type: ignore[method-assign, assignment]
        with pytest.raises(StorageError):
            services.forgetting.commit_due()
        services.checkpoints.commit_epoch = commit_epoch  # type: ignore[method-assign]
        assert services.forgetting.status(receipt.request_id)["state"] == "pending"
        assert services.forgetting.commit_due() is not None
        assert services.forgetting.status(receipt.request_id)["state"] == "done"
        for capability in CAPABILITIES:
            with pytest.raises(IntegrityError):
                node.vault.custody.unwrap_capability_key(artifact_id, capability)
        proof = services.forgetting.prove(artifact_id)
        verify_document(proof, services.checkpoints.verifier_key)
        assert proof["destruction_receipt"] is not None


def _head_roots(node: Node) -> set[str]:
    with node.db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT root_ref, standby_root FROM key_tree_heads")
    return {ref for row in rows for ref in row if ref is not None}
