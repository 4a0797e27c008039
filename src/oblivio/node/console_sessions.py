"""Operator console sessions (DESIGN.md §18, docs/adr/0033): signed in with an admin API key.

The key is checked once, at sign-in; the browser then holds only a random session token in an
HttpOnly cookie. The database keeps the token's hash (a 32-byte random token needs no slow
hash: there is nothing to brute-force), the admin key it stands for and the session's CSRF
token. A session ends at sign-out, when it expires, or as soon as its key is revoked or is no
longer an admin key: every lookup joins the live key.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, cast

from oblivio.core.encoding import b64url_encode
from oblivio.core.errors import AccessDeniedError
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import format_time
from oblivio.node.api_keys import ApiKey, ApiKeys, Role
from oblivio.node.audit import AuditLog
from oblivio.store.database import Database

SESSION_PREFIX: Final = b"oblivio/console-session/v1"
SESSION_LIFETIME: Final = timedelta(hours=8)
_TOKEN_CHARS: Final = 43  # base64url of 32 bytes


class ConsoleAccessDeniedError(AccessDeniedError):
    """A key that may not sign in to the console (not an admin key): 403."""

    code = "forbidden"


@dataclass(frozen=True)
class ConsoleSession:
    """A live session: the admin key behind it and the token every form must carry."""

    key: ApiKey
    csrf_token: str
    expires_at: str

    def csrf_matches(self, submitted: str) -> bool:
        """Whether a form's CSRF token is this session's (constant time)."""
        return hmac.compare_digest(submitted.encode("utf-8"), self.csrf_token.encode("utf-8"))


def _hash(token: str) -> str:
    return sha256(SESSION_PREFIX + token.encode("utf-8")).hex()


def new_token() -> str:
    """32 random bytes, base64url: a session, CSRF or sign-in form token."""
    return b64url_encode(secrets.token_bytes(32))


class ConsoleSessions:
    """Opens, finds and closes console sessions."""

    def __init__(
        self,
        db: Database,
        api_keys: ApiKeys,
        audit: AuditLog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.api_keys = api_keys
        self.audit = audit
        self._clock = clock

    def sign_in(self, api_key: str) -> tuple[str, ConsoleSession]:
        """Open a session for an admin API key; return the session token (for the cookie only)
        and the session. Raises AccessDeniedError for an unknown or revoked key and
        ConsoleAccessDeniedError for a key of another role; both are audited."""
        try:
            key = self.api_keys.authenticate(api_key)
        except AccessDeniedError:
            self.audit.append("console_sign_in_refused", details={"why": "unknown key"})
            raise
        if key.role != "admin":
            self.audit.append(
                "console_sign_in_refused", subject=key.name, details={"why": f"{key.role} key"}
            )
            raise ConsoleAccessDeniedError("the console needs an admin API key")
        token, csrf = new_token(), new_token()
        now = self._clock()
        expires = format_time(now + SESSION_LIFETIME)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (format_time(now),))
            tx.execute(
                "INSERT INTO console_sessions (token_hash, api_key_id, csrf_token, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                (_hash(token), key.id, csrf, format_time(now), expires),
            )
            self.audit.append_in(tx, "console_signed_in", actor=key.name)
        return token, ConsoleSession(key, csrf, expires)

    def find(self, token: str | None) -> ConsoleSession | None:
        """The live session of a cookie's token, or None (no token, unknown, expired, or its
        key revoked or no longer admin)."""
        if not token or len(token) != _TOKEN_CHARS:
            return None
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT k.id, k.name, k.role, s.csrf_token, s.expires_at "
                "FROM console_sessions s JOIN api_keys k ON k.id = s.api_key_id "
                "WHERE s.token_hash = ? AND s.expires_at > ? AND k.revoked_at IS NULL "
                "AND k.role = 'admin'",
                (_hash(token), format_time(self._clock())),
            )
        if row is None:
            return None
        return ConsoleSession(ApiKey(row[0], row[1], cast(Role, row[2])), row[3], row[4])

    def sign_out(self, token: str, session: ConsoleSession) -> None:
        """End the session of ``token`` (audited)."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", (_hash(token),))
            self.audit.append_in(tx, "console_signed_out", actor=session.key.name)
