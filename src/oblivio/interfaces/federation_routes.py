"""Federation routes (DESIGN.md §12, seed 001 ``/federation/*``, seed 002 §23.4.3).

Peers authenticate with the capability tokens this node issued them (PASETO v4.public), checked
on every request: signature, expiry, subject, revocation, verb. A missing token, a bad one or a
missing verb is 401 with a JSON error, audited as ``capability_denied``; a retired ``peer`` API
key gets 401 ``peer_api_key_retired`` (docs/adr/0030). The operator's routes (deletion requests,
propagation status) take admin API keys, as the other operator routes do.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Final

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import AccessDeniedError
from oblivio.core.identifiers import validate_entity_uri
from oblivio.core.tombstones import TOMBSTONE_PREFIX, validate_record_id
from oblivio.federation.peers import Peer
from oblivio.federation.propagation import Federation, InvalidCursorError, encode_cursor
from oblivio.federation.tokens import CapabilityDeniedError
from oblivio.interfaces.http import (
    Admin,
    DeletionRequest,
    Services,
    verify_deletion_request,
)
from oblivio.node.api_keys import TOKEN_PREFIX

ANNOUNCE_POLL_SECONDS: Final = 0.5
KEEP_ALIVE_SECONDS: Final = 15.0


class PeerApiKeyRetiredError(AccessDeniedError):
    """A ``peer`` API key on a federation route: peers now present capability tokens."""

    code = "peer_api_key_retired"


def the_federation(request: Request) -> Federation:
    """The node's federation, opened when the app started."""
    value: Federation = request.app.state.federation
    return value


FederationDep = Annotated[Federation, Depends(the_federation)]


