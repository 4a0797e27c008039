"""Encrypted beliefs shared between peers (DESIGN.md §12, seed 001, docs/adr/0024).

Sharing: a fresh 256-bit belief key encrypts the plaintext (core/belief.py); the key is stored
as the plaintext of an artifact of entity ``belief:<id>`` in this node's key tree, so forgetting
the belief is forgetting that artifact, with every guarantee an artifact has (levels, proofs).
The signed envelope names each recipient and the KEM of its key-blob entry: the ML-KEM-768 +
X25519 hybrid when its manifest publishes it (ours always does), else DHKEM(X25519).

Grace period (seed 001): a belief waits ``propagation_delay`` as ``pending_federation``, its
outbox rows (kind ``belief``) not yet due. Deleting it then withdraws it: rows cancelled, key
forgotten, ciphertext dropped, no tombstone, nothing sent. The first delivery claims the belief
(``federated``) in the same database row the withdrawal changes, so exactly one of them wins.
After that, deletion is a tombstone on ``belief:<id>`` like any other.

Delivery happens at the row's turn in the outbox: the belief key is read back from its
artifact and wrapped (HPKE) to the recipient's federation key then, so the key blob is never
stored here. Receiving verifies the envelope against the origin's pinned manifest, opens this
node's key-blob entry with its federation key, checks the key opens the ciphertext the envelope
signs, and stores the key as an artifact of entity ``belief:<id>`` here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

from oblivio.core.belief import (
    BELIEF_KEY_SIZE,
    NONCE_SIZE,
    FederationKey,
    FederationKeys,
    Kem,
    check_ciphertext,
    open_belief,
    parse_envelope,
    recipient_for,
    seal_belief,
    sign_envelope,
    verify_envelope,
    wrap_belief_key,
)
from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import (
    ArtifactForgottenError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    OblivioError,
    VerificationError,
)
from oblivio.core.identifiers import format_time
from oblivio.core.manifest import OrgManifest
from oblivio.federation.peers import Peer
from oblivio.federation.propagation import Delivery, Federation
from oblivio.federation.transport import PeerRefusedError, PeerUnreachableError
from oblivio.node.ids import new_uuid7
from oblivio.node.vault import ArtifactInput
from oblivio.store.database import Transaction

BELIEF_PREFIX: Final = "belief:"
KEY_ARTIFACT_TYPE: Final = "oblivio.belief-key.v1"
MAX_RECIPIENTS: Final = 64
MAX_PLAINTEXT: Final = 32 * 1024
"""Bytes of a belief: its delivery (base64url ciphertext, envelope, key blob) must fit the
64 KiB JSON body a peer accepts."""
MAX_METADATA: Final = 4 * 1024
"""Bytes of a belief's metadata (canonical JSON), kept in clear in its envelope."""
_COLUMNS: Final = (
    "id, origin, envelope_json, ciphertext, key_artifact_id, state, received_from, created_at"
)


class BeliefNotFoundError(NotFoundError):
    """No belief with that id here (or not one the caller may read)."""

    code = "belief_not_found"


class BeliefVerificationFailedError(VerificationError):
    """A delivered belief whose envelope, signer, ciphertext or key blob does not verify."""

    code = "belief_verification_failed"


class BeliefRecipientUnknownError(InvalidInputError):
    """A recipient that is not an active peer publishing a federation key, or a delivery to a
    node the envelope does not name (or under a federation key this node does not have)."""

    code = "belief_recipient_unknown"


def entity_of(belief_id: str) -> str:
    """The entity URI of a belief: ``belief:<id>``."""
    return BELIEF_PREFIX + belief_id


