"""The witness role and the cosignature collector on both stores (DESIGN.md §17): a log's
checkpoints cosigned through the real add-checkpoint route, bad input refused with the C2SP
status codes and no state change, and a fork kept as equivocation evidence and audited."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oblivio.core.cosignature import verify_cosignatures
from oblivio.core.note import Checkpoint, NoteSigner, sign_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.core.witness import (
    SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    WitnessConflictError,
    verify_equivocation,
)
from oblivio.interfaces.http.witness import witness_routes
from oblivio.node.audit import AuditLog
from oblivio.node.checkpoints import CheckpointService
from oblivio.node.node import Node
from oblivio.node.witness import (
    CosignatureCollector,
    HttpWitnessTransport,
    LogWitness,
    WitnessReply,
    WitnessService,
)
from oblivio.store.database import Database, open_database
from oblivio.store.migrations import migrate

LOG_KEY = SigningKey(b"\x21" * 32)
LOG_NAME = "log-a.test"
URL = "http://witness.invalid/v1/witness"


class RouteTransport:
    """The witness's real HTTP route, reached in process (no sockets)."""

    def __init__(self, witness: WitnessService) -> None:
        app = FastAPI()
        app.include_router(witness_routes)
        app.state.witness = witness
        self.client = TestClient(app)

    def add_checkpoint(self, url: str, body: bytes) -> WitnessReply:
        response = self.client.post("/v1/witness/add-checkpoint", content=body)
        return WitnessReply(
            response.status_code, response.headers.get("content-type", ""), response.content
        )


@dataclass
class Log:
    db: Database
    checkpoints: CheckpointService

    def commit(self, *entries: bytes) -> None:
        self.checkpoints.commit_epoch(entries=list(entries))


def _log(path: Path) -> Log:
    db = open_database("sqlite:///" + str(path).lstrip("/"))
    migrate(db)
    return Log(db, CheckpointService(db, LOG_NAME, LOG_KEY))


@pytest.fixture
def log_a(tmp_path: Path) -> Iterator[Log]:
    log = _log(tmp_path / "a.db")
    yield log
    log.db.close()


@pytest.fixture
def witness(node: Node) -> WitnessService:
    """Node ``test-node`` (each store backend) witnessing log A."""
    service = WitnessService(node.db, node.config.name, node.signing_key)
    service.add_log(LOG_NAME, NoteSigner(LOG_NAME, LOG_KEY).verifier_key)
    return service


def _collector(log: Log, witness: WitnessService) -> CosignatureCollector:
    collector = CosignatureCollector(log.db, lambda: log.checkpoints, RouteTransport(witness))
    collector.use(witness.signer.name, URL, witness.verifier_key)
    return collector


def _state(witness: WitnessService) -> tuple[object, ...]:
    with witness.db.transaction(write=False) as tx:
        cosigned = tx.fetchall("SELECT origin, size, root FROM witness_cosigned ORDER BY size")
    return (tuple(witness.logs()), tuple(cosigned), tuple(witness.equivocations()))


def test_checkpoints_are_cosigned_and_served_with_the_cosignature(
    log_a: Log, witness: WitnessService
) -> None:
    collector = _collector(log_a, witness)
    log_a.commit(b"one", b"two")
    assert collector.collect() == {"test-node": "cosigned"}
    for n in range(3):
        log_a.commit(b"more %d" % n)
        assert collector.collect() == {"test-node": "cosigned"}
        assert collector.collect() == {}  # nothing new to ask
    latest = log_a.checkpoints.latest_checkpoint()
    assert latest is not None
    report = verify_cosignatures(latest.note.encode(), [witness.signer.verifier], 1)
    assert report.signers == (witness.signer.verifier.key_id,)
    # The witness's state is durable: a new service on the same database sees it.
    reopened = WitnessService(witness.db, "test-node", SigningKey(b"\x00" * 32))
    [state] = reopened.logs()
    assert (state.size, state.root) == (latest.size, latest.root)
    assert collector.witnesses() == [
        LogWitness("test-node", URL, witness.verifier_key, latest.size)
    ]
    history = log_a.checkpoints.checkpoint_history()
    assert all(witness.signer.name in c.note for c in history)