def capability(verb: str | tuple[str, ...]) -> Callable[..., Peer]:
    """A dependency: the peer whose capability token grants ``verb`` or one of several
    (401 otherwise)."""

    def authorised(
        request: Request,
        federation: FederationDep,
        services: Services,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Peer:
        try:
            if authorization is None or not authorization.startswith("Bearer "):
                raise CapabilityDeniedError("missing bearer capability token")
            token = authorization.removeprefix("Bearer ").strip()
            if token.startswith(TOKEN_PREFIX):
                key = services.api_keys.authenticate(token)
                if key.role == "peer":
                    raise PeerApiKeyRetiredError(
                        "peer API keys no longer authorise federation routes (docs/adr/0030): "
                        "ask the node for a capability token (oblivio peer token NAME --verbs …)"
                    )
                raise CapabilityDeniedError(
                    "federation routes take a peer's capability token, not an API key"
                )
            return federation.peers.authorize(token, verb)
        except AccessDeniedError as e:
            services.audit.append(
                "capability_denied",
                subject=request.url.path[:200],
                details={
                    "verb": verb if isinstance(verb, str) else list(verb),
                    "code": e.code,
                    "why": str(e)[:500],
                },
            )
            raise

    return authorised


TombstoneWriter = Annotated[Peer, Depends(capability("tombstone:write"))]
TombstoneReader = Annotated[Peer, Depends(capability("tombstone:read"))]
AckWriter = Annotated[Peer, Depends(capability("ack:write"))]
BeliefReader = Annotated[Peer, Depends(capability("belief:read"))]
TombstoneExchanger = Annotated[Peer, Depends(capability(("tombstone:read", "tombstone:write")))]
"""A peer that pulls or pushes: either needs the manifests of the orgs whose records it
relays (a push-only peer too)."""

federation_router = APIRouter()


@federation_router.post(
    "/federation/delete", summary="Request deletion of an own belief (seed 001)"
)
def federation_delete(
    body: DeletionRequest,
    request: Request,
    services: Services,
    federation: FederationDep,
    key: Admin,
) -> dict[str, Any]:
    """Verify the originator's signed request; a belief still in its grace period is withdrawn
    (nothing was sent: no tombstone, seed 001); else issue a tombstone for ``belief:<id>``,
    enqueued for every active peer in the same transaction."""
    deletion = body.model_dump()
    if body.legal_reference is None:
        deletion.pop("legal_reference")
    verify_deletion_request(services, deletion)
    if request.app.state.beliefs.withdraw(body.belief_id, actor=key.name):
        return {"tombstone_id": None, "propagation_status": "withdrawn_in_grace_period"}
    validate_record_id(TOMBSTONE_PREFIX + body.tombstone_id, TOMBSTONE_PREFIX)
    reason = body.reason + (f" ({body.legal_reference})" if body.legal_reference else "")
    entity_uri = validate_entity_uri(f"belief:{body.belief_id}")
    record, _ = services.tombstones.issue(key.name, entity_uri, "*", reason)
    peers = len(federation.propagation(record.id)["peers"])
    if not body.propagate:
        status = "local_only"
    elif peers == 0:
        status = "not_propagated: no federation peers configured"
    else:
        status = f"enqueued for {peers} peers"
    return {"tombstone_id": record.id, "propagation_status": status}


@federation_router.post(
    "/federation/tombstone",
    summary="Receive a peer's tombstone or revocation (seed 001, §23.4.2)",
    responses={202: {"description": "kept as unverified: the signer's manifest is not here yet"}},
)
def federation_tombstone(
    record: dict[str, JsonValue], federation: FederationDep, peer: TombstoneWriter
) -> JSONResponse:
    """Verify against the manifest of ``signed_by`` and store idempotently; apply, forward."""
    status, answer = federation.accept(record, peer)
    return JSONResponse(answer, status_code=status)


@federation_router.get(
    "/v1/federation/tombstones", summary="Pull tombstones and revocations (§23.4.3)"
)
def federation_pull(
    federation: FederationDep,
    peer: TombstoneReader,
    since: Annotated[str, Query(max_length=200)] = "1970-01-01T00:00:00.000Z",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Records after ``since`` (an RFC 3339 time, or the opaque cursor of a previous page);
    400 ``invalid_cursor`` (audited) for anything else."""
    try:
        return federation.page(since, limit)
    except InvalidCursorError as e:
        federation.compliance.audit.append(
            "federation_request_refused",
            actor=peer.name,
            subject="/v1/federation/tombstones",
            details={"code": e.code, "why": str(e)[:500]},
        )
        raise


@federation_router.get(
    "/v1/federation/events", summary="Announcements: tombstone_new, revocation_new (SSE)"
)
def federation_events(
    request: Request, federation: FederationDep, _: TombstoneReader
) -> StreamingResponse:
    """Server-Sent Events: ``tombstone_new`` / ``revocation_new`` with the feed's cursor,
    and a keep-alive comment every 15 s."""
    stop: threading.Event = request.app.state.federation_stop

    async def stream() -> AsyncIterator[str]:
        last, _ = await anyio.to_thread.run_sync(federation.feed_position)
        yield ": announcements of new tombstones and revocations\n\n"
        quiet = 0.0
        while not stop.is_set() and not await request.is_disconnected():
            await anyio.sleep(ANNOUNCE_POLL_SECONDS)
            seq, kinds = await anyio.to_thread.run_sync(federation.kinds_after, last)
            if seq > last:
                last, quiet = seq, 0.0
                data = json.dumps({"cursor": encode_cursor(seq)})
                for kind in sorted(kinds):
                    yield f"event: {kind}_new\ndata: {data}\n\n"
            else:
                quiet += ANNOUNCE_POLL_SECONDS
                if quiet >= KEEP_ALIVE_SECONDS:
                    quiet = 0.0
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@federation_router.get(
    "/v1/federation/manifests/{org}", summary="The manifest this node holds for an org"
)
def federation_manifest(
    org: str, federation: FederationDep, _: TombstoneExchanger
) -> dict[str, Any]:
    """For a peer that received a record of ``org`` relayed by this node (§12)."""
    return federation.manifest_json(org)


@federation_router.post("/v1/federation/acks", summary="Receive a signed tombstone ack")
def federation_ack(
    ack: dict[str, JsonValue], federation: FederationDep, peer: AckWriter
) -> dict[str, Any]:
    """Verify an ``oblivio.tombstone-ack.v1`` (and its proofs) with the peer's keys."""
    return federation.record_ack(ack, peer)


@federation_router.get(
    "/v1/federation/propagation/{tombstone_id}", summary="Per-peer propagation of a tombstone"
)
def federation_propagation(
    tombstone_id: str, federation: FederationDep, _: Admin
) -> dict[str, Any]:
    """``proved``, ``acknowledged``, ``held``, ``silent``, ``non_compliant`` or ``pending``."""
    validate_record_id(tombstone_id, TOMBSTONE_PREFIX)
    return federation.propagation(tombstone_id)


@federation_router.get(
    "/federation/belief/{belief_id}/status", summary="Belief deletion status (seed 001)"
)
def federation_belief_status(belief_id: str, request: Request, _: BeliefReader) -> dict[str, Any]:
    """``{exists, deleted, tombstone?}`` for ``belief:<id>`` (federation/beliefs.py)."""
    validate_entity_uri(f"belief:{belief_id}")
    answer: dict[str, Any] = request.app.state.beliefs.status(belief_id)
    return answer
