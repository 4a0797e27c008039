"""The node's HTTP API (ASGI, FastAPI; OpenAPI at /openapi.json), run by ``oblivio serve``.

Routes: seed 002 §23.6 tombstones (admin keys only; agent keys get 403
``tombstone_access_denied``), the federation routes (federation_routes.py: seed 001
``/federation/*`` and ``/v1/federation/*``, capability tokens), the org manifest, the audit log,
artifact routes mirroring the command line, and the public ``/v1/health`` of the epoch loop.
Every error is JSON ``{"error": {"code": …, "message": …}}`` with the §23.7 codes where they
apply; request bodies are size-limited and unknown fields are refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import (
    AccessDeniedError,
    ArtifactForgottenError,
    ConflictError,
    InfrastructureError,
    InvalidEntityUriError,
    InvalidInputError,
    InvalidScopeError,
    NotFoundError,
    OblivioError,
    TombstoneAlreadyExistsError,
    TombstoneVerificationFailedError,
    VerificationError,
)
from oblivio.core.identifiers import CAPABILITIES, Capability, parse_time, validate_entity_uri
from oblivio.core.manifest import org_of_signer, signer_uri
from oblivio.core.tombstones import TOMBSTONE_PREFIX, validate_record_id
from oblivio.federation.peers import PeerIsolatedError
from oblivio.interfaces.witness_routes import start_witnessing, witness_routes
from oblivio.node.api_keys import ApiKey
from oblivio.node.compliance import Compliance
from oblivio.node.node import Node, open_node
from oblivio.node.services import NodeServices, open_services

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


def _status_of(error: OblivioError) -> int:
    return next((status for kind, status in _STATUSES if isinstance(error, kind)), 500)


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit (413) by Content-Length and by count."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
                    await _too_large(limit)(scope, receive, send)
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
                await _too_large(limit)(scope, receive, send)
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TombstoneRequest(_Strict):
    """POST /v1/tombstones (seed 002 §23.6.1)."""

    entity_uri: StrictStr = Field(max_length=600, examples=["user:alice"])
    scope: StrictStr | list[StrictStr] = Field(examples=["*"])
    reason: StrictStr | None = Field(default=None, max_length=2000)
    legal_hold: StrictBool = False


class RevokeRequest(_Strict):
    """POST /v1/tombstones/{id}/revoke (seed 002 §23.6.3)."""

    reason: StrictStr = Field(min_length=1, max_length=2000)


class DeletionRequest(_Strict):
    """Seed 001 ``DeletionRequest``: signed by the originator over its JCS bytes without
    ``signature`` (base64url Ed25519), with the key the originator's manifest held at
    ``timestamp``."""

    belief_id: StrictStr
    tombstone_id: StrictStr
    reason: Literal["user_request", "legal_requirement", "accidental_share", "other"]
    originator_id: StrictStr = Field(max_length=600)
    signature: StrictStr = Field(max_length=200)
    timestamp: StrictStr = Field(max_length=40)
    propagate: StrictBool
    legal_reference: StrictStr | None = Field(default=None, max_length=600)


class ArtifactUpload(_Strict):
    """POST /v1/artifacts: a payload (base64url) with its metadata, entity and scope."""

    plaintext_b64url: StrictStr
    metadata: dict[str, Any] = Field(default_factory=dict)
    entity_uri: StrictStr | None = None
    scope: StrictStr | None = None


class ForgetRequest(_Strict):
    """POST /v1/artifacts/{id}/forget and POST /v1/forget (oblivio forget)."""

    level: Literal[0, 1, 2]
    capabilities: list[Capability] = Field(default_factory=lambda: list(CAPABILITIES), min_length=1)
    reason: StrictStr = Field(default="", max_length=2000)
    authority: StrictStr = Field(default="unspecified", min_length=1, max_length=200)
    requestor: StrictStr = Field(default="", max_length=600)
    wait: StrictBool = Field(default=True, description="commit the epoch before answering")


class EntityForgetRequest(ForgetRequest):
    """POST /v1/forget: every artifact about an entity in the scopes of a pattern."""

    entity_uri: StrictStr = Field(max_length=600, examples=["user:alice"])
    scope: StrictStr | list[StrictStr] = Field(default="*")


class HoldRequest(_Strict):
    """POST /v1/holds: a legal hold on an artifact or on an entity's artifacts."""

    artifact_id: StrictStr | None = None
    entity_uri: StrictStr | None = Field(default=None, max_length=600)
    scope: StrictStr | list[StrictStr] = "*"
    authority: StrictStr = Field(min_length=1, max_length=200)
    reason: StrictStr = Field(default="", max_length=2000)


