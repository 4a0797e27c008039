"""Forgetting as a node service (DESIGN.md §8, §9, §13; seed 000 §4-§5; seed 001 legal hold).

A forget request is acknowledged only once it is durable: one transaction appends its forget
events to the log (one event per artifact, so each proof carries a small event) and records the
request, and reads of the artifacts stop at once (``artifact_states``). Execution happens at the
next epoch commit, which a full batch or a timer triggers:

- level 0: the leaf stays ACTIVE with ``policy.revoked = true``; reversible with ``restore``;
- level 1: the key tree forgets the capability keys and destroys the old root (a destruction
  receipt is logged); the leaf stays ACTIVE with the capabilities that remain;
- level 2: level 1, then the leaf becomes TOMBSTONE binding the forget event and the receipt, and
  a Proof of Forgetting can be served.

Events wait while a legal hold covers their artifact (reads stay suppressed) and for the
destruction window after the request, during which revoking the tombstone that caused them
restores access. If a crash falls between acknowledgement and the epoch commit, the pending
events are found and executed by the next commit: nothing acknowledged is lost.

``oblivio serve`` runs the epochs in a thread (``run_epochs``) that no error ends: a failed
attempt is logged, retried with a doubling delay, and reported by ``epoch_health``
(GET /v1/health).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.errors import (
    ArtifactNotFoundError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OblivioError,
    StorageError,
)
from oblivio.core.forgetting import (
    COMMITTED_AUTHORITY,
    active_record,
    forget_event_entries,
    requestor_commitment,
    tombstone_leaf_json,
    validate_level,
)
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import (
    CAPABILITIES,
    ArtifactId,
    Capability,
    format_time,
    parse_artifact_id,
    scope_pattern_covers,
    validate_capabilities,
    validate_entity_uri,
    validate_scope_pattern,
)
from oblivio.core.merkle_log import InclusionProof
from oblivio.core.pof import build_proof, bundle, verify_proof
from oblivio.core.smt import smt_key
from oblivio.keys.key_tree import RootDestruction
from oblivio.node.checkpoints import CheckpointService, EpochCommit
from oblivio.node.ids import new_uuid7, new_uuid7s
from oblivio.node.node import Node
from oblivio.store.database import Transaction
from oblivio.store.event_log import StagedAppend
from oblivio.store.key_tree_nodes import SqlKeyTreeNodes

_PG_FORGET_LOCK = 0x0B11_7E90  # the epoch lock: forget appends and epoch commits serialise

_log = logging.getLogger(__name__)

EPOCH_RETRY_CAP = timedelta(seconds=60)

Progress = Callable[[str, int, int], None]
"""Told of long work as it goes: a stage's description, the steps done, the steps in all."""
"""The longest wait between two failed attempts of the epoch loop."""


def epoch_retry_delay(
    interval: timedelta, failures: int, cap: timedelta = EPOCH_RETRY_CAP
) -> timedelta:
    """How long the epoch loop waits before its next attempt, ``failures`` attempts having
    failed in a row: the epoch interval when none failed; else the interval (at least 1 s, so
    that a failing store or backend is not hammered) doubled per failure, up to ``cap``, and
    never less than the interval itself."""
    if failures <= 0:
        return interval
    doubled = max(interval, timedelta(seconds=1)) * (1 << min(failures, 16))
    return max(interval, min(doubled, cap))


@dataclass(frozen=True)
class EpochHealth:
    """What the epoch loop (``ForgettingService.run_epochs``) knows of its own attempts.

    ``last_error`` names the kind of the error only (its class and code), never its message:
    GET /v1/health shows it to anyone, and a message may hold paths, artifact ids or a
    backend's details. The node's log has the message (and the traceback of an unexpected
    error).
    """

    last_success_at: datetime | None = None
    """When the last attempt that raised nothing ended (it committed, or nothing was due)."""
    last_epoch: int | None = None
    """The epoch the loop committed last (a heartbeat epoch included)."""
    consecutive_failures: int = 0
    failing_since: datetime | None = None
    """When the first of the ``consecutive_failures`` failed attempts ended."""
    last_error: str | None = None
    """The kind of the latest failure, e.g. ``KeyBackendError (key_backend_error)``."""
    next_attempt_at: datetime | None = None

    @property
    def failing(self) -> bool:
        """Whether the latest attempt failed (the loop cannot commit)."""
        return self.consecutive_failures > 0

    def problem(self) -> str | None:
        """One line saying why the loop cannot commit, or None while it can."""
        if not self.failing:
            return None
        since = "?" if self.failing_since is None else format_time(self.failing_since)
        retry = "?" if self.next_attempt_at is None else format_time(self.next_attempt_at)
        return (
            f"epoch commits failing since {since} ({self.consecutive_failures} attempts in a "
            f"row, last: {self.last_error}); next attempt at {retry}; the node's log has details"
        )

    def to_dict(self) -> dict[str, JsonValue]:
        """The JSON form of GET /v1/health's ``epochs``."""

        def moment(value: datetime | None) -> JsonValue:
            return None if value is None else format_time(value)

        return {
            "last_success_at": moment(self.last_success_at),
            "last_epoch": self.last_epoch,
            "consecutive_failures": self.consecutive_failures,
            "failing_since": moment(self.failing_since),
            "last_error": self.last_error,
            "next_attempt_at": moment(self.next_attempt_at),
        }


def error_kind(error: BaseException) -> str:
    """A one-line name of an error that holds none of its message: oblivio's errors by class
    and code, anything else as unexpected."""
    if isinstance(error, OblivioError):
        return f"{type(error).__name__} ({error.code})"
    return f"unexpected {type(error).__name__}"


@dataclass(frozen=True)
class ForgetSettings:
    """How a node batches and delays forgetting (configuration, read once)."""

    batch_size: int = 10_000
    epoch_interval: timedelta = timedelta(seconds=1)
    destruction_window: timedelta = timedelta(0)
    heartbeat: timedelta = timedelta(minutes=5)
    tombstone_level: int = 2


@dataclass(frozen=True)
class ForgetReceipt:
    """What the requestor gets back: the logged events and the commitment's opening."""

    request_id: str
    level: int
    capabilities: tuple[Capability, ...]
    events: tuple[tuple[str, str, int], ...]
    """(event id, artifact id, log index) per artifact."""
    requested_at: str
    not_before: str
    requestor_commitment: str
    opening: Mapping[str, JsonValue] | None
    """None when the answer is an existing request: its opening is its own requestor's."""
    state: str = "pending"
    existing: bool = False
    """True when nothing was recorded: an earlier request already forgets what was asked."""

    def to_dict(self) -> dict[str, JsonValue]:
        """The receipt as JSON (the opening lets the requestor check the logged commitment)."""
        return {
            "request_id": self.request_id,
            "level": self.level,
            "capabilities": list(self.capabilities),
            "state": self.state,
            "existing": self.existing,
            "requested_at": self.requested_at,
            "not_before": self.not_before,
            "requestor_commitment": self.requestor_commitment,
            "opening": None if self.opening is None else dict(self.opening),
            "events": [
                {"event_id": e, "artifact_id": a, "log_index": i} for e, a, i in self.events
            ],
        }


