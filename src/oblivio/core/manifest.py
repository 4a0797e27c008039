"""Org manifests (*spec* ``oblivio.manifest.v1``, DESIGN.md §10, seed 002 §23.2.2, §23.4.2).

An org's signing keys form a rotation chain: the first key is the org's trust anchor (pinned by
its key id out of band), and every later key is endorsed by its predecessor's Ed25519 signature
over the JCS bytes of the new entry without ``endorsement_b64``::

    {"type": "oblivio.manifest.v1", "org": "node-a.example",
     "keys": [{"key_id": hex, "public_key_b64": b64url, "created_at": time,
               "predecessor": null | key_id, "endorsement_b64": null | b64url}, ...],
     "federation_key": {oblivio.federation-key.v1, signed by a key of the chain} | absent}

The optional ``federation_key`` (core/belief.py) publishes the org's X25519 and
ML-KEM-768 + X25519 federation keys; manifests without it keep verifying.

A key is valid for records created from its own ``created_at`` until its successor's; a record
signed by a rotated-out key after the rotation does not verify. Records name their signer as
``agent:ORG/NAME`` (or ``service:ORG/NAME``), and verifiers resolve the manifest of that ORG —
never of the peer that relayed the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from oblivio.core.belief import FederationKey, verify_federation_key
from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import VerificationError
from oblivio.core.identifiers import parse_time
from oblivio.core.signing import SigningKey, VerifyKey

MANIFEST_TYPE = "oblivio.manifest.v1"
SIGNER_NAMESPACES = ("agent", "service")


@dataclass(frozen=True)
class ManifestKey:
    """One key of an org's chain, with the window in which it may sign."""

    key: VerifyKey
    created_at: datetime
    retired_at: datetime | None

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the raw public key."""
        return self.key.key_id


@dataclass(frozen=True)
class OrgManifest:
    """A verified manifest: the org's name and its key chain, oldest first."""

    org: str
    keys: tuple[ManifestKey, ...]
    raw: Mapping[str, JsonValue]
    federation_key: FederationKey | None = None
    """The org's published federation keys (core/belief.py); None in manifests made before
    federation keys existed, which keep verifying."""

    def raw_keys(self) -> list[JsonValue]:
        """The key entries exactly as the manifest holds them."""
        return list(self.raw["keys"])

    @property
    def current_key_id(self) -> str:
        """The key id that signs new records."""
        return self.keys[-1].key_id

    def key_for(self, key_id: str, created_at: str) -> VerifyKey:
        """The key ``key_id`` if it was this org's signing key at ``created_at``.

        Raises VerificationError naming why not: not in this org's manifest, not yet valid, or
        rotated out before the record was made.
        """
        for entry in self.keys:
            if entry.key_id != key_id:
                continue
            moment = _time(created_at, "record created_at")
            if moment < entry.created_at:
                raise VerificationError(
                    f"key {key_id} of org {self.org} was created at "
                    f"{entry.created_at.isoformat()}, after the record ({created_at})"
                )
            if entry.retired_at is not None and moment >= entry.retired_at:
                raise VerificationError(
                    f"key {key_id} of org {self.org} was rotated out at "
                    f"{entry.retired_at.isoformat()}, before the record ({created_at})"
                )
            return entry.key
        raise VerificationError(f"key {key_id} is not in the manifest of org {self.org}")


def _time(text: object, what: str) -> datetime:
    if not isinstance(text, str):
        raise VerificationError(f"{what}: expected an RFC 3339 time, got {text!r}")
    try:
        return parse_time(text)
    except Exception as e:
        raise VerificationError(f"{what}: {e}") from e


def org_of_signer(signed_by: str) -> str:
    """The org a ``signed_by`` URI belongs to: ORG in ``agent:ORG/NAME`` or ``service:ORG/NAME``.

    Raises VerificationError when ``signed_by`` names no org.
    """
    namespace, _, rest = signed_by.partition(":")
    org, slash, name = rest.partition("/")
    if namespace not in SIGNER_NAMESPACES or not slash or not org or not name:
        raise VerificationError(
            f"signed_by: expected agent:ORG/NAME or service:ORG/NAME, got {signed_by!r}"
        )
    return org


def signer_uri(org: str, agent_name: str) -> str:
    """``agent:ORG/NAME``: how records name the admin agent that issued them."""
    return f"agent:{org}/{agent_name}"


def _entry_body(entry: Mapping[str, JsonValue], org: str) -> bytes:
    body = {k: v for k, v in entry.items() if k != "endorsement_b64"}
    return canonical_json({"org": org, **body})


def new_manifest(org: str, signing_key: SigningKey, created_at: str) -> dict[str, JsonValue]:
    """A manifest whose only key (the trust anchor) is ``signing_key``."""
    entry: dict[str, JsonValue] = {
        "key_id": signing_key.key_id,
        "public_key_b64": b64url_encode(signing_key.verify_key.public_bytes),
        "created_at": created_at,
        "predecessor": None,
        "endorsement_b64": None,
    }
    return {"type": MANIFEST_TYPE, "org": org, "keys": [entry]}


