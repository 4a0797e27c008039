"""Peers and the capability tokens a node issues them (DESIGN.md §12).

A peer is pinned by its verifier key (``oblivio key`` on the peer): its manifest is accepted only
if the chain reaches that key, and is then trusted with its first key as the anchor, so a later
manifest must extend it. A peer's name is its org (its node name): records it signs name
``agent:NAME/…``, and its capability tokens name it as their subject.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from oblivio.core.canonical import parse_json
from oblivio.core.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from oblivio.core.identifiers import format_time
from oblivio.core.manifest import verify_manifest
from oblivio.core.note import parse_verifier_key
from oblivio.core.signing import SigningKey, key_id_of
from oblivio.federation.tokens import (
    Capability,
    CapabilityDeniedError,
    TokenRevokedError,
    issue_token,
    validate_verbs,
    verify_token,
)
from oblivio.node.audit import AuditLog
from oblivio.node.ids import new_uuid7
from oblivio.node.manifests import ManifestRegistry
from oblivio.store.database import Database

PEER_STATES: Final = ("active", "isolated", "removed")
ISOLATED_VERBS: Final = ("tombstone:write", "ack:write")
"""What an isolated peer may still do here: deliver tombstones, revocations and acks
(DESIGN.md §12: its tombstones are still accepted and applied)."""
_COLUMNS = "name, url, verifier_key, anchor_key_id, token, state, reputation, pull_cursor"


@dataclass(frozen=True)
class Peer:
    """A peer row."""

    name: str
    url: str
    verifier_key: str
    anchor_key_id: str
    token: str | None
    state: str
    reputation: float
    pull_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        """What ``peer list`` shows (never the token itself)."""
        return {
            "name": self.name,
            "url": self.url,
            "verifier_key": self.verifier_key,
            "state": self.state,
            "reputation": self.reputation,
            "has_token": self.token is not None,
        }


class PeerIsolatedError(AccessDeniedError):
    """An isolated peer asked for anything but delivering tombstones or acks: 403."""

    code = "peer_isolated"


def _peer(row: tuple[Any, ...]) -> Peer:
    return Peer(row[0], row[1], row[2], row[3], row[4], row[5], float(row[6]), row[7])


def validate_peer_url(url: str) -> str:
    """An http(s) base URL without query or fragment, trailing slash removed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InvalidInputError(f"peer URL: expected http(s)://HOST[:PORT][/PATH], got {url!r}")
    return url.rstrip("/")


