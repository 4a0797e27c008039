"""Erasure requests from receipt to report (DESIGN.md §18, docs/adr/0032).

A request names an entity URI, a scope pattern and a regime (``gdpr`` or ``ccpa``); its
statuses and due dates follow ``core/erasure.py``. Once the requester's identity is verified,
processing runs these steps, each idempotent, recording the step it is at:

1. ``tombstone``: issue a tombstone for the entity and scope (it forgets the entity's
   artifacts at the node's tombstone level and enters the federation outbox); an active
   legal-hold tombstone for them pauses the request instead;
2. ``forget``: a level-2 entity forget under that tombstone (answered by the tombstone's own
   when it already forgets at level 2), then an epoch commit; the request waits until every
   event has executed, and pauses while a legal hold keeps one from executing;
3. ``propagation``: with peers, waits until every peer was delivered the tombstone (or
   answered it, or stayed silent past the ack deadline); per-peer status stays live;
4. ``proofs``: the Proof of Forgetting bundle of every forgotten artifact under one checkpoint,
   kept with the request; then the request is ``complete``.

A failing step sends the request to ``error`` (the step and message kept) and it is retried
from that step with a doubling delay. ``oblivio serve`` runs ``run_worker`` in a thread; the
command line advances a request itself (``advance``) when no server runs.

Every status change is recorded (``erasure_request_transitions``) and audited with the request
id only; the entity URI enters the audit log as a salted commitment (DESIGN.md §13) whose
opening stays in the request's row.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.erasure import (
    LEGAL_BASIS,
    STATUSES,
    Deadline,
    InvalidTransitionError,
    Regime,
    Status,
    check_extension,
    check_transition,
    deadline,
    validate_regime,
)
from oblivio.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OblivioError,
    StorageError,
)
from oblivio.core.forgetting import requestor_commitment
from oblivio.core.identifiers import (
    format_time,
    parse_time,
    validate_entity_uri,
    validate_scope_pattern,
)
from oblivio.core.pof import bundle
from oblivio.node.forgetting import ForgetTerms, error_kind
from oblivio.node.ids import new_uuid7
from oblivio.node.services import NodeServices
from oblivio.store.database import Transaction

_log = logging.getLogger(__name__)

Step = Literal["tombstone", "forget", "propagation", "proofs"]
STEPS: Final[tuple[Step, ...]] = ("tombstone", "forget", "propagation", "proofs")
AGENT_NAME: Final = "erasure-requests"
"""The agent that signs the tombstones of erasure requests (``agent:ORG/erasure-requests``)."""
REQUESTOR_MAX = 600
RETRY_FIRST = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=10)
_SETTLED_PEER: Final = frozenset(
    {"proved", "acknowledged", "held", "non_compliant", "silent", "rejected"}
)

PropagationStatus = Callable[[str], Mapping[str, Any]]
"""Per-peer status of a tombstone (the federation's ``propagation``), wired by whoever has
the federation open; None where there is none."""


class ErasureRequestNotFoundError(NotFoundError):
    """No erasure request with this id: 404, exit 3."""

    code = "erasure_request_not_found"


@dataclass(frozen=True)
class _Outcome:
    """What one run of a step found: done (go on), wait (try later), or pause (legal hold)."""

    kind: Literal["done", "wait", "pause"]
    reason: str | None = None


_DONE = _Outcome("done")


@dataclass(frozen=True)
class Extension:
    """One extension of the due date, with its recorded reason."""

    days: int
    reason: str
    extended_at: str
    actor: str | None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        return {
            "days": self.days,
            "reason": self.reason,
            "extended_at": self.extended_at,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class Transition:
    """One status change."""

    from_status: str | None
    to_status: str
    step: str | None
    at: str
    actor: str | None

    def to_dict(self) -> dict[str, JsonValue]:
        """JSON form."""
        return {
            "from": self.from_status,
            "to": self.to_status,
            "step": self.step,
            "at": self.at,
            "actor": self.actor,
        }


@dataclass(frozen=True)
class ErasureRequest:
    """A stored erasure request (its row, extensions and transitions)."""

    id: str
    entity_uri: str
    scope: JsonValue
    regime: Regime
    requestor: str
    status: Status
    step: Step | None
    received_at: str
    verified_at: str | None
    completed_at: str | None
    updated_at: str
    tombstone_id: str | None
    pause_reason: str | None
    last_error: str | None
    attempts: int
    next_attempt_at: str | None
    checkpoint_epoch: int | None
    has_bundle: bool
    extensions: tuple[Extension, ...]
    transitions: tuple[Transition, ...]

    def deadline(self, now: datetime) -> Deadline:
        """The due date as of ``now``."""
        verified = None if self.verified_at is None else parse_time(self.verified_at)
        return deadline(
            self.regime,
            parse_time(self.received_at),
            verified,
            sum(e.days for e in self.extensions),
            now,
        )

    def to_dict(self, now: datetime) -> dict[str, JsonValue]:
        """The request as JSON, with its due date and overdue flag as of ``now``."""
        due = self.deadline(now)
        return {
            "id": self.id,
            "entity_uri": self.entity_uri,
            "scope": self.scope,
            "regime": self.regime,
            "legal_basis": LEGAL_BASIS[self.regime],
            "requestor": self.requestor,
            "status": self.status,
            "step": self.step,
            "received_at": self.received_at,
            "verified_at": self.verified_at,
            "completed_at": self.completed_at,
            "updated_at": self.updated_at,
            "due_at": format_time(due.due_at),
            "latest_due_at": format_time(due.latest_due_at),
            "extended_days": due.extended_days,
            "clock_running": due.clock_running,
            "overdue": due.overdue(self.status, now),
            "tombstone_id": self.tombstone_id,
            "pause_reason": self.pause_reason,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "checkpoint_epoch": self.checkpoint_epoch,
            "pof_bundle": self.has_bundle,
            "extensions": [e.to_dict() for e in self.extensions],
            "transitions": [t.to_dict() for t in self.transitions],
        }


_COLUMNS = (
    "id, entity_uri, scope, regime, requestor, status, step, received_at, verified_at, "
    "completed_at, updated_at, tombstone_id, pause_reason, last_error, attempts, "
    "next_attempt_at, checkpoint_epoch, pof_bundle IS NOT NULL"
)


def _retry_delay(attempts: int) -> timedelta:
    return min(RETRY_FIRST * (1 << min(max(attempts - 1, 0), 16)), RETRY_CAP)


class ErasureRequestService:
    """Erasure requests of one node: create, verify identity, extend, cancel, process."""

    def __init__(
        self,
        services: NodeServices,
        *,
        propagation: PropagationStatus | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.services = services
        self.db = services.node.db
        self.audit = services.compliance.audit
        self.propagation = propagation
        self._clock = clock
        self._lock = threading.RLock()
        self.wake = threading.Event()
        """Set to make the worker look at open requests now (a verified identity)."""

    # -- reading -----------------------------------------------------------------------------

    def get(self, request_id: str) -> ErasureRequest:
        """The request; raises ErasureRequestNotFoundError."""
        with self.db.transaction(write=False) as tx:
            return self._get_in(tx, request_id)

    def _get_in(self, tx: Transaction, request_id: str) -> ErasureRequest:
        row = tx.fetchone(
            f"SELECT {_COLUMNS} FROM erasure_requests WHERE id = ?",  # noqa: S608 - fixed
            (str(request_id)[:100],),
        )
        if row is None:
            raise ErasureRequestNotFoundError(f"no erasure request {request_id}")
        extensions = tuple(
            Extension(int(r[0]), r[1], r[2], r[3])
            for r in tx.fetchall(
                "SELECT days, reason, extended_at, actor FROM erasure_request_extensions "
                "WHERE request_id = ? ORDER BY seq",
                (row[0],),
            )
        )
        transitions = tuple(
            Transition(r[0], r[1], r[2], r[3], r[4])
            for r in tx.fetchall(
                "SELECT from_status, to_status, step, at, actor FROM erasure_request_transitions "
                "WHERE request_id = ? ORDER BY seq",
                (row[0],),
            )
        )
        return ErasureRequest(
            id=row[0],
            entity_uri=row[1],
            scope=parse_json(row[2]),
            regime=validate_regime(row[3]),
            requestor=row[4],
            status=row[5],
            step=row[6],
            received_at=row[7],
            verified_at=row[8],
            completed_at=row[9],
            updated_at=row[10],
            tombstone_id=row[11],
            pause_reason=row[12],
            last_error=row[13],
            attempts=int(row[14]),
            next_attempt_at=row[15],
            checkpoint_epoch=None if row[16] is None else int(row[16]),
            has_bundle=bool(row[17]),
            extensions=extensions,
            transitions=transitions,
        )

    def every(self, status: str | None = None) -> list[ErasureRequest]:
        """Every request (or those in ``status``), oldest first."""
        if status is not None and status not in STATUSES:
            raise InvalidInputError(
                f"status: expected one of {', '.join(STATUSES)}, got {status!r}"
            )
        with self.db.transaction(write=False) as tx:
            rows = (
                tx.fetchall("SELECT id FROM erasure_requests ORDER BY received_at, id")
                if status is None
                else tx.fetchall(
                    "SELECT id FROM erasure_requests WHERE status = ? ORDER BY received_at, id",
                    (status,),
                )
            )
            ids = [r[0] for r in rows]
            return [self._get_in(tx, i) for i in ids]

    def bundle(self, request_id: str) -> dict[str, JsonValue]:
        """The request's Proof of Forgetting bundle; NotFoundError until it has one."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT pof_bundle FROM erasure_requests WHERE id = ?", (str(request_id)[:100],)
            )
        if row is None:
            raise ErasureRequestNotFoundError(f"no erasure request {request_id}")
        if row[0] is None:
            raise NotFoundError(f"erasure request {request_id} has no proof bundle (yet)")
        value = parse_json(row[0])
        if not isinstance(value, dict):
            raise StorageError(f"store: the proof bundle of request {request_id} is not an object")
        return value

    def links(self, request: ErasureRequest) -> dict[str, JsonValue]:
        """What the request links: its tombstone, forget requests (with their artifacts and
        epochs), per-peer propagation (live), and its checkpoint."""
        tombstone: JsonValue = None
        forgets: list[JsonValue] = []
        propagation: JsonValue = None
        if request.tombstone_id is not None:
            record = self.services.compliance.tombstones.store.get(request.tombstone_id)
            tombstone = {
                "id": record.id,
                "created_at": record.created_at,
                "signed_by": record.signed_by,
                "legal_hold": record.legal_hold,
            }
            for forget_id in self._forget_request_ids(request.tombstone_id):
                forgets.append(dict(self.services.forgetting.status(forget_id)))
            if self.propagation is not None:
                propagation = dict(self.propagation(request.tombstone_id))
        checkpoint: JsonValue = None
        if request.checkpoint_epoch is not None:
            stored = self.services.checkpoints.checkpoint(request.checkpoint_epoch)
            checkpoint = {"epoch": request.checkpoint_epoch, "note": stored.note}
        return {
            "tombstone": tombstone,
            "forget_requests": forgets,
            "propagation": propagation,
            "checkpoint": checkpoint,
            "verifier_key": self.services.checkpoints.verifier_key,
        }

    def describe(self, request_id: str) -> dict[str, JsonValue]:
        """The request as JSON with everything it links (``request show``)."""
        request = self.get(request_id)
        return request.to_dict(self._clock()) | {"links": self.links(request)}

    def _forget_request_ids(self, tombstone_id: str) -> list[str]:
        with self.db.transaction(write=False) as tx:
            return [
                r[0]
                for r in tx.fetchall(
                    "SELECT id FROM forget_requests WHERE source = ? AND state <> 'cancelled' "
                    "ORDER BY requested_at, id",
                    (tombstone_id,),
                )
            ]

    # -- operator actions --------------------------------------------------------------------

    def create(
        self,
        entity_uri: str,
        scope: object = "*",
        regime: str = "gdpr",
        requestor: str = "",
        actor: str | None = None,
    ) -> ErasureRequest:
        """Record a request as ``received`` (its clock waits for the identity check).
        Raises InvalidInputError (and its URI/scope kinds) before anything is stored."""
        validate_entity_uri(entity_uri)
        pattern = validate_scope_pattern(scope)
        scope_json: JsonValue = pattern if isinstance(pattern, str) else list(pattern)
        kind = validate_regime(regime)
        if not isinstance(requestor, str) or len(requestor) > REQUESTOR_MAX:
            raise InvalidInputError(f"requestor: expected text of at most {REQUESTOR_MAX} chars")
        salt = secrets.token_bytes(32)
        value: dict[str, JsonValue] = {
            "entity_uri": entity_uri,
            "scope": scope_json,
            "requestor": requestor,
        }
        commitment = requestor_commitment(salt, value)
        request_id = new_uuid7()
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO erasure_requests (id, entity_uri, scope, regime, requestor, "
                "commitment, opening, status, received_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?)",
                (
                    request_id,
                    entity_uri,
                    canonical_json(scope_json).decode("utf-8"),
                    kind,
                    requestor,
                    commitment,
                    canonical_json({"salt": salt.hex(), "value": value}).decode("utf-8"),
                    now,
                    now,
                ),
            )
            self._record_transition(tx, request_id, Transition(None, "received", None, now, actor))
            self.audit.append_in(
                tx,
                "erasure_request_received",
                actor=actor,
                subject=request_id,
                details={"regime": kind, "entity_commitment": commitment},
            )
        return self.get(request_id)

    def verify_identity(self, request_id: str, actor: str | None = None) -> ErasureRequest:
        """``received`` -> ``identity_verified``: the clock starts and processing may begin
        (the worker is woken). Raises ErasureRequestNotFoundError, InvalidTransitionError."""
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            request = self._get_in(tx, request_id)
            self._transition(tx, request, "identity_verified", actor, now, verified_at=now)
        self.wake.set()
        return self.get(request_id)

    def cancel(self, request_id: str, actor: str | None = None) -> ErasureRequest:
        """Cancel an open request not in the middle of a step. Nothing already done is
        undone (a tombstone issued stays until an operator revokes it). Raises
        ErasureRequestNotFoundError, InvalidTransitionError."""
        now = format_time(self._clock())
        with self._lock, self.db.transaction() as tx:
            request = self._get_in(tx, request_id)
            self._transition(tx, request, "canceled", actor, now, next_attempt_at=None)
        return self.get(request_id)

    def extend(
        self, request_id: str, days: int, reason: str, actor: str | None = None
    ) -> ErasureRequest:
        """Extend the due date by ``days`` with a recorded reason, within the regime's limit
        (GDPR: two further months in total; CCPA: 45 days). Raises
        ErasureRequestNotFoundError, InvalidInputError, ExtensionRefusedError; nothing is
        changed then."""
        moment = self._clock()
        with self.db.transaction() as tx:
            request = self._get_in(tx, request_id)
            check_extension(request.deadline(moment), request.status, days, reason)
            row = tx.fetchone(
                "SELECT COALESCE(MAX(seq), 0) FROM erasure_request_extensions WHERE request_id = ?",
                (request.id,),
            )
            seq = (int(row[0]) if row else 0) + 1
            tx.execute(
                "INSERT INTO erasure_request_extensions (request_id, seq, days, reason, "
                "extended_at, actor) VALUES (?, ?, ?, ?, ?, ?)",
                (request.id, seq, days, reason, format_time(moment), actor),
            )
            extended = request.deadline(moment).extended_days + days
            self.audit.append_in(
                tx,
                "erasure_request_extended",
                actor=actor,
                subject=request.id,
                details={"days": days, "extended_days": extended},
            )
        return self.get(request_id)

    # -- status changes ----------------------------------------------------------------------

    def _record_transition(self, tx: Transaction, request_id: str, change: Transition) -> None:
        row = tx.fetchone(
            "SELECT COALESCE(MAX(seq), 0) FROM erasure_request_transitions WHERE request_id = ?",
            (request_id,),
        )
        tx.execute(
            "INSERT INTO erasure_request_transitions (request_id, seq, from_status, to_status, "
            "step, at, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                request_id,
                (int(row[0]) if row else 0) + 1,
                change.from_status,
                change.to_status,
                change.step,
                change.at,
                change.actor,
            ),
        )

    def _transition(
        self,
        tx: Transaction,
        request: ErasureRequest,
        to: Status,
        actor: str | None,
        at: str,
        *,
        error_kind: str | None = None,
        **fields: Any,
    ) -> None:
        """Move ``request`` to ``to`` if the table allows it and nobody moved it meanwhile
        (compare-and-set on status and step), recording and auditing the change (with the
        kind of the error, never its message: it may quote personal data)."""
        check_transition(request.status, to)
        step = fields.get("step", request.step)
        assignments = "".join(f", {name} = ?" for name in fields)
        changed = tx.execute(
            f"UPDATE erasure_requests SET status = ?, updated_at = ?{assignments} "  # noqa: S608
            "WHERE id = ? AND status = ? AND COALESCE(step, '') = ?",
            (to, at, *fields.values(), request.id, request.status, request.step or ""),
        )
        if changed != 1:
            current = self._get_in(tx, request.id)
            check_transition(current.status, to)
            raise InvalidTransitionError(
                f"erasure request {request.id} changed meanwhile (now {current.status})"
            )
        self._record_transition(tx, request.id, Transition(request.status, to, step, at, actor))
        details: dict[str, JsonValue] = {"from": request.status, "to": to, "step": step}
        if error_kind is not None:
            details["error"] = error_kind
        self.audit.append_in(
            tx, f"erasure_request_{to}", actor=actor, subject=request.id, details=details
        )

    def _move(
        self, request: ErasureRequest, to: Status, error_kind: str | None = None, **fields: Any
    ) -> ErasureRequest:
        """``_transition`` in a transaction of its own, by the processing (no actor)."""
        with self.db.transaction() as tx:
            now = format_time(self._clock())
            self._transition(tx, request, to, None, now, error_kind=error_kind, **fields)
            return self._get_in(tx, request.id)

    def _set_step(self, request: ErasureRequest, step: Step, **fields: Any) -> ErasureRequest:
        """Record progress within ``in_processing`` (the next step to run)."""
        assignments = "".join(f", {name} = ?" for name in fields)
        with self.db.transaction() as tx:
            tx.execute(
                f"UPDATE erasure_requests SET step = ?, updated_at = ?{assignments} "  # noqa: S608
                "WHERE id = ? AND status = ?",
                (step, format_time(self._clock()), *fields.values(), request.id, request.status),
            )
            return self._get_in(tx, request.id)

    # -- processing --------------------------------------------------------------------------

    def advance(self, request_id: str, *, retry_now: bool = False) -> ErasureRequest:
        """Run the request's steps as far as they go now: from ``identity_verified`` it starts,
        a ``paused`` one resumes once its hold is gone, an ``error`` one is retried from the
        step that failed when its retry is due (or ``retry_now``). Stops at a step that must
        wait (an epoch, a peer), pauses under a legal hold, goes to ``error`` on a failure.
        Returns the request as it then is. Raises ErasureRequestNotFoundError, and
        InvalidTransitionError when another process moved the request meanwhile."""
        with self._lock:
            request = self.get(request_id)
            if request.status == "identity_verified":
                request = self._move(request, "in_processing", step="tombstone")
            elif request.status == "error":
                due = request.next_attempt_at
                if not retry_now and due is not None and parse_time(due) > self._clock():
                    return request
                request = self._move(request, "in_processing", next_attempt_at=None)
            elif request.status not in ("in_processing", "paused"):
                return request
            return self._run_steps(request)

    def _run_steps(self, request: ErasureRequest) -> ErasureRequest:
        while request.step is not None:
            step = request.step
            try:
                outcome = self._run_step(request, step)
            except Exception as e:  # any failure of a step: kept, retried from this step
                _log.warning("erasure request %s: step %s failed: %s", request.id, step, e)
                attempts = request.attempts + 1
                return self._move(
                    request,
                    "error",
                    error_kind=error_kind(e),
                    last_error=f"step {step}: {error_kind(e)}: {e}"[:2000],
                    attempts=attempts,
                    next_attempt_at=format_time(self._clock() + _retry_delay(attempts)),
                )
            if outcome.kind == "pause":
                if request.status == "paused":
                    return request
                return self._move(request, "paused", pause_reason=outcome.reason)
            if request.status == "paused":
                request = self._move(request, "in_processing", pause_reason=None)
            if outcome.kind == "wait":
                return request
            request = self.get(request.id)
            if step == STEPS[-1]:
                return self._move(request, "complete", completed_at=format_time(self._clock()))
            request = self._set_step(request, STEPS[STEPS.index(step) + 1])
        return request

    def advance_open(self) -> int:
        """Advance every request that may move (the worker's round); returns how many moved."""
        with self.db.transaction(write=False) as tx:
            ids = [
                r[0]
                for r in tx.fetchall(
                    "SELECT id FROM erasure_requests WHERE status IN "
                    "('identity_verified', 'in_processing', 'paused', 'error') "
                    "ORDER BY received_at, id"
                )
            ]
        moved = 0
        for request_id in ids:
            before = self.get(request_id)
            try:
                after = self.advance(request_id)
            except InvalidTransitionError:
                continue  # another process (the command line, an operator) moved it first
            moved += (after.status, after.step) != (before.status, before.step)
        return moved

    def run_worker(self, stop: threading.Event, interval: timedelta = timedelta(seconds=1)) -> None:
        """``oblivio serve``'s worker: advance open requests every ``interval`` (at once when
        woken) until ``stop`` is set. No error ends it: a failed round is logged."""
        while not stop.is_set():
            try:
                self.advance_open()
            except OblivioError as e:
                _log.warning("erasure requests: a round failed: %s", e)
            self.wake.wait(interval.total_seconds())
            self.wake.clear()

    def _run_step(self, request: ErasureRequest, step: Step) -> _Outcome:
        if step == "tombstone":
            return self._issue_tombstone(request)
        if request.tombstone_id is None:
            raise StorageError(f"store: erasure request {request.id} lost its tombstone")
        with self.db.transaction(write=False) as tx:
            revoked = tx.fetchone(
                "SELECT id FROM tombstone_revocations WHERE tombstone_id = ?",
                (request.tombstone_id,),
            )
        if revoked is not None:
            # An operator revoked what the request stands on: nothing here can decide for them.
            raise ConflictError(
                f"tombstone {request.tombstone_id} was revoked ({revoked[0]}): the request "
                "cannot complete; cancel it, or create a new one"
            )
        if step == "forget":
            return self._forget(request, request.tombstone_id)
        if step == "propagation":
            return self._propagated(request.tombstone_id)
        return self._prove(request, request.tombstone_id)

    def _issue_tombstone(self, request: ErasureRequest) -> _Outcome:
        """Step 1: the entity's tombstone (idempotent: an active one for the entity and scope
        is the one). A legal-hold tombstone there pauses the request."""
        record, _ = self.services.compliance.tombstones.issue(
            AGENT_NAME,
            request.entity_uri,
            request.scope,
            f"{LEGAL_BASIS[request.regime]} erasure request {request.id}",
        )
        if record.legal_hold:
            return _Outcome("pause", f"legal-hold tombstone {record.id} covers the entity")
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE erasure_requests SET tombstone_id = ? WHERE id = ?",
                (record.id, request.id),
            )
        return _DONE

    def _forget(self, request: ErasureRequest, tombstone_id: str) -> _Outcome:
        """Step 2: a level-2 forget of the entity under the tombstone, executed."""
        forgetting = self.services.forgetting
        forgetting.forget_with(
            ForgetTerms(
                level=2,
                requestor=request.requestor,
                authority=LEGAL_BASIS[request.regime],
                reason=f"erasure request {request.id}",
                entity_uri=request.entity_uri,
                scope=request.scope,
                source=tombstone_id,
            ),
            allow_empty=True,
        )
        forgetting.commit_due()
        with self.db.transaction(write=False) as tx:
            pending = [
                r[0]
                for r in tx.fetchall(
                    "SELECT e.artifact_id FROM forget_events e JOIN forget_requests r "
                    "ON r.id = e.request_id WHERE r.source = ? AND r.state = 'pending' "
                    "AND e.epoch IS NULL ORDER BY e.artifact_id",
                    (tombstone_id,),
                )
            ]
            if not pending:
                return _DONE
            holds = _holds_over(tx, pending)
        if holds:
            return _Outcome("pause", f"legal hold {holds[0]} keeps {len(pending)} forgets waiting")
        return _Outcome("wait")

    def _propagated(self, tombstone_id: str) -> _Outcome:
        """Step 3: every peer was delivered the tombstone, answered it, or stayed silent."""
        if self.propagation is None:
            return _DONE
        peers = self.propagation(tombstone_id).get("peers", [])
        settled = all(
            p.get("delivered_at") is not None or p.get("status") in _SETTLED_PEER for p in peers
        )
        return _DONE if settled else _Outcome("wait")

    def _prove(self, request: ErasureRequest, tombstone_id: str) -> _Outcome:
        """Step 4: one bundle, every level-2 forgotten artifact, under one checkpoint."""
        forgetting = self.services.forgetting
        with self.db.transaction(write=False) as tx:
            forget_ids = [
                r[0]
                for r in tx.fetchall(
                    "SELECT DISTINCT r.id FROM forget_requests r JOIN forget_events e "
                    "ON e.request_id = r.id WHERE r.source = ? AND r.level = 2 "
                    "AND r.state = 'done' ORDER BY r.id",
                    (tombstone_id,),
                )
            ]
        proofs: dict[str, JsonValue] = {}
        for _ in range(3):  # an epoch committed between two requests' proofs: prove again
            epoch = self.services.checkpoints.latest_or_first_checkpoint().epoch
            proofs = {}
            for forget_id in forget_ids:
                for proof in _proofs_of(forgetting.prove_request(forget_id)):
                    proofs[str(proof["artifact_id"])] = proof
            if len({_checkpoint_of(p) for p in proofs.values()}) <= 1:
                break
        else:
            raise StorageError("store: new epochs kept committing while proving; retried later")
        document = bundle([_object(proofs[a]) for a in sorted(proofs)]) if proofs else None
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE erasure_requests SET pof_bundle = ?, checkpoint_epoch = ? WHERE id = ?",
                (
                    None if document is None else canonical_json(document).decode("utf-8"),
                    epoch,
                    request.id,
                ),
            )
        return _DONE


def _holds_over(tx: Transaction, artifact_ids: Sequence[str]) -> list[str]:
    """The unreleased legal holds covering any of ``artifact_ids``."""
    placeholders = ", ".join("?" for _ in artifact_ids)
    rows = tx.fetchall(
        "SELECT DISTINCT h.id FROM legal_holds h JOIN legal_hold_artifacts a "  # noqa: S608
        f"ON a.hold_id = h.id WHERE h.released_at IS NULL AND a.artifact_id IN ({placeholders}) "
        "ORDER BY h.id",
        tuple(artifact_ids),
    )
    return [r[0] for r in rows]


def _proofs_of(document: Mapping[str, JsonValue]) -> list[Mapping[str, JsonValue]]:
    proofs = document.get("proofs")
    if not isinstance(proofs, list):
        raise StorageError("store: a proof bundle without proofs")
    return [p for p in proofs if isinstance(p, dict)]


def _checkpoint_of(proof: JsonValue) -> str:
    return str(proof.get("checkpoint")) if isinstance(proof, dict) else ""


def _object(value: JsonValue) -> Mapping[str, JsonValue]:
    if not isinstance(value, dict):
        raise StorageError("store: a proof that is not an object")
    return value
