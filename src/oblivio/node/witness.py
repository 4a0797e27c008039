"""Witnesses (DESIGN.md §17, docs/adr/0021 to 0023): this node as a C2SP tlog-witness for its peers'
logs, and this node's own log asking its witnesses for cosignatures.

As a witness (``WitnessService``): the logs it witnesses come from ``oblivio witness add-log
ORIGIN VKEY``. ``add_checkpoint`` checks and persists in one write transaction (the witness
spec's atomicity: a slower request for an older size can never roll the stored size back),
then answers with its cosignature. A fork is kept as equivocation evidence and audited.

As a log (``CosignatureCollector``): the witnesses it asks come from ``oblivio witness use NAME
--url URL --key WKEY``. After each epoch, a background thread of ``oblivio serve`` sends the
latest checkpoint with a consistency proof from the size each witness last cosigned, retries
with a capped doubling delay, verifies the cosignature it gets and stores it by epoch; the
checkpoint service appends the stored lines to the note it serves (``/v1/checkpoint``,
``oblivio checkpoint``, every Proof of Forgetting made afterwards).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from oblivio.core.cosignature import (
    WitnessSigner,
    WitnessVerifier,
    derive_witness_key,
    parse_cosignature_line,
    parse_witness_key,
)
from oblivio.core.errors import (
    InvalidInputError,
    NotFoundError,
    OblivioError,
    VerificationError,
)
from oblivio.core.identifiers import format_time
from oblivio.core.note import parse_verifier_key
from oblivio.core.signing import SigningKey
from oblivio.core.witness import (
    AddCheckpointRequest,
    EquivocationError,
    EquivocationEvidence,
    UnknownLogError,
    WitnessConflictError,
    check_extension,
    open_submitted,
    parse_add_checkpoint,
    parse_size_body,
    submitted_checkpoint,
)
from oblivio.node.audit import AuditLog
from oblivio.node.checkpoints import CheckpointService, StoredCheckpoint
from oblivio.node.ids import new_uuid7
from oblivio.store.database import Database, Transaction

_log = logging.getLogger("oblivio.witness")

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


_SELECT_LOG = "SELECT verifier_key, size, root, note FROM witnessed_logs WHERE origin = ?"
_SELECT_LOG_FOR_UPDATE = _SELECT_LOG + " FOR UPDATE"


def witness_signer(name: str, identity_key: SigningKey) -> WitnessSigner:
    """The node's witness: its name and the cosigning key derived from its identity seed."""
    return WitnessSigner(name, derive_witness_key(identity_key.seed))


# -- the witness role ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessedLog:
    """A log this node witnesses and the latest checkpoint it cosigned for it."""

    origin: str
    verifier_key: str
    size: int
    root: bytes | None
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form for listings."""
        return {
            "origin": self.origin,
            "verifier_key": self.verifier_key,
            "size": self.size,
            "root": None if self.root is None else self.root.hex(),
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class StoredEquivocation:
    """Equivocation evidence as the witness keeps it."""

    id: str
    evidence: EquivocationEvidence
    verifier_key: str
    detected_at: str

    def to_dict(self) -> dict[str, Any]:
        """The evidence (``oblivio.equivocation.v1``) with the witness's bookkeeping."""
        return self.evidence.to_dict() | {
            "id": self.id,
            "verifier_key": self.verifier_key,
            "detected_at": self.detected_at,
        }


