"""Tombstone propagation that loses nothing (DESIGN.md §12, seed 002 §23.4, seed 001).

Every record a node stores, issued or received, enters its *feed* (the pull route's order) and,
in the same transaction, its *outbox*: one row per active peer but the sender (and, for a
received tombstone, one ``ack`` row for the sender). Workers (workers.py) drain the outbox with
exponential backoff and full jitter, pull from every peer, and follow their announcements.

Receiving follows §23.4.2: the record is verified against the manifest of its ``signed_by``
org (fetched from that org when it is a peer, else from the relaying peer and pinned on first
use; a manifest that does not extend the pinned one is refused and audited as
``manifest_conflict``), checked against the retention horizon, stored idempotently on its id,
applied (node/services.py: forgetting at the configured level, suppression at once) and
forwarded. A record whose manifest cannot be had yet is kept as ``unverified`` and retried.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.deletion import (
    SEED001_FIELD,
    Seed001Tombstone,
    is_seed001,
    key_at,
    propagates,
    seed001_of,
)
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TombstoneNotFoundError,
    TombstoneVerificationFailedError,
    VerificationError,
)
from oblivio.core.identifiers import format_time, parse_time
from oblivio.core.manifest import OrgManifest, org_of_signer, verify_manifest
from oblivio.core.tombstones import (
    REDACTED,
    REVOCATION_PREFIX,
    TombstoneRecord,
    TombstoneRevocationRecord,
)
from oblivio.federation.acks import judge_ack, sign_ack
from oblivio.federation.noncompliance import NonCompliance
from oblivio.federation.peers import Peer, Peers
from oblivio.federation.settings import FederationSettings
from oblivio.federation.transport import PeerClient, PeerRefusedError, PeerUnreachableError
from oblivio.node.services import NodeServices
from oblivio.node.tombstones import StoredRecord
from oblivio.store.database import Transaction

RecordKind = Literal["tombstone", "revocation"]
CURSOR_PREFIX: Final = "c1."
MAX_PAGE: Final = 1000
MAX_SEQ: Final = 2**53
"""Feed positions stay below this: cursors are JCS numbers (RFC 8785: IEEE 754 doubles)."""
_PG_FEED_LOCK: Final = 0x0B11_F33D
_NOT_YET: Final = "9999-12-31T23:59:59.999Z"
"""``next_attempt_at`` of an ack row whose tombstone is not applied yet."""
RELAY_PREFIX: Final = "relay:"
"""Outbox kind ``relay:<node>``: ``node``'s ack, relayed to the peer the tombstone came from."""
_GIVEN_UP: Final = "9999-12-31T23:59:59.998Z"
"""``next_attempt_at`` of a row the fixed push schedule gave up on."""


class InvalidCursorError(InvalidInputError):
    """A ``since`` that is neither a cursor this node gave nor an RFC 3339 time: 400."""

    code = "invalid_cursor"


class ManifestConflictError(TombstoneVerificationFailedError):
    """A manifest that does not extend the one pinned for its org (possible split view)."""


def kind_of(record_id: object) -> RecordKind:
    """Which table a record id belongs to, by its prefix."""
    return "revocation" if str(record_id).startswith(REVOCATION_PREFIX) else "tombstone"


def encode_cursor(seq: int) -> str:
    """An opaque cursor for feed position ``seq``."""
    return CURSOR_PREFIX + b64url_encode(canonical_json({"seq": seq}))


def decode_cursor(since: str) -> tuple[int, str | None]:
    """(feed position, created_at lower bound) from ``since``: a cursor or an RFC 3339 time.

    Raises InvalidCursorError otherwise."""
    if since.startswith(CURSOR_PREFIX):
        try:
            value = parse_json(b64url_decode(since.removeprefix(CURSOR_PREFIX)))
            seq = value["seq"] if isinstance(value, dict) else None
        except (ValueError, KeyError, InvalidInputError) as e:
            raise InvalidCursorError(f"since: malformed cursor {since[:80]!r}") from e
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < MAX_SEQ:
            raise InvalidCursorError(f"since: malformed cursor {since[:80]!r}")
        return seq, None
    try:
        parse_time(since)
    except InvalidInputError as e:
        raise InvalidCursorError(
            f"since: expected a cursor from this route or an RFC 3339 time, got {since[:80]!r}"
        ) from e
    return 0, since


