"""The epoch loop of ``oblivio serve`` (``ForgettingService.run_epochs``; issue 11, finding 2):
it survives every error, retries with a doubling delay, keeps its health, and a retry finishes
what a failed attempt left, on SQLite and PostgreSQL. The loop's pauses and clock are injected:
each pause runs one step of the test, then moves the clock by the pause.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.core.errors import IntegrityError
from oblivio.core.identifiers import ArtifactId
from oblivio.core.pof import verify_document
from oblivio.node.checkpoints import CheckpointService
from oblivio.node.forgetting import (
    EpochHealth,
    ForgetSettings,
    ForgettingService,
    epoch_retry_delay,
)
from oblivio.node.node import Node, init_node
from oblivio.store.key_tree_nodes import SqlKeyTreeNodes
from tests.keys.key_file_outage import key_file_outage
from tests.node.helpers import assert_suppressed

SECOND = timedelta(seconds=1)


class Clock:
    """A clock the loop's pauses move."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Pauses:
    """The loop's ``wait``: records each pause, runs the next step of the test, then moves the
    clock by the pause; says stop once no step is left."""

    def __init__(self, clock: Clock, steps: list[Callable[[], None]]) -> None:
        self.clock = clock
        self.steps = steps
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        if not self.steps:
            return True
        self.steps.pop(0)()
        self.clock.now += timedelta(seconds=seconds)
        return False


def _service(node: Node, clock: Clock) -> ForgettingService:
    checkpoints = CheckpointService(node.db, node.config.name, node.signing_key)
    return ForgettingService(node, checkpoints, ForgetSettings(epoch_interval=SECOND), clock=clock)


def _run(forgetting: ForgettingService, pauses: Pauses) -> None:
    forgetting.run_epochs(threading.Event(), wait=pauses)
    assert not pauses.steps, "the loop ended before the test's last step"


def _intents(node: Node) -> list[str]:
    """Old roots of key-tree batches journalled and not yet destroyed."""
    with node.db.transaction(write=False) as tx:
        return [e.old_root for e in SqlKeyTreeNodes(tx).journal(["intent"])]


def _key_kept(node: Node, artifact_id: str) -> bool:
    try:
        node.vault.custody.unwrap_capability_key(ArtifactId(artifact_id), "decrypt")
    except IntegrityError:
        return False
    return True


@pytest.mark.parametrize(
    ("interval", "failures", "expected"),
    [
        (1, 0, 1),
        (1, 1, 2),
        (1, 2, 4),
        (1, 5, 32),
        (1, 6, 60),
        (1, 10_000, 60),
        (0, 0, 0),
        (0, 1, 2),  # a zero interval still backs off from 1 s
        (20, 1, 40),
        (20, 2, 60),
        (300, 3, 300),  # never less than the interval
    ],
)
def test_epoch_retry_delay_doubles_from_the_interval_up_to_the_cap(
    interval: int, failures: int, expected: int
) -> None:
    delay = epoch_retry_delay(timedelta(seconds=interval), failures, timedelta(seconds=60))
    assert delay == timedelta(seconds=expected)


