"""Non-compliance: probes, evidence, reputation, isolation (DESIGN.md §12, seed 001 "Trust
Implications", docs/adr/0027).

1. **Probes.** When this node issues a tombstone of an entity ``belief:<id>``, one probe row per
   peer it goes to, and per peer the belief itself was delivered to (outbox rows of kind
   ``belief``), is written in the tombstone's own transaction, due at the ack deadline. A due
   probe of an active peer whose status is not ``proved`` (a belief recipient: whatever its
   status) asks the peer
   ``GET /federation/belief/{id}/status`` and ``GET /v1/federation/beliefs/{id}`` with the token
   the peer issued us (``belief:read``). A peer that cannot be reached is asked again with the
   outbox's backoff; answers that show the belief gone end the probe (``clean``).
2. **Evidence.** A signed answer (core/evidence.py) that still serves the belief after the
   tombstone becomes an ``oblivio.noncompliance-evidence.v1`` record, signed by this node and
   kept; the probe is asked again ``probe_interval`` later.
3. **Reputation** (core/reputation.py) is recomputed from the peer's recorded events: the first
   violation is ``tombstone_ignored`` (-0.5), each later one ``repeated_violation`` (-1.0). Below
   the isolation threshold the peer is ``isolated``: nothing more is sent to it (the outbox, the
   puller and the announce listener serve active peers only), and it may only deliver
   tombstones, revocations and acks (peers.ISOLATED_VERBS). ``reinstate`` lifts it.

An answer without a valid signature proves nothing: it is asked again later, never held against
the peer. Every probe (``peer_probed`` with its result), evidence, reputation change and
isolation is in the audit log.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.errors import InvalidInputError, NotFoundError, VerificationError
from oblivio.core.evidence import (
    BELIEF_PREFIX,
    Finding,
    build_evidence,
    decode_statement,
    served_finding,
    verify_response,
)
from oblivio.core.identifiers import format_time, parse_time
from oblivio.core.note import verifier_key
from oblivio.core.reputation import (
    VIOLATIONS,
    EventKind,
    ReputationEvent,
    is_isolated,
    reputation,
    violation_kind,
)
from oblivio.core.tombstones import TombstoneRecord
from oblivio.federation.transport import PeerUnreachableError, RawResponse
from oblivio.node.ids import new_uuid7
from oblivio.node.tombstones import StoredRecord
from oblivio.store.database import Transaction

if TYPE_CHECKING:
    from oblivio.federation.peers import Peer
    from oblivio.federation.propagation import Federation

MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
"""A probe answer signed further than this from our clock proves nothing (a backdated answer
could otherwise pass for one given before the tombstone)."""
EVIDENCE_PREFIX: Final = "evid_"
ANSWERS_ABOUT_THE_BELIEF: Final = (200, 404, 410)
"""Statuses that say something about the belief; any other (401, 403, 400…) is a refusal to
answer, asked again later, neither clean nor a violation."""
BELIEF_DELIVERY: Final = "belief"
"""The outbox kind of a belief's delivery to a recipient (federation/beliefs.py)."""


def probe_paths(belief_id: str) -> tuple[str, str]:
    """The two routes a probe asks (seed 001's status route, then the belief itself)."""
    return f"/federation/belief/{belief_id}/status", f"/v1/federation/beliefs/{belief_id}"


@dataclass(frozen=True)
class Probe:
    """One due probe row."""

    tombstone_id: str
    peer: str
    belief_id: str
    attempts: int
    belief_recipient: bool


@dataclass(frozen=True)
class Answer:
    """What one probe route's answer established."""

    path: str
    status: int
    verified: bool
    finding: Finding | None
    why: str
    statement: dict[str, JsonValue] | None = None
    body: bytes = b""