def as_sent(record: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """A record as it leaves this node: a seed 001 tombstone as received (its view stays
    here), a §23 tombstone with its unsigned ``reason`` redacted (§23.4.1 item 3), everything
    else exactly as stored."""
    original = seed001_of(record)
    if original is not None:
        return dict(original)
    sent = dict(record)
    if kind_of(sent.get("id")) == "tombstone" and sent.get("reason") is not None:
        sent["reason"] = REDACTED
    return sent


def backoff_delay(attempts: int, settings: FederationSettings, rng: random.Random) -> timedelta:
    """Full jitter (uniform in [0, min(cap, base * 2**attempts)]): 1 s doubling to 5 min."""
    ceiling = min(
        settings.backoff_cap.total_seconds(),
        settings.backoff_base.total_seconds() * (2 ** min(attempts, 20)),
    )
    return timedelta(seconds=rng.uniform(0, ceiling))


def retry_delay(
    failures: int, settings: FederationSettings, rng: random.Random
) -> timedelta | None:
    """When to retry a delivery that has failed ``failures`` times (1 or more): the backoff
    (never gives up), or under the fixed schedule its next delay, None once
    ``push_retry_limit`` retries have failed (give up)."""
    if settings.push_schedule == "backoff":
        return backoff_delay(failures - 1, settings, rng)
    retries = failures - 1
    if retries >= settings.push_retry_limit:
        return None
    return settings.push_delays[min(retries, len(settings.push_delays) - 1)]


@dataclass(frozen=True)
class Delivery:
    """One due outbox row."""

    record_id: str
    peer: str
    kind: str
    attempts: int


class Federation:
    """A node's federation: peers, feed, outbox, inbound records, acks and their status."""

    def __init__(
        self,
        services: NodeServices,
        settings: FederationSettings,
        client: PeerClient,
        clock: Callable[[], datetime],
        rng: random.Random | None = None,
    ) -> None:
        self.services = services
        self.compliance = services.compliance
        self.db = services.node.db
        self.org = self.compliance.org
        self.settings = settings
        self.client = client
        self.clock = clock
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self.peers = Peers(
            self.db,
            self.compliance.audit,
            self.compliance.manifests,
            org=self.org,
            signing_key=lambda: services.node.signing_key,
            clock=clock,
        )
        self.wake = threading.Event()
        """Set when a record enters the outbox, so the push worker need not wait."""
        self.deliverers: dict[str, Callable[[Delivery, Peer], bool]] = {}
        """Outbox kinds delivered elsewhere (``belief``: federation/beliefs.py): each returns
        False when it cancelled its row instead of sending it."""
        self.compliance.tombstones.observers.append(self._observe)
        # Registered after _observe: probes are scheduled for the outbox rows it writes.
        self.noncompliance = NonCompliance(self, clock, self._rng)

    # -- writing the feed and the outbox (in the record's own transaction) -------------------

    def _observe(self, tx: Transaction, record: StoredRecord, sender: str | None) -> None:
        kind = kind_of(record.id)
        now = format_time(self._clock())
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_FEED_LOCK,))
        row = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM federation_feed")
        seq = int(row[0]) + 1 if row is not None else 1
        tx.execute(
            "INSERT INTO federation_feed (seq, record_id, kind) VALUES (?, ?, ?)",
            (seq, record.id, kind),
        )
        forwarded = sender is None or propagates(record.raw)
        for (peer,) in tx.fetchall(
            "SELECT name FROM federation_peers WHERE state = 'active' ORDER BY name"
        ):
            if peer != sender and forwarded:
                tx.execute(
                    "INSERT INTO federation_outbox (record_id, peer, kind, created_at, "
                    "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                    (record.id, peer, kind, now, now),
                )
        if sender is not None and kind == "tombstone":
            # Sent once the tombstone is applied (ready_ack), to the peer that delivered it.
            tx.execute(
                "INSERT INTO federation_outbox (record_id, peer, kind, created_at, "
                "next_attempt_at) VALUES (?, ?, 'ack', ?, ?)",
                (record.id, sender, now, _NOT_YET),
            )
        self.wake.set()

    # -- the pull route (seed 002 §23.4.3) ----------------------------------------------------

    def page(self, since: str, limit: int) -> dict[str, Any]:
        """``{"tombstones": [...], "revocations": [...], "cursor": …}`` after ``since``.

        The cursor is the position of the last record scanned; a caller pulls until it comes
        back unchanged. Raises InvalidCursorError."""
        start, created_after = decode_cursor(since)
        limit = max(1, min(limit, MAX_PAGE))
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT f.seq, f.kind, t.record_json, r.record_json FROM federation_feed f "
                "LEFT JOIN tombstones t ON t.id = f.record_id "
                "LEFT JOIN tombstone_revocations r ON r.id = f.record_id "
                "WHERE f.seq > ? ORDER BY f.seq LIMIT ?",
                (start, limit),
            )
        tombstones: list[JsonValue] = []
        revocations: list[JsonValue] = []
        last = start
        for seq, kind, tombstone_json, revocation_json in rows:
            last = int(seq)
            text = tombstone_json if kind == "tombstone" else revocation_json
            if text is None:
                continue
            record = parse_json(text)
            assert isinstance(record, dict)  # noqa: S101 - stored by this node as an object
            if created_after is not None and str(record.get("created_at")) < created_after:
                continue
            if not propagates(record):
                continue  # a seed 001 tombstone whose originator asked not to forward it
            (tombstones if kind == "tombstone" else revocations).append(as_sent(record))
        return {"tombstones": tombstones, "revocations": revocations, "cursor": encode_cursor(last)}

    def feed_position(self) -> tuple[int, set[str]]:
        """The feed's last position, for the announce channel."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM federation_feed")
        return (int(row[0]) if row is not None else 0), set()

    def kinds_after(self, seq: int) -> tuple[int, set[str]]:
        """The last position and the kinds of records stored after ``seq``."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT seq, kind FROM federation_feed WHERE seq > ? ORDER BY seq", (seq,)
            )
        if not rows:
            return seq, set()
        return int(rows[-1][0]), {str(r[1]) for r in rows}

    # -- receiving (seed 002 §23.4.2) ---------------------------------------------------------

    def manifest_json(self, org: str) -> dict[str, JsonValue]:
        """The manifest this node holds for ``org`` (the relay route); NotFoundError."""
        return dict(self.compliance.manifests.require(org).raw)

    def _fetch_manifest(self, org: str, via: Peer) -> None:
        """Fetch and pin ``org``'s manifest: from ``org`` itself when it is a peer, else from
        the relaying peer (trust on first use). Raises PeerUnreachableError/PeerRefusedError
        when it cannot be had, ManifestConflictError (audited) when it does not extend the
        pinned one."""
        registry = self.compliance.manifests
        origin = self.peers.find(org)
        current = registry.find(org)
        if origin is not None and origin.state != "removed":
            data: object = self.client.manifest(origin.url)
            anchor = origin.anchor_key_id
        else:
            data = self.client.org_manifest(via.url, via.token, org)
            anchor = current.keys[0].key_id if current is not None else ""
        try:
            manifest = verify_manifest(data)
            if manifest.org != org:
                raise VerificationError(f"expected the manifest of {org}, got {manifest.org}")
            registry.trust(data, anchor or manifest.keys[0].key_id)
        except VerificationError as e:
            self.compliance.audit.append(
                "manifest_conflict",
                actor=via.name,
                subject=org,
                details={"why": str(e), "from": origin.name if origin else via.name},
            )
            raise ManifestConflictError(f"manifest of {org} refused: {e}") from e
        if current is None:
            self.compliance.audit.append(
                "manifest_pinned", actor=via.name, subject=org, details={"anchor": anchor}
            )

    def _have_manifest(
        self, org: str, holds_key: Callable[[OrgManifest], bool], via: Peer, subject: str
    ) -> str | None:
        """Make sure the manifest of ``org`` is here, fetched when unknown or when it lacks the
        key a record needs. Returns why not when no manifest of ``org`` can be had at all (the
        record is then kept as unverified); a known manifest that could not be refreshed is
        still the one to verify with, so a record it refutes is refused. Raises
        TombstoneVerificationFailedError (audited) for a conflicting manifest."""
        if org == self.org:
            return None
        manifest = self.compliance.manifests.find(org)
        if manifest is not None and holds_key(manifest):
            return None
        try:
            self._fetch_manifest(org, via)
        except (PeerUnreachableError, PeerRefusedError) as e:
            if self.compliance.manifests.find(org) is None:
                return str(e)
        except TombstoneVerificationFailedError:
            raise
        except VerificationError as e:
            self.compliance.audit.append(
                "tombstone_verification_failed",
                actor=via.name,
                subject=subject,
                details={"org": org, "why": str(e)},
            )
            raise TombstoneVerificationFailedError(f"record {subject} does not verify: {e}") from e
        return None

    def accept(
        self, data: object, sender: Peer, channel: str = "push"
    ) -> tuple[int, dict[str, Any]]:
        """Receive a tombstone or revocation from ``sender``: (HTTP status, answer).

        A §23 record, or a seed 001 Tombstone (core/deletion.py). 200 ``{"accepted": true,
        "tombstone_id", "new"}`` once stored (idempotent on id; a record already held that
        comes again by push is audited ``tombstone_replayed``); 202 ``{"accepted": false,
        "status": "unverified"}`` when the signer's manifest cannot be had yet (kept and
        retried). Raises InvalidInputError for a malformed record and
        TombstoneVerificationFailedError (audited) when it does not verify: nothing stored.
        """
        if not isinstance(data, dict):
            raise InvalidInputError("expected a tombstone or revocation record object")
        if is_seed001(data):
            return self._accept_seed001(data, sender, channel)
        if SEED001_FIELD in data:
            raise InvalidInputError(f"{SEED001_FIELD}: reserved for seed 001 tombstones' views")
        kind = kind_of(data.get("id"))
        record: StoredRecord = (
            TombstoneRevocationRecord.from_dict(data)
            if kind == "revocation"
            else TombstoneRecord.from_dict(data)
        )
        tombstones = self.compliance.tombstones
        try:
            org = org_of_signer(record.signed_by)
        except VerificationError as e:
            tombstones.audit.append(
                "tombstone_verification_failed",
                actor=sender.name,
                subject=record.id,
                details={"signed_by": record.signed_by, "why": str(e)},
            )
            raise TombstoneVerificationFailedError(
                f"record {record.id} does not verify: {e}"
            ) from e

        def holds_key(manifest: OrgManifest) -> bool:
            return record.key_id in [k.key_id for k in manifest.keys]

        why = self._have_manifest(org, holds_key, sender, record.id)
        if why is not None:
            return 202, self._keep_unverified(
                record.id, kind, data, signed_by=record.signed_by, sender=sender, why=why
            )
        if isinstance(record, TombstoneRevocationRecord):
            try:
                _, created = tombstones.receive_revocation(data, peer=sender.name)
            except TombstoneNotFoundError as e:
                return 202, self._keep_unverified(
                    record.id, kind, data, signed_by=record.signed_by, sender=sender, why=str(e)
                )
            except ConflictError:
                created = False  # its tombstone was revoked by another record already
            self._replayed(record.id, created, sender, channel)
            return 200, {"accepted": True, "tombstone_id": record.tombstone_id, "new": created}
        stored, created = tombstones.receive(data, peer=sender.name, channel=channel)
        return self._received(stored.id, created, sender, channel)

    def _accept_seed001(
        self, data: dict[str, Any], sender: Peer, channel: str
    ) -> tuple[int, dict[str, Any]]:
        tombstone = Seed001Tombstone.from_dict(data)
        request = tombstone.request

        def valid_then(manifest: OrgManifest) -> bool:
            try:
                key_at(manifest, request.timestamp)
            except VerificationError:
                return False
            return True

        why = self._have_manifest(request.org, valid_then, sender, tombstone.record_id)
        if why is not None:
            kept = self._keep_unverified(
                tombstone.record_id,
                "tombstone",
                data,
                signed_by=request.signed_by,
                sender=sender,
                why=why,
            )
            return 202, kept
        tombstones = self.compliance.tombstones
        stored, created = tombstones.receive_seed001(data, peer=sender.name, channel=channel)
        return self._received(stored.id, created, sender, channel)

    def _received(
        self, tombstone_id: str, created: bool, sender: Peer, channel: str
    ) -> tuple[int, dict[str, Any]]:
        if created:
            self._ack_due(tombstone_id, sender.name)  # wakes the pusher, after the commit
        self._replayed(tombstone_id, created, sender, channel)
        return 200, {"accepted": True, "tombstone_id": tombstone_id, "new": created}

    def _replayed(self, record_id: str, created: bool, sender: Peer, channel: str) -> None:
        """Audit a record pushed again once held (a retry, or a replay): nothing changes."""
        if not created and channel == "push":
            self.compliance.audit.append(
                "tombstone_replayed", actor=sender.name, subject=record_id, details={}
            )

    def _ack_due(self, tombstone_id: str, peer: str) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_outbox SET next_attempt_at = ? WHERE record_id = ? "
                "AND peer = ? AND kind = 'ack' AND delivered_at IS NULL",
                (format_time(self._clock()), tombstone_id, peer),
            )
        self.wake.set()

    def _keep_unverified(
        self,
        record_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        signed_by: str,
        sender: Peer,
        why: str,
    ) -> dict[str, Any]:
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            exists = tx.fetchone(
                "SELECT 1 FROM federation_unverified WHERE record_id = ?", (record_id,)
            )
            if exists is None:
                tx.execute(
                    "INSERT INTO federation_unverified (record_id, kind, record_json, "
                    "received_from, state, attempts, last_error, first_seen) "
                    "VALUES (?, ?, ?, ?, 'unverified', 0, ?, ?)",
                    (
                        record_id,
                        kind,
                        canonical_json(data).decode("utf-8"),
                        sender.name,
                        why[:1000],
                        now,
                    ),
                )
                self.compliance.audit.append_in(
                    tx,
                    "tombstone_unverified",
                    actor=sender.name,
                    subject=record_id,
                    details={"signed_by": signed_by, "why": why[:1000]},
                )
        return {"accepted": False, "status": "unverified", "record_id": record_id, "reason": why}

    def _keep_unverified_data(self, data: object, sender: Peer, why: str) -> None:
        if not isinstance(data, dict):
            return
        if is_seed001(data):
            tombstone = Seed001Tombstone.from_dict(data)
            record_id, signed_by = tombstone.record_id, tombstone.request.signed_by
        else:
            record: StoredRecord = (
                TombstoneRevocationRecord.from_dict(data)
                if kind_of(data.get("id")) == "revocation"
                else TombstoneRecord.from_dict(data)
            )
            record_id, signed_by = record.id, record.signed_by
        self._keep_unverified(
            record_id, kind_of(record_id), data, signed_by=signed_by, sender=sender, why=why
        )

    def retry_unverified(self) -> int:
        """Try every kept record again; return how many were accepted now."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT record_id, record_json, received_from FROM federation_unverified "
                "WHERE state = 'unverified' ORDER BY first_seen, record_id"
            )
        accepted = 0
        for record_id, text, sender_name in rows:
            sender = self.peers.find(sender_name)
            if sender is None:
                continue
            try:
                status, _ = self.accept(parse_json(text), sender)
                state, why = ("verified", "") if status == 200 else ("unverified", "")
            except TombstoneVerificationFailedError as e:
                state, why = "failed", str(e)
            except InvalidInputError as e:
                state, why = "failed", str(e)
            accepted += state == "verified"
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE federation_unverified SET state = ?, attempts = attempts + 1, "
                    "last_error = CASE WHEN ? = '' THEN last_error ELSE ? END "
                    "WHERE record_id = ?",
                    (state, why, why[:1000], record_id),
                )
        return accepted

    def unverified(self) -> list[dict[str, Any]]:
        """Kept records not accepted (yet), for the operator."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT record_id, kind, received_from, state, attempts, last_error, first_seen "
                "FROM federation_unverified WHERE state != 'verified' ORDER BY first_seen"
            )
        names = ("record_id", "kind", "received_from", "state", "attempts", "last_error")
        return [dict(zip((*names, "first_seen"), r, strict=True)) for r in rows]

    # -- acks ---------------------------------------------------------------------------------

    def ready_ack(self, tombstone_id: str) -> dict[str, JsonValue] | None:
        """This node's signed ack of a tombstone it applied, or None while its forgets are
        still pending (the epoch has not committed them yet)."""
        record = self.compliance.tombstones.store.get(tombstone_id)
        forgetting = self.services.forgetting
        with self.db.transaction(write=False) as tx:
            stored = tx.fetchone("SELECT stored_at FROM tombstones WHERE id = ?", (tombstone_id,))
            events = tx.fetchall(
                "SELECT e.artifact_id, e.epoch FROM forget_events e JOIN forget_requests r "
                "ON r.id = e.request_id WHERE r.source = ? AND r.state != 'cancelled' "
                "ORDER BY e.artifact_id",
                (tombstone_id,),
            )
        if record.legal_hold:
            # Seed 001 legal hold: the keys are kept, so there is nothing to wait for.
            artifacts = sorted({str(a) for a, _ in events})
        elif any(epoch is None for _, epoch in events):
            return None
        else:
            artifacts = sorted({str(a) for a, epoch in events if epoch is not None and epoch >= 0})
        level = forgetting.settings.tombstone_level
        status: Literal["applied", "held"] = "held" if record.legal_hold else "applied"
        proofs: list[Mapping[str, JsonValue]] = []
        if level == 2 and status == "applied":
            try:
                proofs = [forgetting.prove(a) for a in artifacts]
            except ConflictError:
                status = "held"  # an operator's hold defers destruction: the keys are kept
                proofs = []
        checkpoint = self.services.checkpoints.latest_or_first_checkpoint().note
        return sign_ack(
            self.services.node.signing_key,
            tombstone_id=tombstone_id,
            node=self.org,
            status=status,
            level=level,
            received_at=str(stored[0]) if stored else format_time(self._clock()),
            applied_at=format_time(self._clock()),
            artifacts=artifacts,
            checkpoint=checkpoint,
            proofs=proofs,
        )

    def record_ack(self, ack: object, sender: Peer) -> dict[str, Any]:
        """Verify and keep an ack of one of the tombstones this node holds: the sender's own,
        or one signed by a node further away that the sender relays unchanged (its manifest
        fetched from the sender and pinned on first use, as for relayed records). A new or
        changed ack is relayed in turn to the peer this node got the tombstone from, so the
        originator learns how every node applied it (docs/adr/0028).

        Raises InvalidInputError, NotFoundError (unknown tombstone) or VerificationError
        (audited as ``ack_verification_failed``)."""
        if not isinstance(ack, dict) or not isinstance(ack.get("tombstone_id"), str):
            raise InvalidInputError("expected an oblivio.tombstone-ack.v1 object")
        tombstone_id = ack["tombstone_id"]
        self.compliance.tombstones.store.get(tombstone_id)
        node = ack.get("node")
        if (
            not isinstance(node, str)
            or node == self.org
            or not 0 < len(node) <= 200
            or not node.isprintable()
            or any(c.isspace() or c in "/?#%" for c in node)
        ):
            raise InvalidInputError(f"ack: expected the name of another node, got {node!r}")
        via = None if node == sender.name else sender.name
        try:
            if via is not None:
                why = self._have_manifest(
                    node,
                    lambda m: ack.get("key_id") in [k.key_id for k in m.keys],
                    sender,
                    tombstone_id,
                )
                if why is not None:
                    raise VerificationError(f"no manifest of {node} can be had: {why}")
            manifest = self.compliance.manifests.require(node)
            verdict = judge_ack(ack, manifest, tombstone_id)
        except (VerificationError, InvalidInputError, NotFoundError) as e:
            self.compliance.audit.append(
                "ack_verification_failed",
                actor=sender.name,
                subject=tombstone_id,
                details={"node": node[:200], "why": str(e)},
            )
            raise VerificationError(f"ack of {tombstone_id} by {node}: {e}") from e
        now = format_time(self._clock())
        text = canonical_json(ack).decode("utf-8")
        with self.db.transaction() as tx:
            held = tx.fetchone(
                "SELECT ack_json FROM federation_acks WHERE tombstone_id = ? AND peer = ?",
                (tombstone_id, node),
            )
            tx.execute(
                "DELETE FROM federation_acks WHERE tombstone_id = ? AND peer = ?",
                (tombstone_id, node),
            )
            tx.execute(
                "INSERT INTO federation_acks (tombstone_id, peer, ack_json, status, detail, "
                "received_at, via) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tombstone_id, node, text, verdict.verdict, verdict.detail, now, via),
            )
            self.compliance.audit.append_in(
                tx,
                "tombstone_ack_received",
                actor=sender.name,
                subject=tombstone_id,
                details={"status": verdict.verdict, "node": node, "via": via},
            )
            if held is None or held[0] != text:
                self._relay_ack(tx, tombstone_id, node, now)
        return {
            "tombstone_id": tombstone_id,
            "node": node,
            "status": verdict.verdict,
            "detail": verdict.detail,
        }

    def _relay_ack(self, tx: Transaction, tombstone_id: str, node: str, now: str) -> None:
        """Queue ``node``'s ack for the peer this node received the tombstone from (none for
        a tombstone it issued), as an outbox row of kind ``relay:<node>``."""
        row = tx.fetchone("SELECT received_from FROM tombstones WHERE id = ?", (tombstone_id,))
        towards = None if row is None else row[0]
        if towards is None or towards == node:
            return
        kind = RELAY_PREFIX + node
        changed = tx.execute(
            "UPDATE federation_outbox SET delivered_at = NULL, next_attempt_at = ?, "
            "attempts = 0 WHERE record_id = ? AND peer = ? AND kind = ?",
            (now, tombstone_id, towards, kind),
        )
        if changed == 0:
            tx.execute(
                "INSERT INTO federation_outbox (record_id, peer, kind, created_at, "
                "next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                (tombstone_id, towards, kind, now, now),
            )
        self.wake.set()

    def ack_of(self, tombstone_id: str, peer: str) -> dict[str, JsonValue] | None:
        """The ack ``peer`` sent for ``tombstone_id``, as received."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT ack_json FROM federation_acks WHERE tombstone_id = ? AND peer = ?",
                (tombstone_id, peer),
            )
        if row is None:
            return None
        value = parse_json(row[0])
        return value if isinstance(value, dict) else None

    def propagation(self, tombstone_id: str) -> dict[str, Any]:
        """Per peer: ``proved``, ``acknowledged``, ``held``, ``non_compliant`` (from its ack),
        else ``silent`` past the ack deadline, else ``pending``; with delivery details. Nodes
        further away appear once their ack is relayed back, ``via`` naming the peer that
        relayed it (None for this node's own peers)."""
        record = self.compliance.tombstones.store.get(tombstone_id)
        deadline = parse_time(record.created_at) + self.settings.ack_deadline
        with self.db.transaction(write=False) as tx:
            deliveries = tx.fetchall(
                "SELECT peer, attempts, delivered_at, last_error FROM federation_outbox "
                "WHERE record_id = ? AND kind = 'tombstone'",
                (tombstone_id,),
            )
            acks = tx.fetchall(
                "SELECT peer, status, detail, received_at, via FROM federation_acks "
                "WHERE tombstone_id = ?",
                (tombstone_id,),
            )
        peers: dict[str, dict[str, Any]] = {}
        silent = self._clock() >= deadline
        for peer, attempts, delivered_at, last_error in deliveries:
            peers[peer] = {
                "peer": peer,
                "status": "silent" if silent else "pending",
                "detail": "no ack by the deadline" if silent else "waiting for an ack",
                "attempts": int(attempts),
                "delivered_at": delivered_at,
                "last_error": last_error,
                "acked_at": None,
                "via": None,
            }
        for peer, status, detail, received_at, via in acks:
            entry = peers.setdefault(
                peer,
                {"peer": peer, "attempts": 0, "delivered_at": None, "last_error": None},
            )
            entry.update({"status": status, "detail": detail, "acked_at": received_at, "via": via})
        return {
            "tombstone_id": tombstone_id,
            "ack_deadline": format_time(deadline),
            "peers": [peers[p] for p in sorted(peers)],
        }

    def tracked(self) -> list[str]:
        """The tombstones this node sent or got acks for, oldest first."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT DISTINCT record_id FROM federation_outbox WHERE kind = 'tombstone' "
                "UNION SELECT DISTINCT tombstone_id FROM federation_acks ORDER BY 1"
            )
        return [str(r[0]) for r in rows]

    # -- delivery (the outbox) ----------------------------------------------------------------

    def due(self, limit: int = 100) -> list[Delivery]:
        """Outbox rows to try now, oldest first, for active peers only."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT o.record_id, o.peer, o.kind, o.attempts FROM federation_outbox o "
                "JOIN federation_peers p ON p.name = o.peer "
                "WHERE o.delivered_at IS NULL AND o.next_attempt_at <= ? AND p.state = 'active' "
                "ORDER BY o.created_at, o.record_id LIMIT ?",
                (format_time(self._clock()), limit),
            )
        return [Delivery(r[0], r[1], r[2], int(r[3])) for r in rows]

    def record_json(self, record_id: str) -> dict[str, JsonValue]:
        """A stored record exactly as stored."""
        table = "tombstones" if kind_of(record_id) == "tombstone" else "tombstone_revocations"
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                f"SELECT record_json FROM {table} WHERE id = ?",  # noqa: S608 - fixed names
                (record_id,),
            )
        if row is None:
            raise NotFoundError(f"no record {record_id}")
        value = parse_json(row[0])
        assert isinstance(value, dict)  # noqa: S101 - stored by this node as an object
        return value

    def deliver(self, delivery: Delivery) -> timedelta | None:
        """Try one outbox row. Returns None when done (or not ready: an ack whose forgets are
        pending waits 1 s without counting an attempt), else the backoff now due."""
        peer = self.peers.require(delivery.peer)
        try:
            if delivery.kind == "ack":
                ack = self.ready_ack(delivery.record_id)
                if ack is None:
                    self._reschedule(delivery, timedelta(seconds=1), None, count=False)
                    return None
                self.client.send_ack(peer.url, peer.token, ack)
            elif delivery.kind.startswith(RELAY_PREFIX):
                relayed = self.ack_of(delivery.record_id, delivery.kind.removeprefix(RELAY_PREFIX))
                if relayed is not None:
                    self.client.send_ack(peer.url, peer.token, relayed)
            elif delivery.kind in self.deliverers:
                if not self.deliverers[delivery.kind](delivery, peer):
                    return None
            else:
                self.client.push(
                    peer.url, peer.token, as_sent(self.record_json(delivery.record_id))
                )
        except (PeerUnreachableError, PeerRefusedError) as e:
            delay = retry_delay(delivery.attempts + 1, self.settings, self._rng)
            if delay is None:
                self._give_up(delivery, str(e))
                return None
            self._reschedule(delivery, delay, str(e), count=True)
            return delay
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_outbox SET delivered_at = ?, attempts = attempts + 1 "
                "WHERE record_id = ? AND peer = ? AND kind = ?",
                (format_time(self._clock()), delivery.record_id, delivery.peer, delivery.kind),
            )
        return None

    def _reschedule(
        self, delivery: Delivery, delay: timedelta, error: str | None, *, count: bool
    ) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_outbox SET next_attempt_at = ?, attempts = attempts + ?, "
                "last_error = COALESCE(?, last_error) "
                "WHERE record_id = ? AND peer = ? AND kind = ?",
                (
                    format_time(self._clock() + delay),
                    1 if count else 0,
                    None if error is None else error[:1000],
                    delivery.record_id,
                    delivery.peer,
                    delivery.kind,
                ),
            )

    def _give_up(self, delivery: Delivery, error: str) -> None:
        """The fixed schedule's last retry failed: the row stays undelivered, never due again."""
        why = f"given up after {delivery.attempts + 1} attempts (fixed schedule): {error}"
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_outbox SET next_attempt_at = ?, attempts = attempts + 1, "
                "last_error = ? WHERE record_id = ? AND peer = ? AND kind = ?",
                (_GIVEN_UP, why[:1000], delivery.record_id, delivery.peer, delivery.kind),
            )
            self.compliance.audit.append_in(
                tx,
                "federation_delivery_given_up",
                actor=delivery.peer,
                subject=delivery.record_id,
                details={"kind": delivery.kind, "attempts": delivery.attempts + 1},
            )

    def resume(self) -> None:
        """At start: acks left waiting by a stop between storing and applying are due."""
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_outbox SET next_attempt_at = ? "
                "WHERE kind = 'ack' AND next_attempt_at = ? AND delivered_at IS NULL",
                (format_time(self._clock()), _NOT_YET),
            )

    # -- pulling ------------------------------------------------------------------------------

    def pull_from(self, peer: Peer) -> int:
        """Pull every record ``peer`` has after our cursor; return how many were new here.

        Each record goes through ``accept``; one that does not verify is audited and skipped
        (never stored); the cursor is saved after each page."""
        since = peer.pull_cursor or "1970-01-01T00:00:00.000Z"
        new = 0
        while True:
            page = self.client.pull(peer.url, peer.token, since, self.settings.pull_page)
            records = [*page.get("tombstones", []), *page.get("revocations", [])]
            for record in records:
                try:
                    status, answer = self.accept(record, peer, channel="pull")
                except TombstoneVerificationFailedError as e:
                    # Audited by accept; kept for the operator (and one more try), since the
                    # cursor moves on and the peer will not offer it again.
                    self._keep_unverified_data(record, peer, str(e))
                    continue
                except InvalidInputError:
                    continue  # not a record at all; the sender's other records still count
                new += status == 200 and bool(answer.get("new"))
            cursor = page.get("cursor")
            if not isinstance(cursor, str) or cursor == since:
                return new
            decode_cursor(cursor)
            self.peers.set_cursor(peer.name, cursor)
            since = cursor


def open_federation(
    services: NodeServices,
    *,
    client: PeerClient | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Federation:
    """The federation of an open node, with the settings of its config.json."""
    from datetime import UTC

    from oblivio.federation.settings import federation_settings

    return Federation(
        services,
        federation_settings(services.node.config.federation),
        client or PeerClient(),
        clock or (lambda: datetime.now(UTC)),
    )
