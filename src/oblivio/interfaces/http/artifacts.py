"""Artifacts, forgetting, proofs of forgetting and legal holds, mirroring the command line."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool, StrictStr

from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InfrastructureError, InvalidInputError
from oblivio.core.identifiers import CAPABILITIES, Capability
from oblivio.core.manifest import signer_uri
from oblivio.interfaces.http.common import AllServices, OpenNode, Operator, Reader, Strict
from oblivio.node.api_keys import ApiKey
from oblivio.node.services import NodeServices

# -- request bodies


class ArtifactUpload(Strict):
    """POST /v1/artifacts: a payload (base64url) with its metadata, entity and scope."""

    plaintext_b64url: StrictStr
    metadata: dict[str, Any] = Field(default_factory=dict)
    entity_uri: StrictStr | None = None
    scope: StrictStr | None = None


class ForgetRequest(Strict):
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


class HoldRequest(Strict):
    """POST /v1/holds: a legal hold on an artifact or on an entity's artifacts."""

    artifact_id: StrictStr | None = None
    entity_uri: StrictStr | None = Field(default=None, max_length=600)
    scope: StrictStr | list[StrictStr] = "*"
    authority: StrictStr = Field(min_length=1, max_length=200)
    reason: StrictStr = Field(default="", max_length=2000)


class HoldRelease(Strict):
    """POST /v1/holds/{id}/release."""

    authority: StrictStr = Field(min_length=1, max_length=200)


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
) -> dict[str, Any] | JSONResponse:
    """200 with the request's state; with ``wait`` the epoch commits first. The request is
    stored before the epoch is tried: if the epoch cannot commit now (the key backend or the
    database is out), the answer is 202 with state ``pending`` and the error's kind, and the
    epoch loop completes it later — never an error that would make the client think it lost."""
    receipt = services.forgetting.forget(
        level=body.level,
        capabilities=body.capabilities,
        requestor=body.requestor or signer_uri(services.compliance.org, key.name),
        authority=body.authority,
        reason=body.reason,
        **target,
    )
    deferred: InfrastructureError | None = None
    if body.wait:
        try:
            services.forgetting.commit_due()
        except InfrastructureError as e:
            deferred = e
    status = services.forgetting.status(receipt.request_id)
    answer = receipt.to_dict() | {"state": status["state"], "events": status["events"]}
    if deferred is None:
        return answer
    kind = f"{type(deferred).__name__} ({deferred.code})"
    return JSONResponse(
        status_code=202,
        content=answer | {"epoch_deferred": f"the epoch could not commit now: {kind}"},
    )


@forgetting_routes.post(
    "/v1/artifacts/{artifact_id}/forget",
    summary="Forget an artifact (oblivio forget)",
    response_model=None,
    responses={202: {"description": "stored; the epoch could not commit now and will later"}},
)
def post_forget_artifact(
    artifact_id: str, body: ForgetRequest, services: AllServices, key: Operator
) -> dict[str, Any] | JSONResponse:
    """Logged before it is acknowledged; with ``wait`` the epoch commits first."""
    return _forget(services, key, body, artifact_id=artifact_id)


@forgetting_routes.post(
    "/v1/forget",
    summary="Forget an entity's artifacts in a scope pattern",
    response_model=None,
    responses={202: {"description": "stored; the epoch could not commit now and will later"}},
)
def post_forget_entity(
    body: EntityForgetRequest, services: AllServices, key: Operator
) -> dict[str, Any] | JSONResponse:
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