class WitnessService:
    """This node as a C2SP tlog-witness."""

    def __init__(
        self, db: Database, name: str, identity_key: SigningKey, clock: Clock = _utc_now
    ) -> None:
        self.db = db
        self.signer = witness_signer(name, identity_key)
        self.audit = AuditLog(db, clock)
        self._clock = clock

    @property
    def verifier_key(self) -> str:
        """The witness's cosignature verifier key (``oblivio witness key``)."""
        return self.signer.verifier_key

    def add_log(self, origin: str, verifier_key: str, *, actor: str | None = None) -> None:
        """Witness the log of ``origin`` signed by ``verifier_key`` (its C2SP note key, whose
        name must be the origin). Changing the key of a known log keeps its cosigned state.

        Raises InvalidInputError for a malformed key or one named otherwise than the origin.
        """
        try:
            verifier = parse_verifier_key(verifier_key)
        except VerificationError as e:
            raise InvalidInputError(f"witness add-log: {e}") from e
        if verifier.name != origin:
            raise InvalidInputError(
                f"witness add-log: the key is named {verifier.name!r}, not the origin {origin!r}"
            )
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE witnessed_logs SET verifier_key = ?, updated_at = ? WHERE origin = ?",
                (verifier_key, now, origin),
            )
            if not changed:
                tx.execute(
                    "INSERT INTO witnessed_logs (origin, verifier_key, size, root, note, "
                    "added_at, updated_at) VALUES (?, ?, 0, NULL, NULL, ?, ?)",
                    (origin, verifier_key, now, now),
                )
            self.audit.append_in(
                tx,
                "witness_log_added",
                actor=actor,
                subject=origin,
                details={"verifier_key": verifier_key},
            )

    def logs(self) -> list[WitnessedLog]:
        """The logs this node witnesses, by origin."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT origin, verifier_key, size, root, updated_at FROM witnessed_logs "
                "ORDER BY origin"
            )
        return [
            WitnessedLog(
                str(r[0]), str(r[1]), int(r[2]), None if r[3] is None else bytes(r[3]), str(r[4])
            )
            for r in rows
        ]

    def add_checkpoint(self, body: bytes) -> str:
        """Handle a tlog-witness add-checkpoint body; return the cosignature line(s).

        Checks and persists in one write transaction (core/witness.py lists the checks in
        order). Raises WitnessRequestError (400), UnknownLogError (404),
        UntrustedCheckpointError (403), WitnessConflictError / EquivocationError (409, with
        the latest cosigned size; an equivocation is stored and audited first),
        BadConsistencyProofError (422). Nothing changes unless it returns or equivocates.
        """
        request = parse_add_checkpoint(body)
        claimed = submitted_checkpoint(request.note)
        now = self._clock()
        equivocation: EquivocationError | None = None
        with self.db.transaction() as tx:
            row = tx.fetchone(
                _SELECT_LOG_FOR_UPDATE if tx.dialect == "postgresql" else _SELECT_LOG,
                (claimed.origin,),
            )
            if row is None:
                raise UnknownLogError(f"add-checkpoint: {claimed.origin!r} is not witnessed here")
            verifier_key, latest_size = str(row[0]), int(row[1])
            latest_root = None if row[2] is None else bytes(row[2])
            checkpoint = open_submitted(request.note, [parse_verifier_key(verifier_key)])
            prior = tx.fetchone(
                "SELECT root, note FROM witness_cosigned WHERE origin = ? AND size = ?",
                (checkpoint.origin, checkpoint.size),
            )
            try:
                check_extension(
                    request,
                    checkpoint,
                    latest_size,
                    latest_root,
                    None if prior is None else bytes(prior[0]),
                )
            except EquivocationError as e:
                first = str(prior[1]) if prior is not None else str(row[3])
                self._record_equivocation(
                    tx, request, root=checkpoint.root, first_note=first, verifier_key=verifier_key
                )
                equivocation = e
            if equivocation is None:
                cosignature = self.signer.cosign(checkpoint.to_text(), int(now.timestamp()))
                self._record_cosigned(tx, request, checkpoint.size, checkpoint.root, now)
        if equivocation is not None:
            raise equivocation
        return cosignature.to_line()

    def _record_cosigned(
        self, tx: Transaction, request: AddCheckpointRequest, size: int, root: bytes, now: datetime
    ) -> None:
        note = request.note.decode("utf-8")
        origin = submitted_checkpoint(request.note).origin
        at = format_time(now)
        tx.execute(
            "UPDATE witnessed_logs SET size = ?, root = ?, note = ?, updated_at = ? "
            "WHERE origin = ?",
            (size, root, note, at, origin),
        )
        tx.execute(
            "INSERT INTO witness_cosigned (origin, size, root, note, cosigned_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin, size) DO NOTHING",
            (origin, size, root, note, at),
        )

    def _record_equivocation(
        self,
        tx: Transaction,
        request: AddCheckpointRequest,
        *,
        root: bytes,
        first_note: str,
        verifier_key: str,
    ) -> None:
        checkpoint = submitted_checkpoint(request.note)
        exists = tx.fetchone(
            "SELECT 1 FROM witness_equivocations WHERE origin = ? AND size = ? AND second_root = ?",
            (checkpoint.origin, checkpoint.size, root),
        )
        if exists is not None:
            return
        tx.execute(
            "INSERT INTO witness_equivocations (id, origin, size, first_note, second_note, "
            "second_root, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                new_uuid7(),
                checkpoint.origin,
                checkpoint.size,
                first_note,
                request.note.decode("utf-8"),
                root,
                format_time(self._clock()),
            ),
        )
        self.audit.append_in(
            tx,
            "witness_equivocation",
            subject=checkpoint.origin,
            details={
                "size": checkpoint.size,
                "second_root": root.hex(),
                "verifier_key": verifier_key,
            },
        )

    def equivocations(self, after: str = "", limit: int = 100) -> list[StoredEquivocation]:
        """Stored equivocation evidence with ids after ``after`` (time-ordered), oldest first."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT e.id, e.origin, e.size, e.first_note, e.second_note, e.detected_at, "
                "l.verifier_key FROM witness_equivocations e "
                "LEFT JOIN witnessed_logs l ON l.origin = e.origin "
                "WHERE e.id > ? ORDER BY e.id LIMIT ?",
                (after, limit),
            )
        return [
            StoredEquivocation(
                str(r[0]),
                EquivocationEvidence(str(r[1]), int(r[2]), str(r[3]), str(r[4])),
                str(r[6] or ""),
                str(r[5]),
            )
            for r in rows
        ]