@dataclass(frozen=True)
class ForgetTerms:
    """What a forget request asks, whatever it targets: level, capabilities, who asked, on
    what authority and why (committed to in the log, ADR 0017), the entity and scope pattern of
    an entity forget, and the tombstone that caused it (``source``)."""

    level: int = 2
    capabilities: Sequence[str] = CAPABILITIES
    requestor: str = ""
    authority: str = "unspecified"
    reason: str = ""
    entity_uri: str | None = None
    scope: object = "*"
    source: str | None = None


@dataclass
class _DueEvent:
    event_id: str
    request_id: str
    artifact_id: ArtifactId
    level: int
    capabilities: tuple[Capability, ...]
    event_bytes: bytes
    """The event's JCS bytes exactly as logged."""
    receipt_hash: str | None = None


@dataclass(frozen=True)
class _CheckpointContext:
    """What every proof under one checkpoint shares."""

    epoch: int
    note: str
    size: int
    map_root: Mapping[str, JsonValue]
    map_root_inclusion: InclusionProof


@dataclass(frozen=True)
class _Executed:
    """What one epoch executed: due events, leaves changed, leaves that were pending, and
    receipts appended to the log."""

    due: list[_DueEvent]
    changed: Mapping[str, bytes]
    """Leaf records committed, as their JCS bytes."""
    pending_json: Mapping[str, str]
    """The pending leaves' record text as read, to update only rows nobody changed since."""
    unlogged: list[tuple[str, bytes]]
    tombstoned: frozenset[str]
    """Artifacts whose leaf a level-2 event of this epoch made a TOMBSTONE: their rows are not
    rewritten (the committed event is the record's source; docs/adr/0014)."""


def _dump(value: JsonValue) -> str:
    return canonical_json(value).decode("utf-8")


