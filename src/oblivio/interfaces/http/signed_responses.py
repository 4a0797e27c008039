"""Signed federation responses (DESIGN.md §12, docs/adr/0027): ASGI middleware.

Every answer under ``/federation/`` and ``/v1/federation/`` (every route, errors included, and
routes added later) carries ``Oblivio-Response-Signature``: the node's signed statement of the
method, path, status, SHA-256 of the exact body bytes and time (core/evidence.py). A peer that
serves a belief after its tombstone thereby hands over evidence that verifies offline. The
announce stream (``text/event-stream``) never ends, so it has no body to sign: it passes
unsigned. The statement is made after the body is complete, so the body is buffered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from oblivio.core.evidence import SIGNATURE_HEADER, encode_statement, sign_response
from oblivio.core.identifiers import format_time

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SIGNED_PREFIXES: Final = ("/federation/", "/v1/federation/")
_HEADER: Final = SIGNATURE_HEADER.lower().encode("ascii")


def is_signed_path(path: str) -> bool:
    """Whether the answers of ``path`` are signed."""
    return path.startswith(SIGNED_PREFIXES)


class SignedFederationResponses:
    """Sign every federation answer with the node's identity key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_signed_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        streaming = False

        async def signing_send(message: Message) -> None:
            nonlocal start, streaming
            if streaming:
                await send(message)
                return
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    streaming = True
                    await send(message)
                    return
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            header = self._signature(scope, int(start["status"]), body)
            if header is not None:
                start["headers"] = [*start.get("headers", []), (_HEADER, header.encode("ascii"))]
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, signing_send)

    @staticmethod
    def _signature(scope: Scope, status: int, body: bytes) -> str | None:
        """The header value, or None while the node is not open (startup, shutdown)."""
        state = getattr(scope.get("app"), "state", None)
        node = getattr(state, "node", None)
        services = getattr(state, "services", None)
        if node is None or services is None:
            return None
        query = scope.get("query_string", b"")
        path = scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
        statement = sign_response(
            node.signing_key,
            node=services.compliance.org,
            method=scope["method"],
            path=path,
            status=status,
            body=body,
            signed_at=format_time(services.compliance.clock()),
        )
        return encode_statement(statement)