# -- asking witnesses ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessReply:
    """What a witness answered: status, content type and body."""

    status: int
    content_type: str
    body: bytes


class WitnessTransport(Protocol):
    """Sends an add-checkpoint body to a witness's submission prefix."""

    def add_checkpoint(self, url: str, body: bytes) -> WitnessReply:
        """POST ``body`` to ``url`` + ``/add-checkpoint``. Raises OSError-like transport
        failures as ``WitnessUnreachableError``."""


class WitnessUnreachableError(OblivioError):
    """A witness could not be reached or did not answer in time."""

    code = "witness_unreachable"


class HttpWitnessTransport:
    """``WitnessTransport`` over HTTP(S) with keep-alive connections (httpx)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._timeout = timeout
        self._client: Any = None  # made on first use: commands that never ask cost nothing

    def add_checkpoint(self, url: str, body: bytes) -> WitnessReply:
        """POST to ``url``/add-checkpoint; raise WitnessUnreachableError on transport errors."""
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self._timeout)
        try:
            response = self._client.post(
                url.rstrip("/") + "/add-checkpoint",
                content=body,
                headers={"content-type": "text/plain; charset=utf-8"},
            )
        except httpx.HTTPError as e:
            raise WitnessUnreachableError(f"witness {url}: {type(e).__name__}: {e}") from e
        return WitnessReply(
            response.status_code, response.headers.get("content-type", ""), response.content
        )

    def close(self) -> None:
        """Close the connections."""
        if self._client is not None:
            self._client.close()


@dataclass(frozen=True)
class LogWitness:
    """A witness this node asks to cosign: its name, submission prefix URL, key and the size
    it last cosigned for this node (or told it in a 409)."""

    name: str
    url: str
    verifier_key: str
    size: int

    @property
    def verifier(self) -> WitnessVerifier:
        """The parsed witness key."""
        return parse_witness_key(self.verifier_key)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for listings."""
        return {
            "name": self.name,
            "url": self.url,
            "verifier_key": self.verifier_key,
            "size": self.size,
        }


RETRY_FIRST = timedelta(milliseconds=500)
RETRY_CAP = timedelta(minutes=1)


@dataclass
class _Backoff:
    failures: int = 0
    next_at: datetime | None = None
    last_error: str | None = None