class Peers:
    """The federation_peers and capability_tokens tables."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        registry: ManifestRegistry,
        *,
        org: str,
        signing_key: Callable[[], SigningKey],
        clock: Callable[[], datetime],
    ) -> None:
        self.db = db
        self.audit = audit
        self.registry = registry
        self.org = org
        self._signing_key = signing_key
        self._clock = clock

    def add(
        self, name: str, url: str, verifier_key: str, manifest_json: object, token: str | None
    ) -> Peer:
        """Pin a peer (or update the URL and token of a pinned one).

        Checks: (1) the verifier key parses and names ``name``; (2) the manifest verifies, is
        ``name``'s, and its chain holds the pinned key; (3) it extends any manifest of ``name``
        already trusted. Raises InvalidInputError, VerificationError (nothing stored then) or
        ConflictError when ``name`` is pinned to another key.
        """
        url = validate_peer_url(url)
        if name == self.org:
            raise InvalidInputError(f"peer add: {name} is this node")
        verifier = parse_verifier_key(verifier_key)
        if verifier.name != name or verifier.algorithm != 1:
            raise InvalidInputError(
                f"peer add: expected an Ed25519 verifier key of {name!r}, got one of "
                f"{verifier.name!r}"
            )
        pinned = key_id_of(verifier.public_key)
        manifest = verify_manifest(manifest_json)
        if manifest.org != name:
            raise VerificationError(f"peer manifest: expected org {name!r}, got {manifest.org!r}")
        if pinned not in [k.key_id for k in manifest.keys]:
            raise VerificationError(
                f"peer manifest of {name}: its chain does not reach the pinned key {pinned}"
            )
        anchor = manifest.keys[0].key_id
        existing = self.find(name)
        if existing is not None and existing.anchor_key_id != anchor:
            raise ConflictError(
                f"peer {name} is pinned to anchor {existing.anchor_key_id}, not {anchor}"
            )
        self.registry.trust(manifest_json, anchor)
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE federation_peers SET url = ?, verifier_key = ?, "
                "token = COALESCE(?, token), updated_at = ?, "
                # An isolated peer stays isolated: only `peer reinstate` lifts it (audited).
                "state = CASE WHEN state = 'isolated' THEN 'isolated' ELSE 'active' END "
                "WHERE name = ?",
                (url, verifier_key, token, now, name),
            )
            if changed == 0:
                tx.execute(
                    "INSERT INTO federation_peers (name, url, verifier_key, anchor_key_id, token, "
                    "state, reputation, pull_cursor, added_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, 'active', '1.0', NULL, ?, ?)",
                    (name, url, verifier_key, anchor, token, now, now),
                )
            self.audit.append_in(
                tx,
                "peer_added" if changed == 0 else "peer_updated",
                subject=name,
                details={"url": url, "anchor_key_id": anchor, "token": token is not None},
            )
        return self.require(name)

    def find(self, name: str) -> Peer | None:
        """The peer called ``name`` (any state), or None."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                f"SELECT {_COLUMNS} FROM federation_peers WHERE name = ?",  # noqa: S608
                (name,),
            )
        return None if row is None else _peer(tuple(row))

    def require(self, name: str) -> Peer:
        """The peer called ``name``; raises NotFoundError."""
        peer = self.find(name)
        if peer is None:
            raise NotFoundError(f"no peer named {name!r}")
        return peer

    def every(self, state: str | None = None) -> list[Peer]:
        """Every peer (in ``state`` if given), by name."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                f"SELECT {_COLUMNS} FROM federation_peers ORDER BY name"  # noqa: S608
            )
        peers = [_peer(tuple(r)) for r in rows]
        return [p for p in peers if state is None or p.state == state]

    def remove(self, name: str) -> None:
        """Mark a peer removed and revoke every token issued to it; its outbox rows wait."""
        self.require(name)
        now = format_time(self._clock())
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE federation_peers SET state = 'removed', updated_at = ? WHERE name = ?",
                (now, name),
            )
            tx.execute(
                "UPDATE capability_tokens SET revoked_at = ? WHERE peer = ? AND revoked_at IS NULL",
                (now, name),
            )
            self.audit.append_in(tx, "peer_removed", subject=name)

    def set_cursor(self, name: str, cursor: str) -> None:
        """Remember where pulling from ``name`` stopped."""
        with self.db.transaction() as tx:
            tx.execute("UPDATE federation_peers SET pull_cursor = ? WHERE name = ?", (cursor, name))

    def issue_token(self, name: str, verbs: list[str], lifetime_seconds: float) -> str:
        """A capability token for the active peer ``name`` (recorded by its jti, audited)."""
        peer = self.require(name)
        if peer.state != "active":
            raise InvalidInputError(f"peer {name} is {peer.state}")
        try:
            granted = validate_verbs(verbs)
        except CapabilityDeniedError as e:
            raise InvalidInputError(str(e)) from e
        now = self._clock()
        jti = new_uuid7()
        token = issue_token(
            self._signing_key(),
            issuer=self.org,
            subject=name,
            verbs=granted,
            jti=jti,
            now=now,
            lifetime=timedelta(seconds=lifetime_seconds),
        )
        expires = now + timedelta(seconds=lifetime_seconds)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO capability_tokens (jti, peer, verbs, issued_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (jti, name, json.dumps(list(granted)), format_time(now), format_time(expires)),
            )
            self.audit.append_in(
                tx, "capability_issued", subject=name, details={"jti": jti, "verbs": granted}
            )
        return token

    def authorize(self, token: str, verb: str | tuple[str, ...]) -> Peer:
        """The peer a token of this node names, if it grants ``verb`` (or one of them).

        Checks (tokens.py): signature with one of this org's manifest keys, issuer, expiry,
        a jti this node issued to that subject and has not revoked, the subject is an active
        peer (an isolated one only for ISOLATED_VERBS), and the verb. Raises
        CapabilityDeniedError (or a kind of it) naming why, PeerIsolatedError (403).
        """
        keys = [k.key for k in self.registry.require(self.org).keys]
        capability: Capability = verify_token(token, keys, issuer=self.org, now=self._clock())
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT peer, revoked_at FROM capability_tokens WHERE jti = ?", (capability.jti,)
            )
        if row is None or row[0] != capability.subject:
            raise CapabilityDeniedError("capability token: not issued by this node")
        if row[1] is not None:
            raise TokenRevokedError(f"capability token {capability.jti} was revoked at {row[1]}")
        peer = self.find(capability.subject)
        if peer is None or peer.state not in ("active", "isolated"):
            state = "unknown" if peer is None else peer.state
            raise TokenRevokedError(f"capability token: peer {capability.subject} is {state}")
        verbs = (verb,) if isinstance(verb, str) else verb
        if peer.state == "isolated" and not any(v in ISOLATED_VERBS for v in verbs):
            raise PeerIsolatedError(
                f"peer {peer.name} is isolated (reputation {peer.reputation}): this node takes "
                "only its tombstones, revocations and acks (forgetting never hurts)"
            )
        if not any(v in capability.verbs for v in verbs):
            capability.require(verbs[0])  # raises, naming the verb
        return peer

    def tokens(self, name: str) -> list[dict[str, Any]]:
        """The tokens issued to ``name`` (jti, verbs, dates), never the tokens themselves."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT jti, verbs, issued_at, expires_at, revoked_at FROM capability_tokens "
                "WHERE peer = ? ORDER BY issued_at",
                (name,),
            )
        return [
            {
                "jti": r[0],
                "verbs": parse_json(r[1]),
                "issued_at": r[2],
                "expires_at": r[3],
                "revoked_at": r[4],
            }
            for r in rows
        ]