def test_bad_input_gets_the_c2sp_codes_and_changes_nothing(
    log_a: Log, witness: WitnessService, tmp_path: Path
) -> None:
    collector = _collector(log_a, witness)
    log_a.commit(b"a", b"b", b"c")
    collector.collect()
    log_a.commit(b"d")
    collector.collect()
    first, second = log_a.checkpoints.checkpoint_history()
    log_a.commit(b"e", b"f")
    third = log_a.checkpoints.latest_checkpoint()
    assert third is not None
    proof = log_a.checkpoints.log.consistency_proof(second.size, third.size).path
    client = RouteTransport(witness).client
    stranger = NoteSigner(LOG_NAME, SigningKey(b"\x33" * 32))
    unknown = NoteSigner("nobody.test", LOG_KEY)
    huge = b"old 5\n" + (b"A" * 43 + b"=\n") * 64 + b"\n" + third.note.encode()
    cases: list[tuple[str, bytes, int]] = [
        ("empty body", b"", 400),
        ("no blank line", b"old 5\n", 400),
        ("not a note", b"old 5\n\nhello\n", 400),
        ("64 proof lines", huge, 400),
        (
            "unknown origin",
            AddCheckpointRequest(
                0, (), sign_checkpoint(Checkpoint("nobody.test", 1, b"\1" * 32), unknown).encode()
            ).to_bytes(),
            404,
        ),
        (
            "untrusted signature",
            AddCheckpointRequest(
                second.size,
                tuple(proof),
                sign_checkpoint(Checkpoint(LOG_NAME, third.size, third.root), stranger).encode(),
            ).to_bytes(),
            403,
        ),
        (
            "old size above the new",
            AddCheckpointRequest(third.size + 1, (), third.note.encode()).to_bytes(),
            400,
        ),
        (
            "stale old size",
            AddCheckpointRequest(first.size, (), third.note.encode()).to_bytes(),
            409,
        ),
        (
            "wrong proof",
            AddCheckpointRequest(
                second.size, tuple(reversed(proof)), third.note.encode()
            ).to_bytes(),
            422,
        ),
        (
            "proof too long",
            AddCheckpointRequest(second.size, (*proof, b"\0" * 32), third.note.encode()).to_bytes(),
            422,
        ),
        (
            "replayed old checkpoint",
            AddCheckpointRequest(first.size, (), first.note.encode()).to_bytes(),
            409,
        ),
    ]
    before = _state(witness)
    for what, body, status in cases:
        response = client.post("/v1/witness/add-checkpoint", content=body)
        assert response.status_code == status, (what, response.text)
        if status == 409:
            assert response.headers["content-type"] == SIZE_CONTENT_TYPE
            assert response.content == f"{second.size}\n".encode()
        assert _state(witness) == before, what
    # And the honest request still succeeds afterwards.
    ok = client.post(
        "/v1/witness/add-checkpoint",
        content=AddCheckpointRequest(second.size, tuple(proof), third.note.encode()).to_bytes(),
    )
    assert ok.status_code == 200, ok.text
    assert ok.text.startswith("\u2014 test-node ")


def test_a_fork_is_refused_kept_as_evidence_and_audited(
    log_a: Log, witness: WitnessService, tmp_path: Path
) -> None:
    collector = _collector(log_a, witness)
    log_a.commit(b"x1", b"x2")
    log_a.commit(b"x3")
    assert collector.collect() == {"test-node": "cosigned"}
    cosigned = log_a.checkpoints.latest_checkpoint()
    assert cosigned is not None
    # Another history under the same origin and key, at the same size.
    fork = _log(tmp_path / "fork.db")
    try:
        fork.commit(b"y1", b"y2")
        fork.commit(b"y3")
        forked = fork.checkpoints.latest_checkpoint()
        assert forked is not None
        assert forked.size == cosigned.size
        assert forked.root != cosigned.root
        fork_collector = _collector(fork, witness)
        outcome = fork_collector.collect()
        assert "WitnessConflictError" in outcome["test-node"]
    finally:
        fork.db.close()
    [stored] = witness.equivocations()
    evidence = stored.evidence
    assert (evidence.origin, evidence.size) == (LOG_NAME, cosigned.size)
    # The first is the note as the honest log sent it (the note it serves now adds the
    # witness's cosignature line); the second is the fork as presented.
    assert cosigned.note.startswith(evidence.first)
    assert evidence.second == forked.note
    assert verify_equivocation(evidence, NoteSigner(LOG_NAME, LOG_KEY).verifier_key)
    events = [e for e in AuditLog(witness.db).read() if e.event == "witness_equivocation"]
    assert [e.subject for e in events] == [LOG_NAME]
    # The witness's state is the honest log's, unchanged; presenting the fork again adds no
    # second copy of the evidence.
    [state] = witness.logs()
    assert (state.size, state.root) == (cosigned.size, cosigned.root)
    client = RouteTransport(witness).client
    again = client.post(
        "/v1/witness/add-checkpoint",
        content=AddCheckpointRequest(cosigned.size, (), forked.note.encode()).to_bytes(),
    )
    assert again.status_code == 409
    assert len(witness.equivocations()) == 1