def rotate_manifest(
    manifest: Mapping[str, JsonValue],
    current_key: SigningKey,
    next_key: SigningKey,
    created_at: str,
) -> dict[str, JsonValue]:
    """Append ``next_key`` to the chain, endorsed by ``current_key`` (the last key)."""
    verified = verify_manifest(manifest)
    if verified.current_key_id != current_key.key_id:
        raise VerificationError(
            f"rotation: expected the current key {verified.current_key_id}, "
            f"got {current_key.key_id}"
        )
    if _time(created_at, "rotation created_at") <= verified.keys[-1].created_at:
        raise VerificationError("rotation: the new key must be created after the current one")
    entry: dict[str, JsonValue] = {
        "key_id": next_key.key_id,
        "public_key_b64": b64url_encode(next_key.verify_key.public_bytes),
        "created_at": created_at,
        "predecessor": current_key.key_id,
    }
    entry["endorsement_b64"] = b64url_encode(current_key.sign(_entry_body(entry, verified.org)))
    return {**manifest, "keys": [*verified.raw_keys(), entry]}


def verify_manifest(manifest: object, anchor_key_id: str | None = None) -> OrgManifest:
    """Verify a manifest's chain; return it parsed.

    Checks, in order: (1) the type and org; (2) the first key has no predecessor and, if given,
    is ``anchor_key_id``; (3) each later key names its predecessor, is endorsed by it, and is
    created after it; (4) each ``key_id`` is the SHA-256 of its public key.
    Raises VerificationError naming the first link that fails.
    """
    if not isinstance(manifest, Mapping) or manifest.get("type") != MANIFEST_TYPE:
        raise VerificationError(f"manifest: expected type {MANIFEST_TYPE!r}")
    org = manifest.get("org")
    if not isinstance(org, str) or not org:
        raise VerificationError("manifest: expected a non-empty org")
    entries = manifest.get("keys")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise VerificationError("manifest: expected a non-empty list of keys")
    parsed: list[tuple[VerifyKey, datetime]] = []
    for index, entry in enumerate(entries):
        parsed.append(
            _verify_entry(index, entry, org, parsed[-1] if parsed else None, anchor_key_id)
        )
    keys = tuple(
        ManifestKey(key, created, parsed[i + 1][1] if i + 1 < len(parsed) else None)
        for i, (key, created) in enumerate(parsed)
    )
    verified = OrgManifest(org, keys, dict(manifest))
    statement = manifest.get("federation_key")
    if statement is None:
        return verified
    if not isinstance(statement, Mapping):
        raise VerificationError("manifest: federation_key must be an object")
    signer = verified.key_for(str(statement.get("key_id")), str(statement.get("created_at")))
    federation_key = verify_federation_key(statement, org, signer)
    return OrgManifest(org, keys, dict(manifest), federation_key)


def _verify_entry(
    index: int,
    entry: object,
    org: str,
    previous: tuple[VerifyKey, datetime] | None,
    anchor_key_id: str | None,
) -> tuple[VerifyKey, datetime]:
    if not isinstance(entry, Mapping):
        raise VerificationError(f"manifest key {index}: expected an object")
    try:
        key = VerifyKey(b64url_decode(str(entry.get("public_key_b64"))))
    except ValueError as e:
        raise VerificationError(f"manifest key {index}: bad public_key_b64: {e}") from e
    if entry.get("key_id") != key.key_id:
        raise VerificationError(
            f"manifest key {index}: expected key_id {key.key_id}, got {entry.get('key_id')!r}"
        )
    created = _time(entry.get("created_at"), f"manifest key {index} created_at")
    if previous is None:
        if entry.get("predecessor") is not None:
            raise VerificationError("manifest key 0: the trust anchor has no predecessor")
        if anchor_key_id is not None and key.key_id != anchor_key_id:
            raise VerificationError(
                f"manifest: expected trust anchor {anchor_key_id}, got {key.key_id}"
            )
        return key, created
    previous_key, previous_created = previous
    if entry.get("predecessor") != previous_key.key_id:
        raise VerificationError(
            f"manifest key {index}: expected predecessor {previous_key.key_id}, "
            f"got {entry.get('predecessor')!r}"
        )
    if created <= previous_created:
        raise VerificationError(f"manifest key {index}: created before its predecessor")
    try:
        endorsement = b64url_decode(str(entry.get("endorsement_b64")))
        previous_key.verify(endorsement, _entry_body(entry, org))
    except (ValueError, VerificationError) as e:
        raise VerificationError(
            f"manifest key {index}: endorsement by {previous_key.key_id} does not verify"
        ) from e
    return key, created


def manifest_extends(old: OrgManifest, new: OrgManifest) -> bool:
    """Whether ``new`` keeps every key of ``old`` in order (an append-only update)."""
    return old.org == new.org and [k.key_id for k in new.keys[: len(old.keys)]] == [
        k.key_id for k in old.keys
    ]
