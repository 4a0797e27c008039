"""Capability tokens (DESIGN.md §12): PASETO v4.public, signed by the issuing node's key.

A node authorises a peer by issuing it a token ``{"iss": org, "sub": peer org, "verbs": [...],
"iat", "exp", "jti"}``; the peer presents it as a bearer token on every federation request to
that node. The issuer checks, in order: (1) the PASETO signature against one of its own
manifest's keys, (2) issuer and expiry, (3) the subject is a peer it has, (4) the ``jti`` is one
it issued to that subject and has not revoked, (5) the verb the route needs. Signing and
verifying are pyseto's; the claims are ours.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import pyseto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pyseto import KeyInterface

from oblivio.core.encoding import b64url_decode
from oblivio.core.errors import AccessDeniedError, InvalidInputError
from oblivio.core.identifiers import format_time, parse_time
from oblivio.core.signing import SigningKey, VerifyKey

VERBS: Final = (
    "tombstone:read",
    "tombstone:write",
    "belief:write",
    "belief:read",
    "ack:write",
    "witness:cosign",
)
TOKEN_PREFIX: Final = "v4.public."  # noqa: S105 - the PASETO header, not a secret
DEFAULT_LIFETIME: Final = timedelta(days=365)
MAX_TOKEN_CHARS: Final = 4096


class CapabilityDeniedError(AccessDeniedError):
    """A capability token that does not authorise the request: 401."""

    code = "capability_denied"


class TokenExpiredError(CapabilityDeniedError):
    """The token's ``exp`` has passed: 401."""

    code = "capability_expired"


class TokenRevokedError(CapabilityDeniedError):
    """The token was revoked (or its peer removed): 401."""

    code = "capability_revoked"


class VerbMissingError(CapabilityDeniedError):
    """The token lacks the verb the route needs: 401 (DESIGN.md §12)."""

    code = "capability_verb_missing"


@dataclass(frozen=True)
class Capability:
    """The verified claims of a token."""

    issuer: str
    subject: str
    verbs: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    jti: str

    def require(self, verb: str) -> None:
        """Raise VerbMissingError unless the token grants ``verb``."""
        if verb not in self.verbs:
            raise VerbMissingError(
                f"capability token of {self.subject}: expected verb {verb!r}, "
                f"got {list(self.verbs)}"
            )


def validate_verbs(verbs: Iterable[str]) -> tuple[str, ...]:
    """The verbs, deduplicated in a fixed order; raise CapabilityDeniedError for unknown ones."""
    given = list(verbs)
    unknown = [v for v in given if v not in VERBS]
    if unknown or not given:
        raise CapabilityDeniedError(f"verbs: expected some of {list(VERBS)}, got {given}")
    return tuple(v for v in VERBS if v in given)


def paseto_secret_key(signing_key: SigningKey) -> KeyInterface:
    """The v4.public signing key of an oblivio Ed25519 key (its seed, as PKCS#8 PEM)."""
    pem = Ed25519PrivateKey.from_private_bytes(signing_key.seed).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pyseto.Key.new(version=4, purpose="public", key=pem)


def paseto_public_key(key: VerifyKey) -> KeyInterface:
    """The v4.public verifying key of an oblivio Ed25519 public key."""
    pem = Ed25519PublicKey.from_public_bytes(key.public_bytes).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pyseto.Key.new(version=4, purpose="public", key=pem)


def issue_token(
    signing_key: SigningKey,
    *,
    issuer: str,
    subject: str,
    verbs: Sequence[str],
    jti: str,
    now: datetime,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> str:
    """A v4.public token granting ``verbs`` to ``subject``, signed with ``signing_key``.

    The footer names the signing key's id, so the issuer picks the key after a rotation."""
    claims = {
        "iss": issuer,
        "sub": subject,
        "verbs": list(validate_verbs(verbs)),
        "iat": format_time(now),
        "exp": format_time(now + lifetime),
        "jti": jti,
    }
    token = pyseto.encode(
        paseto_secret_key(signing_key), claims, footer={"kid": signing_key.key_id}, serializer=json
    )
    return token.decode("ascii")


def verify_token(
    token: str, keys: Sequence[VerifyKey], *, issuer: str, now: datetime
) -> Capability:
    """Check a token's signature (with the key its footer names, among ``keys``), issuer and
    expiry; return its claims. Subject, revocation and verb are the caller's (they need the
    node's state). Raises CapabilityDeniedError (or TokenExpiredError) naming why."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
        raise CapabilityDeniedError("expected a PASETO v4.public capability token")
    footer = _footer(token)
    named = [k for k in keys if k.key_id == footer.get("kid")]
    if not named:
        raise CapabilityDeniedError("capability token: signed by a key this node does not hold")
    try:
        decoded = pyseto.decode(paseto_public_key(named[0]), token, deserializer=json)
    except Exception as e:  # pyseto raises several kinds; all mean "not a valid token"
        if "expired" in str(e).lower():
            raise TokenExpiredError("capability token has expired") from e
        raise CapabilityDeniedError("capability token: signature does not verify") from e
    claims = decoded.payload
    if not isinstance(claims, dict):
        raise CapabilityDeniedError("capability token: expected JSON claims")
    capability = _claims(claims)
    if capability.issuer != issuer:
        raise CapabilityDeniedError(
            f"capability token: expected issuer {issuer!r}, got {capability.issuer!r}"
        )
    if now >= capability.expires_at:
        raise TokenExpiredError(f"capability token expired at {format_time(capability.expires_at)}")
    return capability


def _footer(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 4:
        return {}
    try:
        value = json.loads(b64url_decode(parts[3]))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _claims(claims: dict[str, Any]) -> Capability:
    try:
        verbs = claims["verbs"]
        if not isinstance(verbs, list) or not all(isinstance(v, str) for v in verbs):
            raise TypeError("verbs")
        fields = [claims[name] for name in ("iss", "sub", "jti", "iat", "exp")]
        if not all(isinstance(f, str) for f in fields):
            raise TypeError("claims")
        return Capability(
            issuer=claims["iss"],
            subject=claims["sub"],
            verbs=tuple(verbs),
            issued_at=parse_time(claims["iat"]),
            expires_at=parse_time(claims["exp"]),
            jti=claims["jti"],
        )
    except (KeyError, TypeError, ValueError, InvalidInputError) as e:
        raise CapabilityDeniedError(f"capability token: malformed claims ({e})") from e