def test_epoch_thread_survives_key_backend_error(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    forgetting = _service(node, clock)
    forgotten, kept = node.vault.put(b"forget me", {}), node.vault.put(b"keep me", {})
    # A first forget leaves a standby root, so the failing attempt gets as far as journalling
    # its batch (under the standby) before the backend fails to destroy the old root.
    forgetting.forget(artifact_id=node.vault.put(b"warm-up", {}), level=2)
    assert forgetting.commit_due() is not None
    key_file = node.home / "keys" / "software-root-keys"
    outage = ExitStack()
    acknowledged: list[str] = []
    journalled: list[str] = []

    def break_key_file_and_forget() -> None:
        outage.enter_context(key_file_outage(key_file))
        acknowledged.append(forgetting.forget(artifact_id=forgotten, level=2).request_id)

    def first_failure_is_recorded() -> None:
        health = forgetting.epoch_health()
        assert health.consecutive_failures == 1
        assert health.last_error == "KeyBackendError (key_backend_error)"
        assert health.failing_since == clock.now
        assert health.next_attempt_at == clock.now + 2 * SECOND
        assert health.last_success_at is None
        problem = health.problem()
        assert problem is not None
        assert "KeyBackendError" in problem
        assert str(key_file) not in problem
        assert forgotten not in json.dumps(health.to_dict())
        # What the failed attempt left: a batch journalled in each tree (wrap and escrow)
        # under its standby root, the old roots alive (nothing destroyed), the event pending,
        # reads suppressed.
        journalled.extend(_intents(node))
        assert len(journalled) == 2
        assert set(journalled) <= node.vault.custody.backend.live_root_keys()
        assert forgetting.status(acknowledged[0])["state"] == "pending"
        assert_suppressed(node, forgotten)

    def second_failure_then_repair() -> None:
        health = forgetting.epoch_health()
        assert health.consecutive_failures == 2
        assert health.failing_since == clock.now - 2 * SECOND
        assert _intents(node) == journalled  # the retry failed before destroying any
        assert health.next_attempt_at == clock.now + 4 * SECOND
        outage.close()

    def the_retry_finished_the_forget() -> None:
        health = forgetting.epoch_health()
        assert health == EpochHealth(last_success_at=clock.now, last_epoch=health.last_epoch)
        assert health.last_epoch is not None
        assert health.problem() is None
        status = forgetting.status(acknowledged[0])
        assert status["state"] == "done"
        assert status["committed_epoch"] == health.last_epoch
        assert _intents(node) == []
        assert not set(journalled) & node.vault.custody.backend.live_root_keys()
        proof = forgetting.prove(forgotten)
        [proven] = verify_document(proof, forgetting.checkpoints.verifier_key)
        assert proven.level == 2
        assert proven.destruction_backend == "software"
        # The tombstone binds the receipt of the batch the failed attempt journalled.
        assert proof["destruction_receipt"]["key_ref"]["key_id"] in journalled
        assert not _key_kept(node, forgotten)
        assert node.vault.get(kept) == b"keep me"

    pauses = Pauses(
        clock,
        [
            break_key_file_and_forget,
            first_failure_is_recorded,
            second_failure_then_repair,
            the_retry_finished_the_forget,
        ],
    )
    with caplog.at_level(logging.WARNING, logger="oblivio.node.forgetting"):
        _run(forgetting, pauses)
    assert pauses.seconds == [1, 2, 4, 1, 1]
    failures = [r for r in caplog.records if "epoch attempt failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is None and "is damaged" in r.getMessage() for r in failures)
    assert any("work again after 2 failed attempts" in r.getMessage() for r in caplog.records)


def test_epoch_thread_survives_an_unexpected_error_and_logs_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    detail = "node-internal detail 7f3a"
    clock = Clock()
    armed = threading.Event()

    def clock_failing_once() -> datetime:
        if armed.is_set():
            armed.clear()
            raise RuntimeError(f"clock source unreachable ({detail})")
        return clock()

    with init_node(tmp_path / "home", name="test-node") as node:
        checkpoints = CheckpointService(node.db, node.config.name, node.signing_key)
        forgetting = ForgettingService(
            node, checkpoints, ForgetSettings(epoch_interval=SECOND), clock=clock_failing_once
        )
        artifact_id = node.vault.put(b"forget me", {})
        request_id = forgetting.forget(artifact_id=artifact_id, level=2).request_id

        def failure_is_recorded_without_its_message() -> None:
            health = forgetting.epoch_health()
            assert health.consecutive_failures == 1
            assert health.last_error == "unexpected RuntimeError"
            assert detail not in json.dumps(health.to_dict())
            assert detail not in (health.problem() or "")
            assert forgetting.status(request_id)["state"] == "pending"

        def the_retry_committed() -> None:
            assert not forgetting.epoch_health().failing
            assert forgetting.status(request_id)["state"] == "done"

        pauses = Pauses(
            clock, [armed.set, failure_is_recorded_without_its_message, the_retry_committed]
        )
        with caplog.at_level(logging.WARNING, logger="oblivio.node.forgetting"):
            _run(forgetting, pauses)
    assert pauses.seconds == [1, 2, 1, 1]
    [failure] = [r for r in caplog.records if "epoch attempt failed" in r.getMessage()]
    assert failure.levelno == logging.ERROR
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], RuntimeError)
    assert detail in str(failure.exc_info[1])


def test_the_epoch_loop_stops_when_asked(tmp_path: Path) -> None:
    with init_node(tmp_path / "home", name="test-node") as node:
        forgetting = _service(node, Clock())
        stop = threading.Event()
        stop.set()
        forgetting.run_epochs(stop)  # returns at once: the event is set before the first pause
        assert forgetting.epoch_health() == EpochHealth()