class NonCompliance:
    """Probes, evidence and reputation of one node's peers."""

    def __init__(
        self, federation: Federation, clock: Callable[[], datetime], rng: random.Random
    ) -> None:
        self.federation = federation
        self.db = federation.db
        self.audit = federation.compliance.audit
        self.settings = federation.settings
        self._clock = clock
        self._rng = rng
        federation.compliance.tombstones.observers.append(self._observe)

    # -- scheduling (in the tombstone's transaction) -----------------------------------------

    def _observe(self, tx: Transaction, record: StoredRecord, sender: str | None) -> None:
        if sender is not None or not isinstance(record, TombstoneRecord):
            return
        if not record.entity_uri.startswith(BELIEF_PREFIX):
            return
        belief_id = record.entity_uri.removeprefix(BELIEF_PREFIX)
        due = format_time(parse_time(record.created_at) + self.settings.ack_deadline)
        # The peers it goes to: the outbox rows written for it in this transaction.
        rows = tx.fetchall(
            "SELECT peer FROM federation_outbox WHERE record_id = ? AND kind = 'tombstone'",
            (record.id,),
        )
        for (peer,) in rows:
            tx.execute(
                "INSERT INTO federation_probes (tombstone_id, peer, belief_id, state, "
                "next_probe_at) VALUES (?, ?, ?, 'due', ?)",
                (record.id, peer, belief_id, due),
            )
        self._probe_recipients(tx, record.id, belief_id, due, {str(r[0]) for r in rows})

    def _probe_recipients(
        self, tx: Transaction, tombstone_id: str, belief_id: str, due: str, probed: set[str]
    ) -> None:
        """Every peer the belief itself went to is probed, proved or not: a proof covers what
        a peer says it held; content it still serves is evidence all the same."""
        recipients = tx.fetchall(
            "SELECT DISTINCT peer FROM federation_outbox WHERE record_id = ? AND kind = ?",
            (belief_id, BELIEF_DELIVERY),
        )
        for (peer,) in recipients:
            if str(peer) in probed:
                tx.execute(
                    "UPDATE federation_probes SET belief_recipient = 1 "
                    "WHERE tombstone_id = ? AND peer = ?",
                    (tombstone_id, peer),
                )
            else:
                tx.execute(
                    "INSERT INTO federation_probes (tombstone_id, peer, belief_id, "
                    "belief_recipient, state, next_probe_at) VALUES (?, ?, ?, 1, 'due', ?)",
                    (tombstone_id, peer, belief_id, due),
                )

    def due(self, limit: int = 50) -> list[Probe]:
        """Probes to run now, of active peers only (an isolated peer is not asked)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT p.tombstone_id, p.peer, p.belief_id, p.attempts, p.belief_recipient "
                "FROM federation_probes p "
                "JOIN federation_peers f ON f.name = p.peer "
                "WHERE p.state = 'due' AND p.next_probe_at <= ? AND f.state = 'active' "
                "ORDER BY p.next_probe_at, p.tombstone_id LIMIT ?",
                (format_time(self._clock()), limit),
            )
        return [Probe(str(r[0]), str(r[1]), str(r[2]), int(r[3]), bool(r[4])) for r in rows]

    # -- probing ------------------------------------------------------------------------------

    def run(self, probe: Probe) -> str:
        """Run one probe; return its result (``proved``, ``clean``, ``violation``,
        ``unverifiable``, ``refused`` or ``unreachable``), recorded and audited."""
        federation = self.federation
        peer = federation.peers.require(probe.peer)
        statuses = {
            p["peer"]: p["status"] for p in federation.propagation(probe.tombstone_id)["peers"]
        }
        if statuses.get(probe.peer) == "proved" and not probe.belief_recipient:
            self._finish(probe, "proved", "the peer's ack proves the forgetting")
            return "proved"
        answers: list[Answer] = []
        try:
            for path in probe_paths(probe.belief_id):
                raw = federation.client.fetch(peer.url, path, peer.token)
                answers.append(self._judge(peer, path, raw))
        except PeerUnreachableError as e:
            # propagation.py imports this module to build its Federation: imported here.
            from oblivio.federation.propagation import backoff_delay

            delay = backoff_delay(probe.attempts, self.settings, self._rng)
            self._reschedule(probe, delay, "unreachable", str(e))
            return "unreachable"
        # The belief's content, when served, is the stronger evidence: kept before the status.
        for answer in sorted(answers, key=lambda a: a.finding != "content_served"):
            if answer.finding is not None and answer.statement is not None:
                self._violation(probe, peer, answer.finding, answer.statement, answer.body)
                return "violation"
        for result, failed in (
            ("unverifiable", [a for a in answers if not a.verified]),
            ("refused", [a for a in answers if a.status not in ANSWERS_ABOUT_THE_BELIEF]),
        ):
            if failed:
                why = "; ".join(f"{a.path}: {a.why}" for a in failed)
                self._reschedule(probe, self.settings.probe_interval, result, why)
                return result
        self._finish(probe, "clean", "signed answers show the belief gone")
        return "clean"

    def _judge(self, peer: Peer, path: str, raw: RawResponse) -> Answer:
        """Verify one answer's signature with the peer's manifest key and see what it shows."""
        if raw.signature is None:
            return Answer(path, raw.status, False, None, "no response signature")
        try:
            statement = decode_statement(raw.signature)
            key = self.federation.compliance.manifests.require(peer.name).key_for(
                str(statement.get("key_id")), str(statement.get("signed_at"))
            )
            signed = verify_response(statement, raw.body, key)
        except (VerificationError, InvalidInputError, NotFoundError) as e:
            return Answer(path, raw.status, False, None, f"signature: {e}"[:300])
        skew = abs(parse_time(signed.signed_at) - self._clock())
        if (
            signed.node != peer.name
            or (signed.method, signed.path, signed.status) != ("GET", path, raw.status)
            or skew > MAX_CLOCK_SKEW
        ):
            return Answer(
                path,
                raw.status,
                False,
                None,
                f"statement of {signed.node} for {signed.method} {signed.path[:200]} "
                f"{signed.status} at {signed.signed_at} does not match the answer",
            )
        finding = served_finding(path, raw.status, raw.body)
        why = f"answered {raw.status}"
        return Answer(path, raw.status, True, finding, why, statement, raw.body)

    def _reschedule(self, probe: Probe, delay: timedelta, result: str, detail: str) -> None:
        """Ask again after ``delay``; audited."""
        now = self._clock()
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_probes SET attempts = attempts + 1, next_probe_at = ?, "
                "last_probe_at = ?, last_result = ? WHERE tombstone_id = ? AND peer = ?",
                (
                    format_time(now + delay),
                    format_time(now),
                    f"{result}: {detail}"[:1000],
                    probe.tombstone_id,
                    probe.peer,
                ),
            )
            self._audit_probe(tx, probe, result, detail)

    def _finish(self, probe: Probe, result: str, detail: str) -> None:
        """The probe is done (the peer proved or showed the belief gone); audited."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_probes SET state = 'done', attempts = attempts + 1, "
                "last_probe_at = ?, last_result = ? WHERE tombstone_id = ? AND peer = ?",
                (format_time(self._clock()), result, probe.tombstone_id, probe.peer),
            )
            self._audit_probe(tx, probe, result, detail)

    def _audit_probe(self, tx: Transaction, probe: Probe, result: str, detail: str) -> None:
        self.audit.append_in(
            tx,
            "peer_probed",
            actor=probe.peer,
            subject=probe.tombstone_id,
            details={"result": result, "detail": detail[:1000]},
        )

    def _violation(
        self,
        probe: Probe,
        peer: Peer,
        finding: Finding,
        statement: dict[str, JsonValue],
        body: bytes,
    ) -> None:
        """Keep the evidence, record the violation, recompute the reputation, isolate below
        the threshold: one transaction, audited."""
        federation = self.federation
        node_key = federation.services.node.signing_key
        # Its unsigned reason redacted (§23.4.1 item 3): the evidence may travel far.
        tombstone = TombstoneRecord.from_dict(federation.record_json(probe.tombstone_id))
        tombstone = tombstone.redacted() if tombstone.reason is not None else tombstone
        manifest = federation.compliance.manifests.require(peer.name)
        their = manifest.key_for(str(statement["key_id"]), str(statement["signed_at"]))
        now = self._clock()
        evidence = build_evidence(
            node_key,
            peer=peer.name,
            finding=finding,
            our_tombstone=tombstone.to_dict(),
            our_key=verifier_key(federation.org, node_key.verify_key.public_bytes),
            statement=statement,
            body=body,
            their_key=verifier_key(peer.name, their.public_bytes),
            timestamp=format_time(now),
        )
        evidence_id = EVIDENCE_PREFIX + new_uuid7()
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO federation_evidence (id, peer, tombstone_id, finding, evidence_json, "
                "found_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    evidence_id,
                    peer.name,
                    probe.tombstone_id,
                    finding,
                    canonical_json(evidence).decode("utf-8"),
                    format_time(now),
                ),
            )
            tx.execute(
                "UPDATE federation_probes SET attempts = attempts + 1, findings = findings + 1, "
                "next_probe_at = ?, last_probe_at = ?, last_result = ? "
                "WHERE tombstone_id = ? AND peer = ?",
                (
                    format_time(now + self.settings.probe_interval),
                    format_time(now),
                    f"violation: {finding} ({evidence_id})",
                    probe.tombstone_id,
                    peer.name,
                ),
            )
            self._audit_probe(tx, probe, "violation", f"{finding} at {statement['path']}")
            self.audit.append_in(
                tx,
                "noncompliance_evidence",
                actor=peer.name,
                subject=probe.tombstone_id,
                details={"evidence_id": evidence_id, "finding": finding},
            )
            earlier = tx.fetchone(
                "SELECT COUNT(*) FROM peer_reputation_events WHERE peer = ? AND kind IN (?, ?)",
                (peer.name, *VIOLATIONS),
            )
            kind = violation_kind(int(earlier[0]) if earlier else 0)
            self._record_event(tx, peer.name, kind, now, evidence_id)

    # -- reputation ---------------------------------------------------------------------------

    def _events(self, tx: Transaction, name: str) -> list[ReputationEvent]:
        rows = tx.fetchall(
            "SELECT kind, at FROM peer_reputation_events WHERE peer = ? ORDER BY at, id", (name,)
        )
        return [ReputationEvent(cast("EventKind", str(r[0])), parse_time(str(r[1]))) for r in rows]

    def _record_event(
        self, tx: Transaction, name: str, kind: EventKind, now: datetime, evidence_id: str | None
    ) -> None:
        """Record an event, store the reputation it gives, isolate or reinstate; audited."""
        row = tx.fetchone("SELECT reputation, state FROM federation_peers WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(f"no peer named {name!r}")
        before, state = float(row[0]), str(row[1])
        tx.execute(
            "INSERT INTO peer_reputation_events (id, peer, kind, at, evidence_id) "
            "VALUES (?, ?, ?, ?, ?)",
            (new_uuid7(), name, kind, format_time(now), evidence_id),
        )
        after = reputation(self._events(tx, name), now)
        if kind == "reinstated":
            new_state = "active"
        elif state == "active" and is_isolated(after, self.settings.isolation_threshold):
            new_state = "isolated"
        else:
            new_state = state
        tx.execute(
            "UPDATE federation_peers SET reputation = ?, state = ?, updated_at = ? WHERE name = ?",
            (str(after), new_state, format_time(now), name),
        )
        self.audit.append_in(
            tx,
            "reputation_changed",
            actor=name,
            subject=evidence_id,
            details={"event": kind, "from": before, "to": after},
        )
        if new_state != state:
            self.audit.append_in(
                tx,
                "peer_isolated" if new_state == "isolated" else "peer_reinstated",
                subject=name,
                details={
                    "reputation": after,
                    "threshold": self.settings.isolation_threshold,
                    "was": state,
                },
            )

    def reputation_of(self, name: str) -> float:
        """``name``'s reputation now (recovery included)."""
        with self.db.transaction(write=False) as tx:
            return reputation(self._events(tx, name), self._clock())

    def refresh(self) -> int:
        """Store every peer's reputation as of now (recovery raises it slowly); audit and
        return how many changed. Recovery never lifts an isolation: ``reinstate`` does."""
        now = self._clock()
        changed = 0
        with self.db.transaction() as tx:
            for name, stored in tx.fetchall("SELECT name, reputation FROM federation_peers"):
                current = reputation(self._events(tx, str(name)), now)
                if current != float(stored):
                    changed += 1
                    tx.execute(
                        "UPDATE federation_peers SET reputation = ? WHERE name = ?",
                        (str(current), name),
                    )
                    self.audit.append_in(
                        tx,
                        "reputation_changed",
                        actor=str(name),
                        details={"event": "recovery", "from": float(stored), "to": current},
                    )
        return changed

    def reinstate(self, name: str, actor: str | None = None) -> Peer:
        """Lift an isolation (the operator's decision): the peer is active again with
        reputation 1.0; its history stays, so a next violation is a repeated one."""
        peer = self.federation.peers.require(name)
        if peer.state != "isolated":
            raise InvalidInputError(f"peer reinstate: {name} is {peer.state}, not isolated")
        with self.db.transaction() as tx:
            self._record_event(tx, name, "reinstated", self._clock(), None)
            if actor is not None:
                self.audit.append_in(tx, "peer_reinstate_requested", actor=actor, subject=name)
        return self.federation.peers.require(name)

    # -- evidence -----------------------------------------------------------------------------

    def evidence_list(self, peer: str | None = None) -> list[dict[str, Any]]:
        """Kept evidence, newest first (ids and what they show, not the records)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT id, peer, tombstone_id, finding, found_at FROM federation_evidence "
                "ORDER BY found_at DESC, id DESC"
            )
        names = ("id", "peer", "tombstone_id", "finding", "found_at")
        listed = [dict(zip(names, r, strict=True)) for r in rows]
        return [e for e in listed if peer is None or e["peer"] == peer]

    def evidence(self, evidence_id: str) -> dict[str, JsonValue]:
        """One evidence record, exactly as kept (the file ``verify-evidence`` checks)."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT evidence_json FROM federation_evidence WHERE id = ?", (evidence_id,)
            )
        if row is None:
            raise NotFoundError(f"no evidence {evidence_id!r}")
        value = parse_json(str(row[0]))
        assert isinstance(value, dict)  # noqa: S101 - stored by this node as an object
        return value

    def probes(self, tombstone_id: str | None = None) -> list[dict[str, Any]]:
        """Probe rows, for the operator."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT tombstone_id, peer, belief_id, belief_recipient, state, attempts, "
                "findings, next_probe_at, last_probe_at, last_result FROM federation_probes "
                "ORDER BY tombstone_id, peer"
            )
        names = (
            "tombstone_id",
            "peer",
            "belief_id",
            "belief_recipient",
            "state",
            "attempts",
            "findings",
            "next_probe_at",
            "last_probe_at",
            "last_result",
        )
        listed = [dict(zip(names, r, strict=True)) for r in rows]
        for probe in listed:
            probe["belief_recipient"] = bool(probe["belief_recipient"])
        return [p for p in listed if tombstone_id is None or p["tombstone_id"] == tombstone_id]