class HoldRelease(_Strict):
    """POST /v1/holds/{id}/release."""

    authority: StrictStr = Field(min_length=1, max_length=200)


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

# -- manifest and audit ---------------------------------------------------------------------------

node_routes = APIRouter()


@node_routes.get("/v1/manifest", summary="This org's signing-key manifest (oblivio.manifest.v1)")
def get_manifest(services: Services) -> dict[str, Any]:
    """Public: peers verify this org's records with it."""
    return dict(services.own_manifest().raw)


@node_routes.get("/v1/audit", summary="The audit log (admin keys only)")
def get_audit(
    services: Services,
    _: Admin,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Audit events after sequence number ``after``, oldest first."""
    events = services.audit.read(after, limit)
    return {
        "events": [e.to_dict() for e in events],
        "next_after": events[-1].seq if events else after,
    }


# -- tombstones (seed 002 §23.6) ------------------------------------------------------------------

tombstone_routes = APIRouter()


@tombstone_routes.post("/v1/tombstones", status_code=201, summary="Issue a tombstone (§23.6.1)")
def post_tombstone(body: TombstoneRequest, services: Services, key: Admin) -> dict[str, Any]:
    """201 with the signed record; 409 tombstone_already_exists with the active one."""
    record, created = services.tombstones.issue(
        key.name, body.entity_uri, body.scope, body.reason, body.legal_hold
    )
    if not created:
        raise ExistingTombstoneError(record.to_dict())
    return record.to_dict()


@tombstone_routes.get(
    "/v1/tombstones/{entity_uri_encoded:path}", summary="Tombstone status (§23.6.2)"
)
def get_tombstones(entity_uri_encoded: str, services: Services, _: Admin) -> dict[str, Any]:
    """Every tombstone and revocation for the (percent-encoded) entity URI."""
    entity_uri = validate_entity_uri(entity_uri_encoded)
    tombstones, revocations = services.tombstones.store.for_entity(entity_uri)
    if not tombstones:
        return {"tombstoned": False, "tombstones": []}
    revoked = {r.tombstone_id for r in revocations}
    return {
        "tombstoned": any(t.id not in revoked for t in tombstones),
        "tombstones": [t.to_dict() for t in tombstones],
        "revocations": [r.to_dict() for r in revocations],
    }


@tombstone_routes.post(
    "/v1/tombstones/{tombstone_id}/revoke", summary="Revoke a tombstone (§23.6.3)"
)
def post_revoke(tombstone_id: str, body: RevokeRequest, services: Services, key: Admin) -> Response:
    """200 with the signed revocation; the headers say what could not be restored."""
    validate_record_id(tombstone_id, TOMBSTONE_PREFIX)
    revocation = services.tombstones.revoke(key.name, tombstone_id, body.reason)
    erased = len(revocation.erased_artifacts)
    restoration = (
        f"{erased} artifacts erased at level 1 stay unreadable" if erased else "nothing was erased"
    )
    return Response(
        content=json.dumps(revocation.record.to_dict()),
        media_type="application/json",
        headers={
            "Oblivio-Erased-Artifacts": str(erased),
            "Oblivio-Restoration": "suppression lifted; " + restoration,
        },
    )


# -- artifacts (mirroring the command line) -------------------------------------------------------

artifact_routes = APIRouter()


@artifact_routes.post("/v1/artifacts", status_code=201, summary="Store an artifact (oblivio put)")
def post_artifact(body: ArtifactUpload, node: OpenNode, _: Reader) -> dict[str, Any]:
    """Encrypt and store the payload; 201 with its artifact id."""
    try:
        plaintext = b64url_decode(body.plaintext_b64url)
    except ValueError as e:
        raise InvalidInputError(f"plaintext_b64url: {e}") from e
    artifact_id = node.vault.put(plaintext, body.metadata, body.entity_uri, body.scope)
    return {"artifact_id": artifact_id, "size": len(plaintext)}


@artifact_routes.get("/v1/artifacts/{artifact_id}", summary="Read an artifact (oblivio get)")
def get_artifact(artifact_id: str, node: OpenNode, _: Reader) -> dict[str, Any]:
    """The plaintext (base64url) with metadata; 404 artifact_not_found."""
    info = node.vault.describe(artifact_id)
    plaintext = node.vault.get(artifact_id)
    return {
        "artifact_id": info.artifact_id,
        "metadata": dict(info.metadata),
        "entity_uri": info.entity_uri,
        "scope": info.scope,
        "size": info.plaintext_size,
        "plaintext_b64url": b64url_encode(plaintext),
    }


# -- forgetting, proofs, checkpoints and log proofs ---------------------------------------------

forgetting_routes = APIRouter()


def _forget(
    services: NodeServices, key: ApiKey, body: ForgetRequest, **target: Any
) -> dict[str, Any]:
    receipt = services.forgetting.forget(
        level=body.level,
        capabilities=body.capabilities,
        requestor=body.requestor or signer_uri(services.compliance.org, key.name),
        authority=body.authority,
        reason=body.reason,
        **target,
    )
    if body.wait:
        services.forgetting.commit_due()
    status = services.forgetting.status(receipt.request_id)
    return receipt.to_dict() | {"state": status["state"], "events": status["events"]}


@forgetting_routes.post(
    "/v1/artifacts/{artifact_id}/forget", summary="Forget an artifact (oblivio forget)"
)
def post_forget_artifact(
    artifact_id: str, body: ForgetRequest, services: AllServices, key: Operator
) -> dict[str, Any]:
    """Logged before it is acknowledged; with ``wait`` the epoch commits first."""
    return _forget(services, key, body, artifact_id=artifact_id)


@forgetting_routes.post("/v1/forget", summary="Forget an entity's artifacts in a scope pattern")
def post_forget_entity(
    body: EntityForgetRequest, services: AllServices, key: Operator
) -> dict[str, Any]:
    """One request, one event per artifact, one epoch."""
    return _forget(services, key, body, entity_uri=body.entity_uri, scope=body.scope)


@forgetting_routes.get("/v1/forget/{request_id}", summary="A forget request's state")
def get_forget_status(request_id: str, services: AllServices, _: Operator) -> dict[str, Any]:
    """State and per-artifact epochs of a forget request."""
    return services.forgetting.status(request_id)


@forgetting_routes.get("/v1/forget/{request_id}/proof", summary="Proof bundle of a request")
def get_request_proof(request_id: str, services: AllServices, _: Operator) -> dict[str, Any]:
    """One bundle, a proof per artifact, all under the latest checkpoint."""
    return services.forgetting.prove_request(request_id)


@forgetting_routes.get(
    "/v1/artifacts/{artifact_id}/proof", summary="Proof of Forgetting (oblivio prove)"
)
def get_artifact_proof(artifact_id: str, services: AllServices, _: Reader) -> dict[str, Any]:
    """The oblivio.pof.v1 document; 409 unless forgotten at level 2 and committed."""
    return services.forgetting.prove(artifact_id)


@forgetting_routes.post("/v1/holds", status_code=201, summary="Place a legal hold")
def post_hold(body: HoldRequest, services: AllServices, key: Operator) -> dict[str, Any]:
    """Key destruction of the covered artifacts waits until the hold is released."""
    hold_id, targets = services.place_hold(
        artifact_id=body.artifact_id,
        entity_uri=body.entity_uri,
        scope=body.scope,
        authority=body.authority,
        reason=body.reason,
        actor=signer_uri(services.compliance.org, key.name),
    )
    return {"hold_id": hold_id, "artifacts": targets}


@forgetting_routes.post("/v1/holds/{hold_id}/release", summary="Release a legal hold")
def post_hold_release(
    hold_id: str, body: HoldRelease, services: AllServices, key: Operator
) -> dict[str, Any]:
    """Deferred destruction runs at the next epoch."""
    released = services.release_hold(
        hold_id, authority=body.authority, actor=signer_uri(services.compliance.org, key.name)
    )
    return {"hold_id": hold_id, "artifacts": released}


log_routes = APIRouter()


@log_routes.get("/v1/checkpoint", summary="The latest signed checkpoint (oblivio checkpoint)")
def get_checkpoint(services: AllServices) -> dict[str, Any]:
    """Public: the C2SP signed note with its epoch, size and root, and the verifier key."""
    latest = services.checkpoints.latest_or_first_checkpoint()
    return latest.to_dict() | {"verifier_key": services.checkpoints.verifier_key}


@log_routes.get("/v1/checkpoints", summary="Checkpoint history")
def get_checkpoints(
    services: AllServices,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Checkpoints after epoch ``after``, oldest first."""
    return {
        "checkpoints": [c.to_dict() for c in services.checkpoints.checkpoint_history(after, limit)]
    }


@log_routes.get("/v1/log/entries/{index}", summary="One log entry")
def get_log_entry(
    index: Annotated[int, PathParam(ge=0, le=2**62)], services: AllServices
) -> dict[str, Any]:
    """The entry's exact bytes as JSON text (hash these, not a re-serialisation)."""
    if index >= services.checkpoints.log.size():
        raise NotFoundError(f"no log entry {index}")
    return {"index": index, "entry": services.checkpoints.log.entry(index).decode("utf-8")}


@log_routes.get("/v1/log/inclusion", summary="RFC 9162 inclusion proof")
def get_inclusion(
    services: AllServices,
    index: Annotated[int, Query(ge=0, le=2**62)],
    size: Annotated[int, Query(ge=1, le=2**62)],
) -> dict[str, Any]:
    """Inclusion of entry ``index`` in the tree of ``size`` entries."""
    if index >= size or size > services.checkpoints.log.size():
        raise InvalidInputError("log inclusion: need index < size <= the log size")
    return services.checkpoints.log.inclusion_proof(index, size).to_dict()


@log_routes.get("/v1/log/consistency", summary="RFC 9162 consistency proof")
def get_consistency(
    services: AllServices,
    first: Annotated[int, Query(ge=1, le=2**62)],
    second: Annotated[int, Query(ge=1, le=2**62)],
) -> dict[str, Any]:
    """Consistency between the trees of ``first`` and ``second`` entries."""
    if first > second or second > services.checkpoints.log.size():
        raise InvalidInputError("log consistency: need first <= second <= the log size")
    return services.checkpoints.log.consistency_proof(first, second).to_dict()


# -- health ---------------------------------------------------------------------------------------

health_routes = APIRouter()


@health_routes.get(
    "/v1/health",
    summary="Whether the epoch loop commits (public)",
    responses={503: {"description": "the epoch loop cannot commit; the body says why"}},
)
def get_health(request: Request, services: AllServices) -> JSONResponse:
    """200 ``{"status": "ok", "epochs": {…}}`` while the epoch loop commits; 503 with
    ``"status": "unhealthy"`` and a ``reason`` while its attempts fail or it has stopped.

    Public, like /v1/checkpoint: it tells the loop's times, counts and the kind of its last
    error (``EpochHealth``), nothing about artifacts, requests or tombstones."""
    thread: threading.Thread | None = request.app.state.epoch_thread  # None: no loop wanted
    health = services.forgetting.epoch_health()
    running = thread is not None and thread.is_alive()
    epochs: dict[str, JsonValue] = {"running": running} | health.to_dict()
    problem = health.problem()
    if thread is not None and not running:
        problem = "the epoch loop has stopped: pending forgets commit only with wait: true"
    if problem is None:
        return JSONResponse({"status": "ok", "epochs": epochs})
    return JSONResponse(
        {"status": "unhealthy", "reason": problem, "epochs": epochs}, status_code=503
    )


# -- the application ------------------------------------------------------------------------------


async def on_oblivio_error(_: Request, error: Exception) -> JSONResponse:
    """Map oblivio's exception tree to status codes and the JSON error shape."""
    assert isinstance(error, OblivioError)  # noqa: S101 - registered for OblivioError only
    message = " ".join(str(error).split())
    if isinstance(error, ExistingTombstoneError):
        return error_response(409, error.code, message, {"tombstone": error.existing})
    if isinstance(error, TombstoneVerificationFailedError):
        return error_response(400, error.code, message, {"accepted": False, "reason": message})
    status = 403 if isinstance(error, TombstoneAccessDeniedError | ForbiddenError) else None
    return error_response(status or _status_of(error), error.code, message)


async def on_validation_error(_: Request, error: Exception) -> JSONResponse:
    """Body and parameter validation failures: 400 with the §23.7 code where one applies."""
    assert isinstance(error, RequestValidationError)  # noqa: S101 - registered for it only
    problems = error.errors()
    first = problems[0] if problems else {}
    location = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return error_response(400, "invalid_json", "request body is not valid JSON")
    message = f"{'.'.join(location)}: {first.get('msg', 'invalid')}"
    if "entity_uri" in location:
        return error_response(400, InvalidEntityUriError.code, message)
    if "scope" in location:
        return error_response(400, InvalidScopeError.code, message)
    return error_response(400, "invalid_request", message)


async def on_http_error(_: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the JSON error shape."""
    assert isinstance(error, StarletteHTTPException)  # noqa: S101 - registered for it only
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail))


def create_app(home: Path, *, run_epochs: bool = True) -> FastAPI:
    """The ASGI application of the node at ``home``, opened when the app starts.

    With ``run_epochs`` a background thread commits due forgets every epoch interval and a
    heartbeat epoch when idle (the node's configuration sets both); GET /v1/health reports it.
    """

    from oblivio.federation.beliefs import Beliefs
    from oblivio.federation.propagation import open_federation
    from oblivio.federation.workers import FederationWorkers
    from oblivio.interfaces.federation_routes import federation_router
    from oblivio.interfaces.signed_responses import SignedFederationResponses

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        node = open_node(home)
        services = open_services(node)
        app.state.node = node
        app.state.services = services
        stop = threading.Event()
        epochs = threading.Thread(
            target=services.forgetting.run_epochs, args=(stop,), name="oblivio-epochs", daemon=True
        )
        app.state.epoch_thread = epochs if run_epochs else None
        # Federation (DESIGN.md §12): outbox, pull and announce workers beside the epoch loop.
        app.state.federation = open_federation(services)
        app.state.beliefs = Beliefs(app.state.federation)
        app.state.federation_stop = stop
        workers = FederationWorkers(app.state.federation, services.compliance.clock)
        if run_epochs:
            epochs.start()
            workers.start()
        witnesses = start_witnessing(app, services, stop)
        try:
            yield
        finally:
            stop.set()
            services.checkpoints.committed.set()  # wakes the witness thread to see the stop
            workers.stop()
            for thread in (epochs, witnesses):
                if thread.is_alive():
                    thread.join(timeout=30)
            app.state.federation.client.close()
            node.close()

    from oblivio.interfaces.belief_routes import belief_federation_routes, belief_routes
    from oblivio.interfaces.compliance_routes import compliance_routes
    from oblivio.interfaces.recall_routes import recall_routes

    app = FastAPI(
        title="oblivio node",
        version="0.1.0",
        description="Verifiable forgetting: tombstones, artifacts, federation (seed 001/002).",
        lifespan=lifespan,
    )
    for router in (
        recall_routes,
        node_routes,
        tombstone_routes,
        federation_router,
        compliance_routes,
        belief_routes,
        belief_federation_routes,
        artifact_routes,
        forgetting_routes,
        log_routes,
        health_routes,
        witness_routes,
    ):
        app.include_router(router)
    app.add_exception_handler(OblivioError, on_oblivio_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(BodyLimit)
    # Outermost: federation answers are signed as sent, a 413 included (docs/adr/0027).
    app.add_middleware(SignedFederationResponses)
    return app


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


def verify_deletion_request(services: Compliance, request: dict[str, Any]) -> None:
    """Verify a seed 001 DeletionRequest against its originator's manifest.

    ``originator_id`` names the org (an org name, or ``agent:ORG/NAME``); the key is the one
    that org's manifest held at ``timestamp``. Raises VerificationError naming the failed link.
    """
    originator = str(request["originator_id"])
    org = org_of_signer(originator) if ":" in originator else originator
    manifest = services.manifests.find(org)
    if manifest is None:
        raise VerificationError(f"deletion request: no manifest known for originator {org!r}")
    moment = parse_time(str(request["timestamp"]))
    candidates = [
        k
        for k in manifest.keys
        if k.created_at <= moment and (k.retired_at is None or moment < k.retired_at)
    ]
    if not candidates:
        raise VerificationError(f"deletion request: org {org} had no key at {request['timestamp']}")
    try:
        signature = b64url_decode(str(request["signature"]))
    except ValueError as e:
        raise VerificationError(f"deletion request: signature is not base64url: {e}") from e
    body = canonical_json({k: v for k, v in request.items() if k != "signature"})
    candidates[0].key.verify(signature, body)
