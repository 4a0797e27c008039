"""Shared parts of the HTTP API: the JSON error shape and its status codes, the body-size
limit, strict request bodies, and the dependencies that open the node and check API-key roles.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

import anyio
from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import (
    AccessDeniedError,
    ArtifactForgottenError,
    ConflictError,
    InfrastructureError,
    InvalidInputError,
    NotFoundError,
    OblivioError,
    TombstoneAlreadyExistsError,
    VerificationError,
)
from oblivio.federation.peers import PeerIsolatedError
from oblivio.node.api_keys import ApiKey
from oblivio.node.compliance import Compliance
from oblivio.node.node import Node
from oblivio.node.services import NodeServices

JSON_BODY_LIMIT = 64 * 1024
ARTIFACT_BODY_LIMIT = 48 * 1024 * 1024
_ARTIFACT_UPLOAD_PATH = "/v1/artifacts"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- errors --------------------------------------------------------------------------------------


def error_response(
    status: int, code: str, message: str, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """The one JSON error shape of the API."""
    return JSONResponse(
        status_code=status, content={**(extra or {}), "error": {"code": code, "message": message}}
    )


_STATUSES: tuple[tuple[type[OblivioError], int], ...] = (
    (ArtifactForgottenError, 410),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PeerIsolatedError, 403),
    (AccessDeniedError, 401),
    (InvalidInputError, 400),
    (VerificationError, 400),
    (InfrastructureError, 503),
)


def status_of(error: OblivioError) -> int:
    return next((status for kind, status in _STATUSES if isinstance(error, kind)), 500)


BodyRefused = Callable[[Scope, int, int], None]
"""Told (in a worker thread) of each body refused: the request's scope, its size, the limit."""


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit (413) by Content-Length and by count;
    ``on_refused`` (if given) is told of each refusal after the answer went out."""

    def __init__(self, app: ASGIApp, on_refused: BodyRefused | None = None) -> None:
        self.app = app
        self.on_refused = on_refused

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, size: int, limit: int
    ) -> None:
        await _too_large(limit)(scope, receive, send)
        if self.on_refused is not None:
            await anyio.to_thread.run_sync(self.on_refused, scope, size, limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_upload = scope["path"] == _ARTIFACT_UPLOAD_PATH and scope["method"] == "POST"
        limit = ARTIFACT_BODY_LIMIT if is_upload else JSON_BODY_LIMIT
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await self._refuse(scope, receive, send, declared, limit)
                    return
        # Read the whole body first (routes parse JSON bodies whole anyway), so an oversize
        # body is refused before any route sees it, whatever the framework does with errors.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._refuse(scope, receive, send, seen, limit)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return error_response(413, "request_too_large", f"request body exceeds {limit} bytes")


# -- request bodies --------------------------------------------------------------------------------


class Strict(BaseModel):
    """A request body that refuses unknown fields."""

    model_config = ConfigDict(extra="forbid")


# -- dependencies --------------------------------------------------------------------------------


def node_services(request: Request) -> NodeServices:
    """Every service of the node, opened when the app started."""
    value: NodeServices = request.app.state.services
    return value


def compliance(request: Request) -> Compliance:
    """The node's compliance services."""
    return node_services(request).compliance


def the_node(request: Request) -> Node:
    """The open node."""
    value: Node = request.app.state.node
    return value


Services = Annotated[Compliance, Depends(compliance)]
AllServices = Annotated[NodeServices, Depends(node_services)]
OpenNode = Annotated[Node, Depends(the_node)]


def caller(services: Services, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
    """The API key of the request; 401 if missing, unknown or revoked."""
    if authorization is None or not authorization.startswith("Bearer "):
        raise AccessDeniedError("missing bearer API key")
    return services.api_keys.authenticate(authorization.removeprefix("Bearer ").strip())


def admin(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
    """An admin key; any other role gets 403 tombstone_access_denied (§23.6.2)."""
    if key.role != "admin":
        raise TombstoneAccessDeniedError("admin API key required (seed 002 §23.6.2)")
    return key


def operator(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
    """An admin key, for forgetting, holds and the audit log (403 ``forbidden`` otherwise)."""
    if key.role != "admin":
        raise ForbiddenError("admin API key required")
    return key


def reader(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
    """An admin or agent key (artifact routes)."""
    if key.role not in ("admin", "agent"):
        raise ForbiddenError("admin or agent API key required")
    return key


Admin = Annotated[ApiKey, Depends(admin)]
Operator = Annotated[ApiKey, Depends(operator)]
Reader = Annotated[ApiKey, Depends(reader)]


class TombstoneAccessDeniedError(AccessDeniedError):
    """A non-admin key on a tombstone route (seed 002 §23.7): 403."""

    code = "tombstone_access_denied"


class ForbiddenError(AccessDeniedError):
    """A valid key whose role does not allow the route: 403."""

    code = "forbidden"


class ExistingTombstoneError(TombstoneAlreadyExistsError):
    """409 with the active tombstone that already covers the entity and scope."""

    def __init__(self, existing: dict[str, JsonValue]) -> None:
        super().__init__(f"active tombstone {existing['id']} already covers this entity and scope")
        self.existing = existing