def test_racing_requests_never_roll_the_stored_size_back(
    log_a: Log, witness: WitnessService
) -> None:
    """tlog-witness's race: requests for sizes N and N+K from the same old size, at once. The
    check and the update share one transaction, so exactly one wins and the other is 409."""
    collector = _collector(log_a, witness)
    log_a.commit(b"base")
    collector.collect()
    base = log_a.checkpoints.latest_checkpoint()
    assert base is not None
    bodies = []
    for n in (1, 3):
        log_a.commit(*(b"grow %d" % i for i in range(n)))
        latest = log_a.checkpoints.latest_checkpoint()
        assert latest is not None
        proof = log_a.checkpoints.log.consistency_proof(base.size, latest.size).path
        bodies.append(
            (latest.size, AddCheckpointRequest(base.size, tuple(proof), latest.note.encode()))
        )
    barrier = threading.Barrier(len(bodies))
    outcomes: dict[int, str] = {}

    def submit(size: int, request: AddCheckpointRequest) -> None:
        barrier.wait()
        try:
            witness.add_checkpoint(request.to_bytes())
        except WitnessConflictError as e:
            outcomes[size] = f"409 {e.latest_size}"
        else:
            outcomes[size] = "200"

    threads = [threading.Thread(target=submit, args=body) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [size for size, outcome in outcomes.items() if outcome == "200"]
    assert len(winners) == 1, outcomes
    [loser] = [size for size in outcomes if size not in winners]
    assert outcomes[loser] == f"409 {winners[0]}"
    [state] = witness.logs()
    assert state.size == winners[0]


def test_an_unreachable_witness_is_retried_with_a_doubling_delay(
    log_a: Log, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    now = [datetime(2026, 12, 2, tzinfo=UTC)]
    transport = HttpWitnessTransport(timeout=5)
    collector = CosignatureCollector(
        log_a.db, lambda: log_a.checkpoints, transport, clock=lambda: now[0]
    )
    signer = WitnessService(log_a.db, "far.example", SigningKey(b"\x44" * 32)).signer
    collector.use("far.example", f"http://127.0.0.1:{closed}/v1/witness", signer.verifier_key)
    log_a.commit(b"z")
    try:
        assert "WitnessUnreachableError" in collector.collect()["far.example"]
        assert collector.collect() == {}  # waiting out 0.5 s
        now[0] += timedelta(milliseconds=600)
        assert "WitnessUnreachableError" in collector.collect()["far.example"]
        now[0] += timedelta(milliseconds=600)
        assert collector.collect() == {}  # the delay doubled to 1 s
        now[0] += timedelta(milliseconds=600)
        assert "far.example" in collector.collect()
        assert "WitnessUnreachableError" in collector.status()["far.example"]
    finally:
        transport.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
)
@given(data=st.data())
def test_mutated_requests_get_c2sp_codes_and_change_nothing(
    log_a: Log, witness: WitnessService, data: st.DataObject
) -> None:
    """Random edits of a valid request: never a 5xx, and nothing changes unless it is a 200."""
    if log_a.checkpoints.latest_checkpoint() is None:
        log_a.commit(b"one", b"two", b"three")
        _collector(log_a, witness).collect()
        log_a.commit(b"four", b"five")
    first, second = log_a.checkpoints.checkpoint_history()[:2]
    proof = log_a.checkpoints.log.consistency_proof(first.size, second.size).path
    body = bytearray(
        AddCheckpointRequest(first.size, tuple(proof), second.note.encode()).to_bytes()
    )
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            body[where] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del body[where]
        elif action == "insert":
            body[where:where] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del body[where:]
        if not body:
            break
    before = _state(witness)
    response = RouteTransport(witness).client.post(
        "/v1/witness/add-checkpoint", content=bytes(body)
    )
    assert response.status_code in (200, 400, 403, 404, 409, 422), response.text
    if response.status_code != 200:
        assert _state(witness) == before