class Beliefs:
    """Share, deliver, receive, read and delete beliefs (module docstring)."""

    def __init__(
        self, federation: Federation, random_bytes: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self.federation = federation
        self.services = federation.services
        self.db = federation.db
        self.org = federation.org
        self.audit = federation.compliance.audit
        self._random = random_bytes
        self._clock = federation.clock
        federation.deliverers["belief"] = self._deliver

    # -- sharing ------------------------------------------------------------------------------

    def _federation_keys(self) -> FederationKeys:
        return FederationKeys(self.services.node.signing_key.seed)

    def _refresh_manifest(self, peer: Peer) -> OrgManifest:
        """``peer``'s manifest fetched from it again and trusted if it extends the pinned chain
        (a rotation, a newly published federation key). Raises PeerUnreachableError,
        PeerRefusedError, VerificationError."""
        data = self.federation.client.manifest(peer.url)
        return self.federation.compliance.manifests.trust(data, peer.anchor_key_id)

    def peer_federation_key(self, peer: Peer) -> FederationKey:
        """The federation key ``peer`` publishes in its manifest, fetched again from the peer
        when the manifest held here has none. Raises BeliefRecipientUnknownError."""
        manifest = self.federation.compliance.manifests.find(peer.name)
        if manifest is None or manifest.federation_key is None:
            try:
                manifest = self._refresh_manifest(peer)
            except (PeerUnreachableError, PeerRefusedError, VerificationError) as e:
                raise BeliefRecipientUnknownError(
                    f"peer {peer.name}: no federation key known and its manifest: {e}"
                ) from e
        if manifest.federation_key is None:
            raise BeliefRecipientUnknownError(f"peer {peer.name} publishes no federation key")
        return manifest.federation_key

    def share(
        self,
        plaintext: bytes,
        metadata: Mapping[str, JsonValue],
        recipients: list[str],
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Encrypt ``plaintext`` as a new belief for ``recipients`` (active peers), pending for
        the propagation delay. Raises BeliefRecipientUnknownError, InvalidInputError (too large,
        no recipients, bad metadata): nothing stored then."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise InvalidInputError(
                f"belief: expected at most {MAX_PLAINTEXT} bytes, got {len(plaintext)}"
            )
        if len(canonical_json(dict(metadata))) > MAX_METADATA:
            raise InvalidInputError(f"belief metadata: expected at most {MAX_METADATA} bytes")
        names = sorted(set(recipients))
        if not names or len(names) > MAX_RECIPIENTS:
            raise InvalidInputError(f"recipients: expected 1 to {MAX_RECIPIENTS} peer names")
        entries = []
        for name in names:
            peer = self.federation.peers.find(name)
            if peer is None or peer.state != "active":
                raise BeliefRecipientUnknownError(f"recipient {name!r} is not an active peer")
            key = self.peer_federation_key(peer)
            kem = key.kem()
            entries.append(recipient_for(name, kem, key.public_key(kem)))
        belief_id = new_uuid7()
        material = self._random(BELIEF_KEY_SIZE + NONCE_SIZE)
        belief_key, nonce = material[:BELIEF_KEY_SIZE], material[BELIEF_KEY_SIZE:]
        ciphertext = seal_belief(belief_key, nonce, plaintext, belief_id)
        now = self._clock()
        envelope = sign_envelope(
            self.services.node.signing_key,
            belief_id=belief_id,
            origin=self.org,
            ciphertext=ciphertext,
            metadata=metadata,
            recipients=entries,
            created_at=format_time(now),
        )
        deliver_after = format_time(now + self.federation.settings.propagation_delay)

        def record(tx: Transaction, ids: list[Any]) -> None:
            self._insert(
                tx,
                envelope=envelope,
                ciphertext=ciphertext,
                key_artifact_id=ids[0],
                state="pending_federation",
                deliver_after=deliver_after,
            )
            for entry in entries:
                tx.execute(
                    "INSERT INTO federation_outbox (record_id, peer, kind, created_at, "
                    "next_attempt_at) VALUES (?, ?, 'belief', ?, ?)",
                    (belief_id, entry.node, format_time(now), deliver_after),
                )
            self.audit.append_in(
                tx,
                "belief_shared",
                actor=actor,
                subject=belief_id,
                details={"recipients": names, "kems": [e.kem for e in entries]},
            )

        self._store_key(belief_id, belief_key, record)
        return {
            "id": belief_id,
            "status": "pending_federation",
            "deliver_after": deliver_after,
            "envelope": envelope,
        }

    def _store_key(
        self, belief_id: str, belief_key: bytes, within: Callable[[Transaction, list[Any]], None]
    ) -> str:
        """The belief key as an artifact of entity ``belief:<id>`` (forgotten at once, in the
        same transaction, if a tombstone already covers the belief: ADR 0018)."""
        item = ArtifactInput(
            belief_key,
            {"type": KEY_ARTIFACT_TYPE, "belief_id": belief_id},
            entity_of(belief_id),
            "local",
        )
        [artifact_id] = self.services.node.vault.put_many([item], within=within)
        return artifact_id

    def _insert(
        self,
        tx: Transaction,
        *,
        envelope: Mapping[str, JsonValue],
        ciphertext: bytes,
        key_artifact_id: str,
        state: str,
        deliver_after: str | None,
        received_from: str | None = None,
    ) -> None:
        now = format_time(self._clock())
        tx.execute(
            "INSERT INTO beliefs (id, origin, envelope_json, ciphertext, key_artifact_id, state, "
            "received_from, created_at, deliver_after, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                envelope["id"],
                envelope["origin"],
                canonical_json(dict(envelope)).decode("utf-8"),
                ciphertext,
                key_artifact_id,
                state,
                received_from,
                envelope["created_at"],
                deliver_after or now,
                now,
            ),
        )

    # -- delivering ---------------------------------------------------------------------------

    def _cancel(self, delivery: Delivery, why: str) -> bool:
        with self.db.transaction() as tx:
            tx.execute(
                "DELETE FROM federation_outbox WHERE record_id = ? AND peer = ? "
                "AND kind = 'belief'",
                (delivery.record_id, delivery.peer),
            )
            self.audit.append_in(
                tx,
                "belief_delivery_cancelled",
                subject=delivery.record_id,
                details={"peer": delivery.peer, "why": why},
            )
        return False

    def _deliver(self, delivery: Delivery, peer: Peer) -> bool:
        """Send one belief to one recipient (the outbox's ``belief`` rows). False when the
        belief was withdrawn or deleted meanwhile (the row is cancelled, nothing sent). A
        failure to make the key blob here raises PeerRefusedError, so the row backs off."""
        belief_id = delivery.record_id
        if self.services.compliance.tombstones.store.active_for_entity(entity_of(belief_id)):
            return self._cancel(delivery, "deleted by a tombstone")
        with self.db.transaction() as tx:
            claimed = tx.execute(
                "UPDATE beliefs SET state = 'federated', updated_at = ? WHERE id = ? "
                "AND state IN ('pending_federation', 'federated')",
                (format_time(self._clock()), belief_id),
            )
            row = tx.fetchone(
                "SELECT envelope_json, ciphertext, key_artifact_id FROM beliefs WHERE id = ?",
                (belief_id,),
            )
        if claimed == 0 or row is None or row[1] is None:
            return self._cancel(delivery, "withdrawn")
        try:
            belief_key = self.services.node.vault.get(str(row[2]))
        except ArtifactForgottenError:
            return self._cancel(delivery, "its key was forgotten")
        try:
            envelope = parse_envelope(parse_json(row[0]))
            entry = envelope.recipient(peer.name)
            key = self.peer_federation_key(peer).public_key(entry.kem)
            blob = wrap_belief_key(entry.kem, key, belief_key, belief_id)
        except (InvalidInputError, VerificationError) as e:
            raise PeerRefusedError(f"belief {belief_id} for {peer.name}: {e}", 0, e.code) from e
        body: dict[str, JsonValue] = {
            "envelope": dict(envelope.raw),
            "ciphertext_b64": b64url_encode(bytes(row[1])),
            "key_blob": [{"node": peer.name, "kem": entry.kem, "enc_b64": b64url_encode(blob)}],
        }
        self.federation.client.send_belief(peer.url, peer.token, body)
        return True

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, body: object, sender: Peer) -> dict[str, Any]:
        """A belief delivered by its origin ``sender``: verified, its key re-wrapped here.

        Steps: (1) shape; (2) the origin is the sender and the envelope's signature verifies
        with the origin's manifest key ``key_id`` names at ``created_at``; (3) this node is a
        recipient, under its own current federation key; (4) the ciphertext is the one signed;
        (5) this node's key-blob entry opens and its key opens the ciphertext; (6) stored
        idempotently on the belief id. Every refusal is audited (``belief_refused``) and
        changes nothing. Raises InvalidInputError, BeliefVerificationFailedError,
        BeliefRecipientUnknownError, ConflictError."""
        try:
            return self._receive(body, sender)
        except OblivioError as e:
            self.audit.append(
                "belief_refused",
                actor=sender.name,
                subject=str(body.get("envelope", {}).get("id", ""))[:100]
                if isinstance(body, dict) and isinstance(body.get("envelope"), dict)
                else None,
                details={"code": e.code, "why": str(e)[:500]},
            )
            raise

    def _receive(self, body: object, sender: Peer) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) != {"envelope", "ciphertext_b64", "key_blob"}:
            raise InvalidInputError("expected {envelope, ciphertext_b64, key_blob}")
        envelope = parse_envelope(body["envelope"])
        if envelope.origin != sender.name:
            raise BeliefVerificationFailedError(
                f"belief {envelope.id}: origin {envelope.origin!r} is not the sender "
                f"{sender.name!r}"
            )
        manifest = self.federation.compliance.manifests.require(sender.name)
        if envelope.key_id not in [k.key_id for k in manifest.keys]:
            try:  # the origin may have rotated its key since it was pinned
                manifest = self._refresh_manifest(sender)
            except (PeerUnreachableError, PeerRefusedError, VerificationError) as e:
                raise BeliefVerificationFailedError(
                    f"belief {envelope.id}: key {envelope.key_id} is not in the manifest of "
                    f"{sender.name} and a fresh one cannot be had: {e}"
                ) from e
        try:
            signer = manifest.key_for(envelope.key_id, envelope.created_at)
            verify_envelope(body["envelope"], signer)
        except VerificationError as e:
            raise BeliefVerificationFailedError(f"belief {envelope.id}: {e}") from e
        try:
            entry = envelope.recipient(self.org)
        except VerificationError as e:
            raise BeliefRecipientUnknownError(str(e)) from e
        own = self._federation_keys()
        expected = recipient_for(self.org, entry.kem, own.public_key(entry.kem))
        if entry.public_key_hash != expected.public_key_hash:
            raise BeliefRecipientUnknownError(
                f"belief {envelope.id}: wrapped to a federation key this node does not have"
            )
        blob = self._own_blob(body["key_blob"], entry.kem)
        try:
            ciphertext = b64url_decode(str(body["ciphertext_b64"]))
        except ValueError as e:
            raise InvalidInputError(f"ciphertext_b64: not base64url: {e}") from e
        try:
            check_ciphertext(envelope, ciphertext)
            belief_key = own.open_key_blob(entry.kem, blob, envelope.id)
            open_belief(belief_key, ciphertext, envelope.id)
        except (VerificationError, IntegrityError) as e:
            raise BeliefVerificationFailedError(
                f"belief {envelope.id}: the ciphertext or its key blob does not verify"
            ) from e
        existing = self._row(envelope.id)
        if existing is not None:
            if existing["origin"] != envelope.origin or existing["envelope"] != envelope.raw:
                raise ConflictError(f"belief {envelope.id} is held here with another envelope")
            return {"accepted": True, "belief_id": envelope.id, "new": False}

        def record(tx: Transaction, ids: list[Any]) -> None:
            self._insert(
                tx,
                envelope=envelope.raw,
                ciphertext=ciphertext,
                key_artifact_id=ids[0],
                state="received",
                deliver_after=None,
                received_from=sender.name,
            )
            self.audit.append_in(
                tx,
                "belief_received",
                actor=sender.name,
                subject=envelope.id,
                details={"kem": entry.kem, "key_artifact_id": ids[0]},
            )

        self._store_key(envelope.id, belief_key, record)
        return {"accepted": True, "belief_id": envelope.id, "new": True}

    def _own_blob(self, key_blob: object, kem: Kem) -> bytes:
        if not isinstance(key_blob, list):
            raise InvalidInputError("key_blob: expected a list of {node, kem, enc_b64}")
        for item in key_blob:
            if isinstance(item, dict) and item.get("node") == self.org:
                if item.get("kem") != kem:
                    raise BeliefVerificationFailedError(
                        f"key_blob: expected kem {kem}, got {item.get('kem')!r}"
                    )
                try:
                    return b64url_decode(str(item.get("enc_b64")))
                except ValueError as e:
                    raise InvalidInputError(f"key_blob: not base64url: {e}") from e
        raise BeliefRecipientUnknownError(f"key_blob: no entry for {self.org}")

    # -- reading ------------------------------------------------------------------------------

    def _row(self, belief_id: str) -> dict[str, Any] | None:
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                f"SELECT {_COLUMNS} FROM beliefs WHERE id = ?",  # noqa: S608 - fixed names
                (belief_id,),
            )
        if row is None:
            return None
        names = ("id", "origin", "envelope", "ciphertext", "key_artifact_id", "state")
        found = dict(zip((*names, "received_from", "created_at"), row, strict=True))
        found["envelope"] = parse_json(found["envelope"])
        return found

    def read(self, belief_id: str, peer: Peer | None = None) -> dict[str, Any]:
        """A belief as seed 001's ``query_belief`` answers it: its content while it can be
        read here, else ``{"status": "deleted", "tombstone": …, "content": null}``.
        ``peer`` (a federation caller) must be its origin or a recipient. Raises
        BeliefNotFoundError."""
        if len(belief_id) > 100:
            raise BeliefNotFoundError("no such belief")
        found = self._row(belief_id)
        tombstones = self.services.compliance.tombstones.store.active_for_entity(
            entity_of(belief_id)
        )
        if found is None and not tombstones:
            raise BeliefNotFoundError(f"no belief {belief_id} here")
        if peer is not None and found is not None:
            envelope = parse_envelope(found["envelope"])
            if peer.name != envelope.origin and peer.name not in [
                r.node for r in envelope.recipients
            ]:
                raise BeliefNotFoundError(f"no belief {belief_id} shared with {peer.name}")
        deleted = {"id": belief_id, "status": "deleted", "content": None}
        if tombstones:
            return {**deleted, "tombstone": tombstones[-1].to_dict()}
        assert found is not None  # noqa: S101 - checked above
        if found["state"] == "withdrawn" or found["ciphertext"] is None:
            return {**deleted, "tombstone": None}
        try:
            belief_key = self.services.node.vault.get(str(found["key_artifact_id"]))
        except ArtifactForgottenError:
            return {**deleted, "tombstone": None}
        plaintext = open_belief(belief_key, bytes(found["ciphertext"]), belief_id)
        return {
            "id": belief_id,
            "status": found["state"],
            "origin": found["origin"],
            "envelope": found["envelope"],
            "tombstone": None,
            "content": {
                "plaintext_b64url": b64url_encode(plaintext),
                "metadata": found["envelope"].get("metadata", {}),
            },
        }

    def status(self, belief_id: str) -> dict[str, Any]:
        """Seed 001 ``GET /federation/belief/{id}/status``: ``{exists, deleted, tombstone?}``;
        a belief withdrawn in its grace period is deleted without a tombstone."""
        entity = entity_of(belief_id)
        store = self.services.compliance.tombstones.store
        tombstones, _ = store.for_entity(entity)
        active = store.active_for_entity(entity)
        found = self._row(belief_id)
        with self.db.transaction(write=False) as tx:
            held = tx.fetchone("SELECT 1 FROM artifacts WHERE entity_uri = ? LIMIT 1", (entity,))
        answer: dict[str, Any] = {
            "exists": found is not None or held is not None or bool(tombstones),
            "deleted": bool(active) or (found is not None and found["state"] == "withdrawn"),
        }
        if active:
            answer["tombstone"] = active[-1].to_dict()
        return answer

    # -- deleting -----------------------------------------------------------------------------

    def withdraw(self, belief_id: str, actor: str | None = None) -> bool:
        """Delete a belief still ``pending_federation`` (seed 001 grace period): its deliveries
        cancelled, its ciphertext dropped, its key forgotten at level 2, no tombstone; True.
        False when it is not pending (a delivery has started, or it is not this node's)."""
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE beliefs SET state = 'withdrawn', ciphertext = NULL, updated_at = ? "
                "WHERE id = ? AND state = 'pending_federation'",
                (now, belief_id),
            )
            if changed == 0:
                return False
            row = tx.fetchone("SELECT key_artifact_id FROM beliefs WHERE id = ?", (belief_id,))
            tx.execute(
                "DELETE FROM federation_outbox WHERE record_id = ? AND kind = 'belief'",
                (belief_id,),
            )
            self.audit.append_in(tx, "belief_withdrawn", actor=actor, subject=belief_id)
        assert row is not None  # noqa: S101 - the row was just updated
        self.services.forgetting.forget(
            artifact_id=str(row[0]),
            level=2,
            authority="belief withdrawn in its grace period",
            reason="seed 001 grace period",
            requestor=actor or "",
        )
        return True

    def delete(self, belief_id: str, agent_name: str) -> dict[str, Any]:
        """Delete a belief: withdrawn while pending, else a tombstone on ``belief:<id>``
        (sent to every active peer). Raises BeliefNotFoundError, ConflictError."""
        found = self._row(belief_id)
        if found is None:
            raise BeliefNotFoundError(f"no belief {belief_id} here")
        if self.withdraw(belief_id, actor=agent_name):
            return {"id": belief_id, "status": "withdrawn", "tombstone_id": None}
        active = self.services.compliance.tombstones.store.active_for_entity(entity_of(belief_id))
        if active:
            return {"id": belief_id, "status": "deleted", "tombstone_id": active[-1].id}
        record, _ = self.services.compliance.tombstones.issue(
            agent_name, entity_of(belief_id), "*", "belief deleted by its origin"
        )
        return {"id": belief_id, "status": "deleted", "tombstone_id": record.id}