class ForgettingService:
    """Forget requests, epochs, legal holds, restores and Proofs of Forgetting of one node."""

    def __init__(
        self,
        node: Node,
        checkpoints: CheckpointService,
        settings: ForgetSettings = ForgetSettings(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.node = node
        self.db = node.db
        self.checkpoints = checkpoints
        self.settings = settings
        self._clock = clock
        self._lock = threading.RLock()
        # Replaced whole by the epoch loop, read by any thread: a frozen value, no lock needed.
        self._epoch_health = EpochHealth()
        self.derived_erasers: list[
            Callable[[Transaction, Sequence[str]], Callable[[], None] | None]
        ] = []
        """Run inside each epoch's transaction with the artifacts it forgot at level >= 1; what
        one returns runs once the epoch committed (work no transaction may hold, such as
        PostgreSQL's ``VACUUM``)."""

    # -- requests ------------------------------------------------------------------------------

    def _targets(
        self,
        tx: Transaction,
        artifact_id: str | Sequence[str] | None,
        entity_uri: str | None,
        scope: object,
    ) -> list[ArtifactId]:
        if (artifact_id is None) == (entity_uri is None):
            raise InvalidInputError("forget: name exactly one of an artifact or an entity")
        if artifact_id is not None:
            wanted = [artifact_id] if isinstance(artifact_id, str) else list(artifact_id)
            ids = sorted({parse_artifact_id(a) for a in wanted})
            found = {r[0] for r in _select_in(tx, "SELECT artifact_id FROM artifacts", ids)}
            missing = [a for a in ids if a not in found]
            if missing or not ids:
                raise ArtifactNotFoundError(
                    f"artifact {missing[0] if missing else '(none)'} is not stored on this node"
                )
            return ids
        pattern = validate_scope_pattern(scope)
        rows = tx.fetchall(
            "SELECT artifact_id, scope FROM artifacts WHERE entity_uri = ? ORDER BY artifact_id",
            (validate_entity_uri(entity_uri),),
        )
        return [
            ArtifactId(a) for a, s in rows if s is not None and scope_pattern_covers(pattern, s)
        ]

    def _lock_epoch(self, tx: Transaction) -> None:
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_FORGET_LOCK,))

    def forget(
        self,
        *,
        artifact_id: str | Sequence[str] | None = None,
        entity_uri: str | None = None,
        scope: object = "*",
        level: int = 2,
        capabilities: Sequence[str] = CAPABILITIES,
        requestor: str = "",
        authority: str = "unspecified",
        reason: str = "",
        source: str | None = None,
        allow_empty: bool = False,
    ) -> ForgetReceipt:
        """Record a forget request durably (its events appended to the log) and stop reads of
        the artifacts it names (one id, a list of ids, or an entity's artifacts in the scopes
        of a pattern); execution follows at the next epoch commit.

        Idempotent for what is already forgotten: when one earlier request (not cancelled, of
        the same ``source``, or any executed level-1/2 one for a request without a source)
        already forgets every artifact named at this level with at least these capabilities
        (level 0: and its revocation is still in effect), nothing is recorded and the answer is
        that request (``existing``, without its opening).

        Each artifact's event names the capabilities asked for and those an executed level-1
        or level-2 forget already destroyed, so the latest proof states all of them
        (docs/adr/0019); the request (``capabilities`` of the receipt) keeps what was asked.

        The logged events carry ``authority`` only inside their requestor commitment, with the
        requestor and the reason (ADR 0017); the receipt holds the opening.

        Raises InvalidInputError (and its kinds) for a bad request, ArtifactNotFoundError for an
        unknown artifact, InvalidInputError when an entity has no artifact in the scopes named
        (unless ``allow_empty``), StorageError if the store fails: nothing is recorded then.
        """
        terms = ForgetTerms(
            level, capabilities, requestor, authority, reason, entity_uri, scope, source
        )
        return self.forget_with(terms, artifact_id=artifact_id, allow_empty=allow_empty)

    def forget_with(
        self,
        terms: ForgetTerms,
        *,
        artifact_id: str | Sequence[str] | None = None,
        allow_empty: bool = False,
    ) -> ForgetReceipt:
        """``forget`` with its terms in one value: the artifacts named, or else every artifact
        about ``terms.entity_uri`` in the scopes of ``terms.scope``. Raises as ``forget``."""
        validate_level(terms.level)  # bad terms are refused before anything is read
        validate_capabilities(list(terms.capabilities))
        with self._lock, self.db.transaction() as tx:
            self._lock_epoch(tx)
            targets = self._targets(tx, artifact_id, terms.entity_uri, terms.scope)
            if not targets and not allow_empty:
                raise InvalidInputError(
                    f"forget: entity {terms.entity_uri} has no artifact in {terms.scope}"
                )
            receipt, appended = self._record_request(tx, targets, terms)
        if appended is None:
            return receipt
        self.checkpoints.log.publish(appended)
        if self._pending_count() >= self.settings.batch_size:
            self.commit_due()
        return receipt

    def forget_in(
        self, tx: Transaction, artifact_ids: Sequence[ArtifactId], terms: ForgetTerms
    ) -> Callable[[], None]:
        """Record, inside ``tx``, a forget request on these terms for ``artifact_ids`` (new
        artifacts a tombstone covers: ADR 0018); reads of them stop when ``tx`` commits.
        Returns what to call once it has committed.

        A caller that writes rows an epoch commit may wait on takes the epoch lock before them
        (``lock_epoch_in``: a put does it first thing). Raises as ``forget``.
        """
        self._lock_epoch(tx)
        _, appended = self._record_request(tx, sorted(set(artifact_ids)), terms)
        if appended is None:
            return lambda: None
        staged = appended
        return lambda: self.checkpoints.log.publish(staged)

    def lock_epoch_in(self, tx: Transaction) -> None:
        """Take the lock that serialises log appends with epoch commits, inside ``tx``."""
        self._lock_epoch(tx)

    def _record_request(
        self, tx: Transaction, targets: Sequence[ArtifactId], terms: ForgetTerms
    ) -> tuple[ForgetReceipt, StagedAppend | None]:
        """Append a request's events to the log and record it, inside ``tx`` (epoch locked);
        an earlier request that covers it is answered instead, and nothing is appended."""
        level = validate_level(terms.level)
        caps = validate_capabilities(list(terms.capabilities))
        now = self._clock()
        requested_at = format_time(now)
        not_before = format_time(now + self.settings.destruction_window)
        salt = secrets.token_bytes(32)
        opening_value: dict[str, JsonValue] = {
            "requestor": terms.requestor,
            "authority": terms.authority,
            "reason": terms.reason,
        }
        if terms.entity_uri is not None:
            opening_value |= {"entity_uri": terms.entity_uri, "scope": _scope_json(terms.scope)}
        commitment = requestor_commitment(salt, opening_value)
        request_id = new_uuid7()
        existing = self._covering_request(tx, targets, level, caps, terms.source)
        if existing is not None:
            return self._existing_receipt(tx, existing), None
        destroyed = self._destroyed_capabilities(tx, targets) if level >= 1 else {}
        event_ids = new_uuid7s(len(targets))
        encoded = self._forget_events(
            event_ids,
            targets,
            {
                a: tuple(c for c in CAPABILITIES if c in caps or c in destroyed.get(a, ()))
                for a in targets
            },
            level=level,
            authority=COMMITTED_AUTHORITY,
            commitment=commitment,
            requested_at=requested_at,
        )
        appended = self.checkpoints.log.append_in(tx, encoded)
        tx.execute(
            "INSERT INTO forget_requests (id, level, capabilities, authority, "
            "requestor_commitment, opening, source, state, requested_at, not_before) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (
                request_id,
                level,
                _dump(list(caps)),
                terms.authority,
                commitment,
                _dump({"salt": salt.hex(), "value": opening_value}),
                terms.source,
                requested_at,
                not_before,
            ),
        )
        rows = [
            (event_id, request_id, aid, appended.first_index + i, raw.decode("utf-8"))
            for i, (event_id, raw, aid) in enumerate(zip(event_ids, encoded, targets, strict=True))
        ]
        tx.executemany(
            "INSERT INTO forget_events (event_id, request_id, artifact_id, log_index, "
            "event_json) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        self._mark_states(
            tx,
            targets=targets,
            level=level,
            caps=caps,
            request_id=request_id,
            at=requested_at,
        )
        receipt = ForgetReceipt(
            request_id,
            level,
            caps,
            tuple((r[0], r[2], r[3]) for r in rows),
            requested_at,
            not_before,
            commitment,
            {"salt": salt.hex(), "value": opening_value},
        )
        return receipt, appended

    def _covering_request(
        self,
        tx: Transaction,
        targets: Sequence[ArtifactId],
        level: int,
        caps: Sequence[Capability],
        source: str | None,
    ) -> str | None:
        """The earliest request, not cancelled, that forgets every one of ``targets`` at
        ``level`` with at least ``caps`` (level 0: whose revocation is still the one in effect),
        or None. It must have the same source, except that a direct request (no source) is
        answered by another source's level-1/2 request already executed for every target: a
        tombstone's revocation cancels only what is pending, so revoking the tombstone behind
        one request never cancels what another asked for."""
        if not targets:
            return None
        covered: dict[str, set[str]] = {}
        for request_id, aid, request_level, request_caps, request_source, epoch in _select_in(
            tx, _LIVE_EVENTS, targets
        ):
            # An executed erasure is beyond any revocation: it may answer a direct request.
            settled = source is None and level >= 1 and epoch is not None
            if (
                request_level == level
                and (request_source == source or settled)
                and set(caps) <= set(parse_json(request_caps))
            ):
                covered.setdefault(request_id, set()).add(aid)
        wanted = set(targets)
        candidates = sorted(r for r, ids in covered.items() if ids >= wanted)
        if level == 0 and candidates:
            in_effect = {
                (a, r)
                for a, r in _select_in(
                    tx,
                    "SELECT artifact_id, request_id FROM (SELECT artifact_id, request_id "
                    "FROM artifact_states WHERE status = 'revoked') AS revoked",
                    targets,
                )
            }
            candidates = [r for r in candidates if all((a, r) in in_effect for a in wanted)]
        return candidates[0] if candidates else None

    def _existing_receipt(self, tx: Transaction, request_id: str) -> ForgetReceipt:
        """The answer of an idempotent forget: the existing request, without its opening."""
        row = tx.fetchone(
            "SELECT level, capabilities, state, requested_at, not_before, requestor_commitment "
            "FROM forget_requests WHERE id = ?",
            (request_id,),
        )
        if row is None:
            raise StorageError(f"store: forget request {request_id} vanished")
        events = tx.fetchall(
            "SELECT event_id, artifact_id, log_index FROM forget_events WHERE request_id = ? "
            "ORDER BY log_index",
            (request_id,),
        )
        return ForgetReceipt(
            request_id,
            int(row[0]),
            validate_capabilities(parse_json(row[1])),
            tuple((e, ArtifactId(a), int(i)) for e, a, i in events),
            row[3],
            row[4],
            row[5],
            None,
            state=row[2],
            existing=True,
        )

    def _destroyed_capabilities(
        self, tx: Transaction, targets: Sequence[ArtifactId]
    ) -> dict[str, set[str]]:
        """Per artifact, the capabilities whose keys an executed level-1 or level-2 forget
        destroyed: they cannot come back, so a later event may state them (docs/adr/0019)."""
        destroyed: dict[str, set[str]] = {}
        for aid, request_caps in _select_in(tx, _EXECUTED_ERASURES, targets):
            destroyed.setdefault(aid, set()).update(parse_json(request_caps))
        return destroyed

    def _forget_events(
        self,
        event_ids: Sequence[str],
        targets: Sequence[ArtifactId],
        capabilities: Mapping[ArtifactId, tuple[Capability, ...]],
        **common: Any,
    ) -> list[bytes]:
        """The JCS bytes of each target's forget event (``event_ids[i]`` for ``targets[i]``),
        made per group of artifacts that share a capability set."""
        groups: dict[tuple[Capability, ...], list[int]] = {}
        for index, aid in enumerate(targets):
            groups.setdefault(capabilities[aid], []).append(index)
        encoded = [b""] * len(targets)
        for caps, indices in groups.items():
            entries = forget_event_entries(
                event_ids=[event_ids[i] for i in indices],
                artifacts=[targets[i] for i in indices],
                capabilities=caps,
                **common,
            )
            for index, entry in zip(indices, entries, strict=True):
                encoded[index] = entry
        return encoded

    def _mark_states(
        self,
        tx: Transaction,
        *,
        targets: Sequence[ArtifactId],
        level: int,
        caps: Sequence[Capability],
        request_id: str,
        at: str,
    ) -> None:
        """Stop reads at once: revoked (level 0) or suppressed until executed.

        One row per artifact says why reads stop; its status, level and request are those of
        the request that weighs most on the ``decrypt`` capability (forgotten, then suppressed,
        then revoked), so a later, lighter request never hides a heavier one (a revocation
        does not mask a pending erasure); its capabilities are every one asked for so far."""
        status = "revoked" if level == 0 else "suppressed"
        weight = _read_weight(status, caps)
        existing = {
            a: (s, set(parse_json(c)))
            for a, s, c in _select_in(
                tx, "SELECT artifact_id, status, capabilities FROM artifact_states", targets
            )
        }
        fresh, replaced, merged = [], [], []
        caps_json = _dump(list(caps))
        for aid in targets:
            prior = existing.get(aid)
            if prior is None:
                fresh.append((aid, status, level, caps_json, request_id, at))
                continue
            union = _dump([c for c in CAPABILITIES if c in prior[1] or c in caps])
            if weight >= _read_weight(prior[0], prior[1]):
                replaced.append((status, level, union, request_id, at, aid))
            else:
                merged.append((union, at, aid))
        tx.executemany(
            "INSERT INTO artifact_states (artifact_id, status, level, capabilities, request_id, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            fresh,
        )
        tx.executemany(
            "UPDATE artifact_states SET status = ?, level = ?, capabilities = ?, request_id = ?, "
            "updated_at = ? WHERE artifact_id = ?",
            replaced,
        )
        tx.executemany(
            "UPDATE artifact_states SET capabilities = ?, updated_at = ? WHERE artifact_id = ?",
            merged,
        )

    def _pending_count(self) -> int:
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT COUNT(*) FROM forget_events WHERE epoch IS NULL")
        return int(row[0]) if row else 0

    # -- epochs --------------------------------------------------------------------------------

    def _due_events(self, tx: Transaction, now: str) -> list[_DueEvent]:
        rows = tx.fetchall(
            "SELECT e.event_id, e.request_id, e.artifact_id, r.level, r.capabilities, "
            "e.event_json FROM forget_events e JOIN forget_requests r ON r.id = e.request_id "
            "WHERE e.epoch IS NULL AND r.state = 'pending' AND r.not_before <= ? "
            "AND NOT EXISTS (SELECT 1 FROM legal_hold_artifacts h JOIN legal_holds l "
            "ON l.id = h.hold_id WHERE h.artifact_id = e.artifact_id AND l.released_at IS NULL) "
            "ORDER BY e.log_index",
            (now,),
        )
        capabilities = {text: tuple(parse_json(text)) for text in {r[4] for r in rows}}
        return [
            _DueEvent(r[0], r[1], ArtifactId(r[2]), r[3], capabilities[r[4]], r[5].encode("utf-8"))
            for r in rows
        ]

    def _execute_keys(
        self, due: list[_DueEvent], progress: Progress | None = None
    ) -> list[RootDestruction]:
        """Level 1 and 2: forget the capability keys in one key-tree batch per capability set
        and destroy the old roots; the destructions are recorded by the epoch's transaction.
        Batches an interrupted epoch left behind are destroyed and recorded first."""
        custody = self.node.vault.custody
        custody.destroy_due()
        groups: dict[tuple[Capability, ...], list[ArtifactId]] = {}
        for event in due:
            if event.level >= 1:
                groups.setdefault(event.capabilities, []).append(event.artifact_id)
        destroyed: list[RootDestruction] = []
        keys_total = sum(len(ids) for ids in groups.values())
        keys_done = 0
        for caps, ids in groups.items():
            if progress is not None:
                progress("destroying keys", keys_done, keys_total)
            batch = custody.destroy_roots(custody.begin_forget(ids, caps))
            keys_done += len(ids)
            destroyed.extend(batch)
            bound = next((d for d in batch if d.entry.tree == "wrap"), batch[0] if batch else None)
            group = [e for e in due if e.level >= 1 and e.capabilities == caps]
            fresh = set() if bound is None else {aid for aid, _ in bound.entry.leaves}
            # Keys this batch did not find were forgotten by an earlier batch (a crash fell
            # between it and its epoch commit, or a level-1 forget came first): bind its receipt.
            earlier = self._earlier_receipts([a for a in ids if a not in fresh], caps)
            bound_hash = None if bound is None else bound.receipt.digest().hex()
            for event in group:
                if event.artifact_id in fresh:
                    event.receipt_hash = bound_hash
                else:
                    event.receipt_hash = earlier.get(event.artifact_id)
        if progress is not None and keys_total:
            progress("destroying keys", keys_total, keys_total)
        return destroyed

    def _earlier_receipts(
        self, ids: Sequence[ArtifactId], caps: Sequence[Capability]
    ) -> dict[ArtifactId, str]:
        """Per artifact, the receipt of the key-tree batch that already forgot these keys
        (the ``wrap`` tree's when there is one, as for a fresh batch)."""
        wanted = {(a, c) for a in ids for c in caps}
        if not wanted:
            return {}
        with self.db.transaction(write=False) as tx:
            entries = SqlKeyTreeNodes(tx).journal(["destroyed"])
        found: dict[ArtifactId, str] = {}
        for entry in sorted(entries, key=lambda e: e.tree == "wrap"):
            if entry.receipt_hash is not None:
                for artifact_id, capability in entry.leaves:
                    if (artifact_id, capability) in wanted:
                        found[artifact_id] = entry.receipt_hash
        return found

    def _latest_tombstone_events(
        self, tx: Transaction, ids: Sequence[str]
    ) -> dict[str, tuple[int, str, str | None]]:
        """Per artifact of ``ids`` that a committed level-2 forget replaced, its latest such
        event: (log index, JCS text, bound receipt hash). The SMT's TOMBSTONE binds it; the
        artifact's row does not hold it (docs/adr/0014)."""
        latest: dict[str, tuple[int, str, str | None]] = {}
        for aid, index, event_json, receipt_hash in _select_in(tx, _COMMITTED_LEVEL_2, ids):
            if aid not in latest or index > latest[aid][0]:
                latest[aid] = (int(index), event_json, receipt_hash)
        return latest

    def _tombstone_records(self, tx: Transaction, ids: Sequence[str]) -> dict[str, bytes]:
        """The TOMBSTONE leaf record (JCS bytes) of each of ``ids`` that a committed level-2
        forget replaced, as the SMT holds it."""
        return {
            aid: _tombstone_of(event_json.encode("utf-8"), receipt_hash)
            for aid, (_, event_json, receipt_hash) in self._latest_tombstone_events(tx, ids).items()
        }

    def leaf_record(self, artifact_id: str) -> tuple[dict[str, JsonValue], bool]:
        """The SMT leaf record of an artifact as the latest epoch committed it, or as the next
        will when it is still pending (second value). Raises ArtifactNotFoundError."""
        aid = parse_artifact_id(artifact_id)
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT leaf_record, leaf_pending FROM artifacts WHERE artifact_id = ?", (aid,)
            )
            if row is None:
                raise ArtifactNotFoundError(f"artifact {aid} is not stored on this node")
            tombstone = self._tombstone_records(tx, [aid]).get(aid)
        if tombstone is not None and not row[1]:
            return parse_json(tombstone), False
        return parse_json(row[0]), bool(row[1])

    def _unlogged_receipts(self, tx: Transaction) -> list[tuple[str, bytes]]:
        rows = tx.fetchall(
            "SELECT receipt_hash, receipt FROM destruction_receipts WHERE log_index IS NULL "
            "ORDER BY destroyed_at, receipt_hash"
        )
        return [(r[0], bytes(r[1])) for r in rows]

    def commit_due(
        self,
        now: datetime | None = None,
        *,
        force: bool = False,
        progress: Progress | None = None,
    ) -> EpochCommit | None:
        """Execute every due forget event and commit one epoch: SMT batch (new ACTIVE leaves,
        revocations, TOMBSTONEs), destruction receipts and ``map_root`` in the log, a signed
        checkpoint. Returns None when there was nothing to commit (and not ``force``).
        ``progress`` is told of the keys destroyed, then of the epoch's commit.
        """
        moment = now or self._clock()
        with self._lock:
            with self.db.transaction(write=False) as tx:
                due = self._due_events(tx, format_time(moment))
            destroyed = self._execute_keys(due, progress)
            with self.db.transaction(write=False) as tx:
                # Receipts recorded outside an epoch (a window elapsed, a crash recovered),
                # then this epoch's, which its own transaction records.
                unlogged = self._unlogged_receipts(tx) + [
                    (d.receipt.digest().hex(), d.receipt.to_bytes()) for d in destroyed
                ]
                pending_json: dict[str, str] = {
                    r[0]: r[1]
                    for r in tx.fetchall(
                        "SELECT artifact_id, leaf_record FROM artifacts WHERE leaf_pending = 1"
                    )
                }
                pending = {a: parse_json(r) for a, r in pending_json.items()}
                # A TOMBSTONE does not depend on the leaf it replaces; other changes do.
                changing = [e.artifact_id for e in due if e.level < 2]
                current: dict[str, JsonValue] = {
                    a: parse_json(r)
                    for a, r in _select_in(
                        tx, "SELECT artifact_id, leaf_record FROM artifacts", changing
                    )
                    if r is not None
                }
                current |= self._tombstone_records(tx, changing)
                # Holds, releases, restores and cancellations are logged outside an epoch:
                # they are due for a checkpoint too.
                signed = tx.fetchone("SELECT MAX(tree_size) FROM checkpoints")
                uncovered = self.checkpoints.log.size_in(tx) > int((signed or (0,))[0] or 0)
            if not (due or unlogged or pending or uncovered or force):
                return None
            leaves: dict[str, JsonValue] = dict(current) | pending
            for event in due:
                leaves[event.artifact_id] = _next_record(leaves.get(event.artifact_id), event)
            touched = set(pending) | set(current) | {e.artifact_id for e in due if e.level == 2}
            changed = {
                a: r if isinstance(r, bytes) else canonical_json(r)
                for a, r in leaves.items()
                if a in touched
            }
            updates = {smt_key(a): sha256(r) for a, r in changed.items()}
            entries = [receipt for _, receipt in unlogged]
            tombstoned = frozenset(e.artifact_id for e in due if e.level == 2)

            after_commit: list[Callable[[], None]] = []

            def bookkeeping(tx: Transaction, epoch: int, first_index: int) -> None:
                self.node.vault.custody.record_destructions(SqlKeyTreeNodes(tx), destroyed)
                after_commit[:] = self._record_epoch(
                    tx,
                    epoch,
                    first_index,
                    _Executed(due, changed, pending_json, unlogged, tombstoned),
                )

            if progress is not None:
                progress("committing the epoch", 0, len(updates) + len(entries))
            commit = self.checkpoints.commit_epoch(updates, entries, now=moment, within=bookkeeping)
            if progress is not None:
                progress(
                    "committing the epoch", len(updates) + len(entries), len(updates) + len(entries)
                )
            for follow_up in after_commit:
                try:
                    follow_up()
                except StorageError as e:
                    # The epoch is committed and what it forgot no query returns; the space is
                    # reclaimed by the next epoch that deletes, or by autovacuum.
                    _log.warning("after epoch %d: %s", commit.epoch, e)
            return commit

    def _record_epoch(
        self, tx: Transaction, epoch: int, first_index: int, done: _Executed
    ) -> list[Callable[[], None]]:
        """Inside the epoch's transaction: what it executed, which leaves it committed. Returns
        the derived erasers' work for after the commit."""
        due, changed, unlogged = done.due, done.changed, done.unlogged
        pending_json, tombstoned = done.pending_json, done.tombstoned
        # This epoch's own receipts were recorded above in the same transaction.
        tx.executemany(
            "UPDATE destruction_receipts SET log_index = ? WHERE receipt_hash = ?",
            [(first_index + i, h) for i, (h, _) in enumerate(unlogged)],
        )
        tx.executemany(
            "UPDATE forget_events SET epoch = ?, receipt_hash = ? WHERE event_id = ?",
            [(epoch, e.receipt_hash, e.event_id) for e in due],
        )
        tx.executemany(
            "UPDATE artifacts SET leaf_record = ?, leaf_pending = 0 WHERE artifact_id = ? "
            "AND (leaf_pending = 0 OR leaf_record = ?)",
            [
                (
                    record.decode("utf-8"),
                    artifact_id,
                    pending_json.get(artifact_id, ""),
                )
                for artifact_id, record in changed.items()
                if artifact_id not in tombstoned or artifact_id in pending_json
            ],
        )
        executed = [e for e in due if e.level >= 1]
        tx.executemany(
            "UPDATE artifact_states SET status = 'forgotten' WHERE artifact_id = ? "
            "AND request_id = ?",
            [(e.artifact_id, e.request_id) for e in executed],
        )
        decrypt_destroyed = [e for e in executed if "decrypt" in e.capabilities]
        self._mark_decrypt_forgotten(tx, decrypt_destroyed)
        # Derived data (full-text entries of facts and cards) goes in the same epoch as the
        # decrypt key it was derived under.
        follow_ups = [
            erase(tx, [e.artifact_id for e in decrypt_destroyed]) for erase in self.derived_erasers
        ]
        tx.executemany(
            "UPDATE forget_requests SET state = 'done', committed_epoch = ? WHERE id = ? "
            "AND NOT EXISTS (SELECT 1 FROM forget_events WHERE request_id = ? AND epoch IS NULL)",
            [(epoch, r, r) for r in {e.request_id for e in due}],
        )
        return [f for f in follow_ups if f is not None]

    def _mark_decrypt_forgotten(self, tx: Transaction, erased: Sequence[_DueEvent]) -> None:
        """Inside the epoch's transaction: the ``decrypt`` key of each of ``erased`` is gone, so
        its artifact's reads are over for good, whatever request the state row named (a
        revocation or a cancelled request may have taken its place since)."""
        if not erased:
            return
        rows = {
            a: (s, set(parse_json(c)))
            for a, s, c in _select_in(
                tx,
                "SELECT artifact_id, status, capabilities FROM artifact_states",
                [e.artifact_id for e in erased],
            )
        }
        at = format_time(self._clock())
        for event in erased:
            prior = rows.get(event.artifact_id)
            if prior is not None and _read_weight(*prior) == 3:
                continue
            caps = set(event.capabilities) | (prior[1] if prior else set())
            union = _dump([c for c in CAPABILITIES if c in caps])
            if prior is None:
                tx.execute(
                    "INSERT INTO artifact_states (artifact_id, status, level, capabilities, "
                    "request_id, updated_at) VALUES (?, 'forgotten', ?, ?, ?, ?)",
                    (event.artifact_id, event.level, union, event.request_id, at),
                )
            else:
                tx.execute(
                    "UPDATE artifact_states SET status = 'forgotten', level = ?, "
                    "capabilities = ?, request_id = ?, updated_at = ? WHERE artifact_id = ?",
                    (event.level, union, event.request_id, at, event.artifact_id),
                )
            rows[event.artifact_id] = ("forgotten", caps)

    def epoch_health(self) -> EpochHealth:
        """What the epoch loop last recorded of its attempts (``run_epochs``)."""
        return self._epoch_health

    def run_epochs(
        self,
        stop: threading.Event,
        *,
        wait: Callable[[float], bool] | None = None,
        retry_cap: timedelta = EPOCH_RETRY_CAP,
    ) -> None:
        """Commit due work every ``epoch_interval`` and a heartbeat epoch when idle, until
        ``stop`` is set (``oblivio serve`` runs it in a daemon thread); ``wait(seconds)``
        pauses between attempts and says whether to stop (``stop.wait`` by default).

        No error ends the loop, or acknowledged forgets would stay pending forever: a failed
        attempt is logged (with its traceback unless it is one of oblivio's errors), recorded
        in ``epoch_health``, and retried after ``epoch_retry_delay`` (doubling up to
        ``retry_cap``). A failed attempt loses nothing: its events stay pending, a key-tree
        batch it journalled keeps its old root alive until the next attempt's ``destroy_due``
        destroys it and records the receipt, and the events then bind that receipt
        (docs/adr/0020).
        """
        pause = wait or stop.wait
        interval = self.settings.epoch_interval
        failures, delay = 0, interval
        while not pause(delay.total_seconds()):
            try:
                committed = self.commit_due() or self.checkpoints.heartbeat(
                    self.settings.heartbeat, now=self._clock()
                )
            except Exception as error:  # any error: a dead loop leaves forgets pending forever
                failures += 1
                delay = epoch_retry_delay(interval, failures, retry_cap)
                self._epoch_failed(error, failures, delay)
                continue
            if failures:
                _log.warning("epoch commits work again after %d failed attempts", failures)
            failures, delay = 0, interval
            health = self._epoch_health
            self._epoch_health = EpochHealth(
                last_success_at=self._clock(),
                last_epoch=health.last_epoch if committed is None else committed.epoch,
            )

    def _epoch_failed(self, error: Exception, failures: int, delay: timedelta) -> None:
        """Log a failed epoch attempt and record it in ``epoch_health``."""
        now = self._clock()
        health = self._epoch_health
        self._epoch_health = replace(
            health,
            consecutive_failures=failures,
            failing_since=health.failing_since if health.failing else now,
            last_error=error_kind(error),
            next_attempt_at=now + delay,
        )
        seconds = delay.total_seconds()
        if isinstance(error, OblivioError):
            message = " ".join(str(error).split())
            _log.warning(
                "epoch attempt failed (%d in a row), retrying in %.0f s: %s: %s",
                failures,
                seconds,
                type(error).__name__,
                message,
            )
        else:
            _log.exception(
                "epoch attempt failed unexpectedly (%d in a row), retrying in %.0f s",
                failures,
                seconds,
            )

    # -- level 0 reversal, legal holds, cancellation ------------------------------------------

    def restore(self, artifact_id: str, *, authority: str, reason: str = "") -> str:
        """Reverse a level-0 revocation; logged. Raises ConflictError unless revoked (level 1
        and 2 cannot be reversed)."""
        aid = parse_artifact_id(artifact_id)
        with self._lock, self.db.transaction() as tx:
            self._lock_epoch(tx)
            row = tx.fetchone(
                "SELECT status, level FROM artifact_states WHERE artifact_id = ?", (aid,)
            )
            if row is None or row[0] != "revoked":
                state = "not revoked" if row is None else f"{row[0]} at level {row[1]}"
                raise ConflictError(f"artifact {aid} cannot be restored: it is {state}")
            event_id = new_uuid7()
            entry = {
                "type": "restore",
                "id": event_id,
                "artifacts": [aid],
                "authority": authority,
                "requested_at": format_time(self._clock()),
            }
            appended = self.checkpoints.log.append_in(tx, [canonical_json(entry)])
            tx.execute("DELETE FROM artifact_states WHERE artifact_id = ?", (aid,))
            leaf = tx.fetchone("SELECT leaf_record FROM artifacts WHERE artifact_id = ?", (aid,))
            if leaf is not None:
                record = parse_json(leaf[0])
                if record.get("state") == "ACTIVE":
                    record["policy"]["revoked"] = False
                    tx.execute(
                        "UPDATE artifacts SET leaf_record = ?, leaf_pending = 1 "
                        "WHERE artifact_id = ?",
                        (_dump(record), aid),
                    )
        self.checkpoints.log.publish(appended)
        return event_id

    def place_hold(
        self,
        *,
        artifact_id: str | None = None,
        entity_uri: str | None = None,
        scope: object = "*",
        authority: str,
        reason: str,
        source: str | None = None,
    ) -> tuple[str, list[ArtifactId]]:
        """Place a legal hold (seed 001): key destruction of the covered artifacts waits until
        it is released; logged with artifact ids and a commitment to its authority and reason
        only (ADR 0017). Returns (hold id, artifacts)."""
        with self._lock, self.db.transaction() as tx:
            self._lock_epoch(tx)
            targets = self._targets(tx, artifact_id, entity_uri, scope)
            hold_id, appended = self._record_hold(tx, targets, authority, reason, source)
        self.checkpoints.log.publish(appended)
        return hold_id, targets

    def place_hold_in(
        self,
        tx: Transaction,
        artifact_ids: Sequence[ArtifactId],
        *,
        authority: str,
        reason: str,
        source: str,
    ) -> Callable[[], None]:
        """Place a legal hold on ``artifact_ids`` inside ``tx`` (new artifacts a legal-hold
        tombstone covers: ADR 0018). Returns what to call once ``tx`` has committed."""
        self._lock_epoch(tx)
        _, appended = self._record_hold(tx, sorted(set(artifact_ids)), authority, reason, source)
        return lambda: self.checkpoints.log.publish(appended)

    def _record_hold(
        self,
        tx: Transaction,
        targets: Sequence[ArtifactId],
        authority: str,
        reason: str,
        source: str | None,
    ) -> tuple[str, StagedAppend]:
        hold_id = new_uuid7()
        at = format_time(self._clock())
        commitment, opening = _commit_authority({"authority": authority, "reason": reason})
        entry = {
            "type": "legal_hold",
            "id": hold_id,
            "action": "place",
            "artifacts": list(targets),
            "authority": COMMITTED_AUTHORITY,
            "requestor_commitment": commitment,
            "at": at,
        }
        appended = self.checkpoints.log.append_in(tx, [canonical_json(entry)])
        tx.execute(
            "INSERT INTO legal_holds (id, authority, reason, source, placed_at, opening) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (hold_id, authority, reason, source, at, opening),
        )
        tx.executemany(
            "INSERT INTO legal_hold_artifacts (hold_id, artifact_id) VALUES (?, ?)",
            [(hold_id, a) for a in targets],
        )
        return hold_id, appended

    def release_hold(self, hold_id: str, *, authority: str) -> list[ArtifactId]:
        """Release a hold; destruction it deferred runs at the next epoch. Logged with a
        commitment to the authority (ADR 0017). Raises NotFoundError for an unknown hold,
        ConflictError if it is already released."""
        with self._lock, self.db.transaction() as tx:
            self._lock_epoch(tx)
            row = tx.fetchone("SELECT released_at FROM legal_holds WHERE id = ?", (hold_id,))
            if row is None:
                raise NotFoundError(f"no legal hold {hold_id}")
            if row[0] is not None:
                raise ConflictError(f"legal hold {hold_id} was released at {row[0]}")
            targets = [
                ArtifactId(r[0])
                for r in tx.fetchall(
                    "SELECT artifact_id FROM legal_hold_artifacts WHERE hold_id = ? "
                    "ORDER BY artifact_id",
                    (hold_id,),
                )
            ]
            at = format_time(self._clock())
            commitment, opening = _commit_authority({"authority": authority})
            entry = {
                "type": "legal_hold",
                "id": hold_id,
                "action": "release",
                "artifacts": targets,
                "authority": COMMITTED_AUTHORITY,
                "requestor_commitment": commitment,
                "at": at,
            }
            appended = self.checkpoints.log.append_in(tx, [canonical_json(entry)])
            tx.execute(
                "UPDATE legal_holds SET released_at = ?, release_opening = ? WHERE id = ?",
                (at, opening, hold_id),
            )
        self.checkpoints.log.publish(appended)
        return targets

    def cancel_from_source(self, source: str) -> tuple[list[ArtifactId], list[ArtifactId]]:
        """Cancel what ``source`` (a tombstone) asked for: events not yet executed are dropped
        and their reads restored; holds it placed are released. Returns (restored, erased): the
        artifacts already erased at level 1 or 2 stay gone."""
        restored: list[ArtifactId] = []
        erased: list[ArtifactId] = []
        holds = []
        with self._lock, self.db.transaction() as tx:
            self._lock_epoch(tx)
            for request_id, state in tx.fetchall(
                "SELECT id, state FROM forget_requests WHERE source = ?", (source,)
            ):
                for artifact_id, epoch, level in tx.fetchall(
                    "SELECT e.artifact_id, e.epoch, r.level FROM forget_events e JOIN "
                    "forget_requests r ON r.id = e.request_id WHERE e.request_id = ?",
                    (request_id,),
                ):
                    if epoch is not None and level >= 1:
                        erased.append(ArtifactId(artifact_id))
                        continue
                    restored.append(ArtifactId(artifact_id))
                    tx.execute(
                        "DELETE FROM artifact_states WHERE artifact_id = ? AND request_id = ?",
                        (artifact_id, request_id),
                    )
                if state == "pending":
                    tx.execute(
                        "UPDATE forget_requests SET state = 'cancelled' WHERE id = ?", (request_id,)
                    )
                    tx.execute(
                        "UPDATE forget_events SET epoch = -1 "
                        "WHERE request_id = ? AND epoch IS NULL",
                        (request_id,),
                    )
            self._remark_pending(tx, restored)
            holds = [
                r[0]
                for r in tx.fetchall(
                    "SELECT id FROM legal_holds WHERE source = ? AND released_at IS NULL",
                    (source,),
                )
            ]
        for hold_id in holds:
            self.release_hold(hold_id, authority=f"revocation of {source}")
        return restored, erased

    def _remark_pending(self, tx: Transaction, ids: Sequence[ArtifactId]) -> None:
        """After a cancellation lifted reads of ``ids``: suppress them again for the requests
        still pending on them, in log order (one cancelled request must not lift another's)."""
        pending = _select_in(tx, _PENDING_EVENTS, ids)
        for request_id, aid, level, caps, at, _ in sorted(pending, key=lambda r: r[5]):
            self._mark_states(
                tx,
                targets=[ArtifactId(aid)],
                level=level,
                caps=validate_capabilities(parse_json(caps)),
                request_id=request_id,
                at=at,
            )

    # -- proofs --------------------------------------------------------------------------------

    def prove(self, artifact_id: str) -> dict[str, JsonValue]:
        """The Proof of Forgetting of a level-2 forgotten artifact under the latest checkpoint,
        checked by the offline verifier before it is returned.

        Raises ArtifactNotFoundError, or ConflictError when the artifact has no committed
        level-2 forget (pending, level 0 or 1: proofs exist for level 2 only).
        """
        latest = self.checkpoints.latest_or_first_checkpoint()
        return self._prove_at(
            parse_artifact_id(artifact_id), self._checkpoint_context(latest.epoch)
        )

    def _checkpoint_context(self, epoch: int) -> _CheckpointContext:
        stored = self.checkpoints.checkpoint(epoch)
        map_root, inclusion = self.checkpoints.map_root_inclusion(epoch)
        return _CheckpointContext(epoch, stored.note, stored.size, map_root, inclusion)

    def prove_request(
        self, request_id: str, progress: Progress | None = None
    ) -> dict[str, JsonValue]:
        """One bundle with a proof for every artifact of a request, under one checkpoint;
        ``progress`` is told of each proof made."""
        with self.db.transaction(write=False) as tx:
            ids = [
                ArtifactId(r[0])
                for r in tx.fetchall(
                    "SELECT artifact_id FROM forget_events WHERE request_id = ? ORDER BY log_index",
                    (request_id,),
                )
            ]
        if not ids:
            raise NotFoundError(f"no forget request {request_id}")
        at = self._checkpoint_context(self.checkpoints.latest_or_first_checkpoint().epoch)
        proofs: list[dict[str, JsonValue]] = []
        for aid in ids:
            proofs.append(self._prove_at(aid, at))
            if progress is not None:
                progress("proving", len(proofs), len(ids))
        return bundle(proofs)

    def _prove_at(self, aid: ArtifactId, at: _CheckpointContext) -> dict[str, JsonValue]:
        with self.db.transaction(write=False) as tx:
            if tx.fetchone("SELECT 1 FROM artifacts WHERE artifact_id = ?", (aid,)) is None:
                raise ArtifactNotFoundError(f"artifact {aid} is not stored on this node")
            latest = self._latest_tombstone_events(tx, [aid]).get(aid)
            if latest is None:
                raise ConflictError(
                    f"artifact {aid} has no committed level-2 forget: proofs exist for level 2 "
                    "only, once its epoch has committed"
                )
            log_index, event_json, receipt_hash = latest
            receipt = None
            if receipt_hash is not None:
                row = tx.fetchone(
                    "SELECT receipt FROM destruction_receipts WHERE receipt_hash = ?",
                    (receipt_hash,),
                )
                if row is None:
                    raise StorageError(
                        f"store: the evidence of artifact {aid}'s tombstone is missing"
                    )
                receipt = parse_json(bytes(row[0]))
        record = parse_json(_tombstone_of(event_json.encode("utf-8"), receipt_hash))
        event = parse_json(event_json)
        _, _, smt_proof = self.checkpoints.smt.prove(smt_key(aid), version=at.epoch)
        proof = build_proof(
            artifact_id=aid,
            record=record,
            smt_proof=smt_proof,
            checkpoint=at.note,
            map_root=at.map_root,
            map_root_inclusion=at.map_root_inclusion,
            forget_event=event,
            log_inclusion=self.checkpoints.log.inclusion_proof(log_index, at.size),
            destruction_receipt=receipt,
        )
        verify_proof(proof, self.checkpoints.verifier_key)
        return proof

    def status(self, request_id: str) -> dict[str, JsonValue]:
        """A request's state and its events' epochs."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT level, capabilities, state, requested_at, not_before, committed_epoch "
                "FROM forget_requests WHERE id = ?",
                (request_id,),
            )
            if row is None:
                raise NotFoundError(f"no forget request {request_id}")
            events = tx.fetchall(
                "SELECT event_id, artifact_id, log_index, epoch FROM forget_events "
                "WHERE request_id = ? ORDER BY log_index",
                (request_id,),
            )
        return {
            "request_id": request_id,
            "level": row[0],
            "capabilities": parse_json(row[1]),
            "state": row[2],
            "requested_at": row[3],
            "not_before": row[4],
            "committed_epoch": row[5],
            "events": [
                {"event_id": e, "artifact_id": a, "log_index": i, "epoch": p}
                for e, a, i, p in events
            ],
        }


def _next_record(current: JsonValue, event: _DueEvent) -> JsonValue:
    """The leaf record after executing ``event`` on an artifact whose leaf is ``current``: a
    TOMBSTONE as its JCS bytes (``tombstone_leaf_json``), other records as parsed JSON."""
    if event.level == 2:
        return _tombstone_of(event.event_bytes, event.receipt_hash)
    if isinstance(current, bytes):
        return current  # a TOMBSTONE made earlier in this epoch: level 0 or 1 change nothing
    if not isinstance(current, dict) or current.get("state") != "ACTIVE":
        # Already a TOMBSTONE: a later level 0 or 1 request changes nothing in the leaf.
        return dict(current) if isinstance(current, dict) else {}
    policy = dict(current.get("policy", {}))
    capabilities = list(current.get("capabilities", []))
    if event.level == 0:
        policy["revoked"] = True
    else:
        capabilities = [c for c in capabilities if c not in event.capabilities]
    key_commitment = bytes.fromhex(str(current["key_commitment"]))
    return active_record(
        key_commitment,
        capabilities,
        revoked=bool(policy.get("revoked")),
        legal_hold=bool(policy.get("legal_hold")),
    )


def _tombstone_of(event_bytes: bytes, receipt_hash: str | None) -> bytes:
    """The TOMBSTONE record (JCS bytes) binding a logged forget event (its exact bytes) and
    the hash of its destruction receipt."""
    receipt = None if receipt_hash is None else bytes.fromhex(receipt_hash)
    return tombstone_leaf_json(sha256(event_bytes), receipt)


def _commit_authority(value: dict[str, JsonValue]) -> tuple[str, str]:
    """A hold entry's commitment to its authority (and reason), and the opening as kept by the
    node: the requestor commitment of a forget event, with a salt of its own (ADR 0017)."""
    salt = secrets.token_bytes(32)
    return requestor_commitment(salt, value), _dump({"salt": salt.hex(), "value": value})


def _scope_json(scope: object) -> JsonValue:
    pattern = validate_scope_pattern(scope)
    return pattern if isinstance(pattern, str) else list(pattern)


_COMMITTED_LEVEL_2 = (
    "SELECT artifact_id, log_index, event_json, receipt_hash FROM ("
    "SELECT e.artifact_id AS artifact_id, e.log_index AS log_index, e.event_json AS event_json, "
    "e.receipt_hash AS receipt_hash FROM forget_events e JOIN forget_requests r "
    "ON r.id = e.request_id WHERE e.epoch > 0 AND r.level = 2) AS committed"
)
"""Level-2 forget events an epoch executed (for ``_select_in``: one row per event)."""

_LIVE_EVENTS = (
    "SELECT request_id, artifact_id, level, capabilities, source, epoch FROM ("
    "SELECT e.request_id AS request_id, e.artifact_id AS artifact_id, r.level AS level, "
    "r.capabilities AS capabilities, r.source AS source, e.epoch AS epoch FROM forget_events e "
    "JOIN forget_requests r ON r.id = e.request_id "
    "WHERE r.state <> 'cancelled' AND (e.epoch IS NULL OR e.epoch > 0)) AS live"
)
"""Forget events of requests that were not cancelled (for ``_select_in``)."""

_EXECUTED_ERASURES = (
    "SELECT artifact_id, capabilities FROM ("
    "SELECT e.artifact_id AS artifact_id, r.capabilities AS capabilities FROM forget_events e "
    "JOIN forget_requests r ON r.id = e.request_id WHERE e.epoch > 0 AND r.level >= 1) "
    "AS executed"
)
"""Level-1 and level-2 forget events an epoch executed: their keys are destroyed."""

_PENDING_EVENTS = (
    "SELECT request_id, artifact_id, level, capabilities, requested_at, log_index FROM ("
    "SELECT e.request_id AS request_id, e.artifact_id AS artifact_id, r.level AS level, "
    "r.capabilities AS capabilities, r.requested_at AS requested_at, "
    "e.log_index AS log_index FROM forget_events e JOIN forget_requests r "
    "ON r.id = e.request_id WHERE e.epoch IS NULL AND r.state = 'pending') AS pending"
)
"""Forget events not yet executed nor cancelled (for ``_select_in``)."""


def _read_weight(status: str, capabilities: Iterable[str]) -> int:
    """How much a state row weighs on reads: 0 when it does not touch ``decrypt``, then
    revoked (1) < suppressed (2) < forgotten (3)."""
    if "decrypt" not in capabilities:
        return 0
    return {"revoked": 1, "suppressed": 2, "forgotten": 3}[status]


def _select_in(tx: Transaction, sql: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
    """``sql WHERE artifact_id IN (…)`` in chunks (SQLite caps bound parameters)."""
    rows: list[tuple[Any, ...]] = []
    id_list = list(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        rows.extend(tx.fetchall(f"{sql} WHERE artifact_id IN ({marks})", chunk))
    return rows


def settings_from(config: Mapping[str, Any]) -> ForgetSettings:
    """Read the ``forgetting`` section of config.json (every field optional)."""
    defaults = ForgetSettings()

    def seconds(name: str, default: timedelta) -> timedelta:
        value = config.get(name)
        if value is None:
            return default
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise InvalidInputError(f"config forgetting.{name}: expected seconds >= 0")
        return timedelta(seconds=value)

    batch = config.get("batch_size", defaults.batch_size)
    if type(batch) is not int or batch < 1:
        raise InvalidInputError("config forgetting.batch_size: expected an integer >= 1")
    return ForgetSettings(
        batch_size=batch,
        epoch_interval=seconds("epoch_interval_seconds", defaults.epoch_interval),
        destruction_window=seconds("destruction_window_seconds", defaults.destruction_window),
        heartbeat=seconds("heartbeat_seconds", defaults.heartbeat),
        tombstone_level=validate_level(config.get("tombstone_level", defaults.tombstone_level)),
    )