@dataclass
class CosignatureCollector:
    """Asks this node's witnesses to cosign its latest checkpoint and keeps what they return."""

    db: Database
    checkpoints: Callable[[], CheckpointService]
    transport: WitnessTransport
    clock: Clock = _utc_now
    _backoff: dict[str, _Backoff] = field(default_factory=dict)

    def use(self, name: str, url: str, verifier_key: str, *, actor: str | None = None) -> None:
        """Ask the witness ``name`` at ``url`` (its submission prefix) with key
        ``verifier_key`` from now on; replacing an entry keeps the size it last cosigned.

        Raises InvalidInputError for a malformed key, a key named otherwise, or a URL that is
        not http(s).
        """
        try:
            witness = parse_witness_key(verifier_key)
        except VerificationError as e:
            raise InvalidInputError(f"witness use: {e}") from e
        if witness.name != name:
            raise InvalidInputError(f"witness use: the key is named {witness.name!r}, not {name!r}")
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"witness use: expected an http(s) URL, got {url!r}")
        now = format_time(self.clock())
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE log_witnesses SET url = ?, verifier_key = ? WHERE name = ?",
                (url, verifier_key, name),
            )
            if not changed:
                tx.execute(
                    "INSERT INTO log_witnesses (name, url, verifier_key, size, added_at) "
                    "VALUES (?, ?, ?, 0, ?)",
                    (name, url, verifier_key, now),
                )
            AuditLog(self.db, self.clock).append_in(
                tx,
                "log_witness_used",
                actor=actor,
                subject=name,
                details={"url": url, "verifier_key": verifier_key},
            )

    def remove(self, name: str) -> None:
        """Stop asking ``name``. Raises NotFoundError if it is not one of the witnesses."""
        with self.db.transaction() as tx:
            if not tx.execute("DELETE FROM log_witnesses WHERE name = ?", (name,)):
                raise NotFoundError(f"no witness {name!r}")
            AuditLog(self.db, self.clock).append_in(tx, "log_witness_removed", subject=name)

    def witnesses(self) -> list[LogWitness]:
        """The witnesses this node asks, by name."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT name, url, verifier_key, size FROM log_witnesses ORDER BY name"
            )
        return [LogWitness(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def _cosigned_by(self, epoch: int) -> set[str]:
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT witness FROM checkpoint_cosignatures WHERE epoch = ?", (epoch,)
            )
        return {str(r[0]) for r in rows}

    def collect(self) -> dict[str, str]:
        """One round: ask every witness that has not cosigned the latest checkpoint and is not
        waiting out a retry delay, all at once (a slow witness delays no other). Returns what
        happened per witness asked (``cosigned``, or the error), for logs and tests; never
        raises for a witness's failure."""
        latest = self.checkpoints().latest_checkpoint()
        if latest is None:
            return {}
        done = self._cosigned_by(latest.epoch)
        now = self.clock()
        due = []
        for witness in self.witnesses():
            backoff = self._backoff.setdefault(witness.name, _Backoff())
            if witness.name in done or (backoff.next_at is not None and now < backoff.next_at):
                continue
            due.append(witness)
        if not due:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(due), 8)) as pool:
            errors = list(pool.map(lambda w: self._try(w, latest), due))
        outcomes = {}
        for witness, error in zip(due, errors, strict=True):
            if error is None:
                self._backoff.pop(witness.name, None)
                outcomes[witness.name] = "cosigned"
                continue
            backoff = self._backoff[witness.name]
            backoff.failures += 1
            delay = min(RETRY_FIRST * 2 ** (backoff.failures - 1), RETRY_CAP)
            backoff.next_at = now + delay
            backoff.last_error = error
            outcomes[witness.name] = error
            if backoff.failures in (1, 10) or backoff.failures % 100 == 0:
                _log.warning(
                    "witness %s: %s (attempt %d, retrying in %.1f s)",
                    witness.name,
                    error,
                    backoff.failures,
                    delay.total_seconds(),
                )
        return outcomes

    def _try(self, witness: LogWitness, latest: StoredCheckpoint) -> str | None:
        """Ask one witness; return None when it cosigned, else what went wrong."""
        try:
            self._ask(witness, latest)
        except OblivioError as e:
            return f"{type(e).__name__}: {' '.join(str(e).split())}"
        except Exception as e:  # one witness's surprise must not stop the others
            _log.exception("witness %s: unexpected failure", witness.name)
            return f"unexpected {type(e).__name__}"
        return None

    def _ask(self, witness: LogWitness, latest: StoredCheckpoint) -> None:
        """Send the checkpoint; after a 409 naming another size, send once more from it."""
        size = witness.size
        for attempt in range(2):
            # A witness that has cosigned more than this log holds is shown this checkpoint
            # anyway (old = its size): if it cosigned another root at this size, that is a fork
            # it keeps as evidence.
            old = min(size, latest.size)
            proof: tuple[bytes, ...] = ()
            if 0 < old < latest.size:
                proof = tuple(self.checkpoints().log.consistency_proof(old, latest.size).path)
            request = AddCheckpointRequest(old, proof, latest.note.encode("utf-8"))
            reply = self.transport.add_checkpoint(witness.url, request.to_bytes())
            if reply.status == 200:
                self._store(witness, latest, reply.body)
                return
            if reply.status == 409 and reply.content_type.startswith("text/x.tlog.size"):
                told = parse_size_body(reply.body)
                self._set_size(witness.name, told)
                if told == size or attempt:
                    raise WitnessConflictError(
                        f"witness {witness.name} refused size {latest.size} from old size {old}: "
                        f"it cosigned size {told}",
                        told,
                    )
                size = told
                continue
            detail = reply.body[:200].decode("utf-8", "replace").strip()
            raise WitnessRefusedError(
                f"witness {witness.name} answered {reply.status}: {detail}", reply.status
            )

    def _store(self, witness: LogWitness, latest: StoredCheckpoint, body: bytes) -> None:
        verifier = witness.verifier
        text = latest.note[: latest.note.index("\n\n") + 1]
        try:
            lines = body.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise WitnessRefusedError(f"witness {witness.name}: reply is not UTF-8", 200) from e
        for line in lines:
            try:
                cosignature = parse_cosignature_line(line)
            except VerificationError:
                continue  # another key type or an unknown key: ignored (tlog-witness)
            if cosignature.verifies(text, verifier):
                break
        else:
            raise WitnessRefusedError(
                f"witness {witness.name}: no valid cosignature by {verifier.key_id} in its reply",
                200,
            )
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO checkpoint_cosignatures (epoch, witness, line, cosigned_at, "
                "received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (epoch, witness) DO NOTHING",
                (
                    latest.epoch,
                    witness.name,
                    cosignature.to_line().removesuffix("\n"),
                    cosignature.timestamp,
                    format_time(self.clock()),
                ),
            )
            tx.execute(
                "UPDATE log_witnesses SET size = ? WHERE name = ?", (latest.size, witness.name)
            )

    def _set_size(self, name: str, size: int) -> None:
        with self.db.transaction() as tx:
            tx.execute("UPDATE log_witnesses SET size = ? WHERE name = ?", (size, name))

    def status(self) -> Mapping[str, str | None]:
        """The last error per witness that is failing now."""
        return {name: b.last_error for name, b in self._backoff.items() if b.failures}

    def run(self, stop: threading.Event, wake: threading.Event, poll: float = 1.0) -> None:
        """Collect after every epoch commit (``wake``) and at least every ``poll`` seconds,
        until ``stop`` is set (``oblivio serve`` runs it in a daemon thread). No error ends
        the loop: a witness's failure waits out its own retry delay."""
        while not stop.is_set():
            try:
                self.collect()
            except Exception:  # a dead loop would stop asking for cosignatures for good
                _log.exception("witness round failed unexpectedly")
            wake.wait(min(poll, self._next_retry_in()))
            wake.clear()

    def _next_retry_in(self) -> float:
        now = self.clock()
        waits = [(b.next_at - now).total_seconds() for b in self._backoff.values() if b.next_at]
        return max(min(waits, default=3600.0), 0.01)


class WitnessRefusedError(OblivioError):
    """A witness answered with an error status (other than a size conflict) or a reply that
    holds no valid cosignature by its key."""

    code = "witness_refused"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
