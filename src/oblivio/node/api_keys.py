"""API keys for the HTTP API: created by the command line, stored hashed, shown once.

Roles: ``admin`` (tombstones, legal holds, audit) and ``agent`` (artifacts; every tombstone route
answers 403 ``tombstone_access_denied``, seed 002 §23.6.2). The ``peer`` role is retired: peers
present capability tokens (federation/tokens.py); existing peer keys still authenticate, so the
federation routes can refuse them with a clear error, and no new one is made (docs/adr/0030).
Each key lists the fact scopes it may read and write in the memory store (DESIGN.md §11; every
scope unless limited at creation). A key is 32 random bytes, so a single SHA-256 (with a named
prefix) is a sound way to store it: there is nothing to brute-force.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.errors import AccessDeniedError, ConflictError, InvalidInputError
from oblivio.core.hashing import API_KEY_PREFIX, sha256
from oblivio.core.identifiers import FACT_SCOPES, format_time, validate_scope
from oblivio.node.audit import AuditLog
from oblivio.node.ids import new_uuid7
from oblivio.store.database import ConstraintViolationError, Database

Role = Literal["admin", "agent", "peer"]
ROLES: tuple[Role, ...] = ("admin", "agent", "peer")
CREATABLE_ROLES: tuple[Role, ...] = ("admin", "agent")
TOKEN_PREFIX = "obk_"  # noqa: S105 - a public marker of the token format, not a secret
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ApiKey:
    """An authenticated caller."""

    id: str
    name: str
    role: Role
    read_scopes: tuple[str, ...] = FACT_SCOPES
    write_scopes: tuple[str, ...] = FACT_SCOPES


def _scope_list(scopes: Sequence[str] | None, what: str) -> str | None:
    """A key's scope list as stored (JSON, canonical order), or None for every scope."""
    if scopes is None:
        return None
    if isinstance(scopes, str) or not scopes:
        raise InvalidInputError(f"API key {what} scopes: expected a non-empty list of scopes")
    chosen = {validate_scope(s) for s in scopes}
    return canonical_json([s for s in FACT_SCOPES if s in chosen]).decode("utf-8")


def _scopes_of(stored: str | None) -> tuple[str, ...]:
    if stored is None:
        return FACT_SCOPES
    value = parse_json(stored)
    return tuple(str(s) for s in value) if isinstance(value, list) else ()


def _hash(token: str) -> str:
    return sha256(API_KEY_PREFIX + token.encode("utf-8")).hex()


class ApiKeys:
    """Creates, authenticates and revokes API keys."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.audit = audit
        self._clock = clock

    def create(
        self,
        name: str,
        role: str,
        *,
        read_scopes: Sequence[str] | None = None,
        write_scopes: Sequence[str] | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; return it and its secret token (never stored, shown once).
        ``read_scopes``/``write_scopes`` limit the fact scopes it may read and write (None:
        every scope).

        Raises InvalidInputError for a bad name, role or scope, ConflictError if the name is
        taken.
        """
        reads = _scope_list(read_scopes, "read")
        writes = _scope_list(write_scopes, "write")
        if not _NAME.fullmatch(name):
            raise InvalidInputError(
                f"API key name: expected [a-z0-9][a-z0-9._-]{{0,63}}, got {name!r}"
            )
        if role == "peer":
            raise InvalidInputError(
                "API key role 'peer' is retired (docs/adr/0030): peers present capability "
                "tokens; issue one with: oblivio peer token NAME --verbs …"
            )
        if role not in CREATABLE_ROLES:
            raise InvalidInputError(
                f"API key role: expected one of {', '.join(CREATABLE_ROLES)}, got {role!r}"
            )
        token = TOKEN_PREFIX + b64url_encode(secrets.token_bytes(32))
        key = ApiKey(new_uuid7(), name, role, _scopes_of(reads), _scopes_of(writes))
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO api_keys (id, name, role, key_hash, created_at, read_scopes, "
                    "write_scopes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key.id, name, role, _hash(token), format_time(self._clock()), reads, writes),
                )
                self.audit.append_in(tx, "api_key_created", subject=name, details={"role": role})
        except ConstraintViolationError as e:
            raise ConflictError(f"an API key named {name!r} already exists") from e
        return key, token

    def authenticate(self, token: str) -> ApiKey:
        """The live key whose token this is; raises AccessDeniedError otherwise."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            raise AccessDeniedError("unknown API key")
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT id, name, role, read_scopes, write_scopes FROM api_keys "
                "WHERE key_hash = ? AND revoked_at IS NULL",
                (_hash(token),),
            )
        if row is None:
            raise AccessDeniedError("unknown or revoked API key")
        return ApiKey(row[0], row[1], cast(Role, row[2]), _scopes_of(row[3]), _scopes_of(row[4]))

    def revoke(self, name: str) -> None:
        """Revoke the key called ``name``; raises InvalidInputError if there is none live."""
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (format_time(self._clock()), name),
            )
            if changed != 1:
                raise InvalidInputError(f"no live API key named {name!r}")
            self.audit.append_in(tx, "api_key_revoked", subject=name)

    def list(self) -> list[dict[str, str | None]]:
        """Every key's name, role and dates (never the secret)."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT name, role, created_at, revoked_at FROM api_keys ORDER BY created_at"
            )
        return [{"name": r[0], "role": r[1], "created_at": r[2], "revoked_at": r[3]} for r in rows]
