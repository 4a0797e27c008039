"""Belief routes (DESIGN.md §12, seed 001; docs/adr/0024).

Operator routes (API keys): ``POST /v1/beliefs`` shares a belief with peers, ``GET
/v1/beliefs/{id}`` reads it (seed 001's ``{status: 'deleted', tombstone, content: null}`` once
deleted), ``DELETE /v1/beliefs/{id}`` withdraws it in its grace period or tombstones it.

Peer routes (capability tokens, in ``belief_federation_routes`` under the federation
prefixes, plain JSON bodies): ``POST /v1/federation/beliefs`` (``belief:write``) receives a
belief from its origin, ``GET /v1/federation/beliefs/{id}`` (``belief:read``) answers its origin
or a recipient honestly: the content while it is readable here, else deleted and no content.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, StrictStr

from oblivio.core.canonical import JsonValue
from oblivio.core.encoding import b64url_decode
from oblivio.core.errors import InvalidInputError
from oblivio.federation.beliefs import Beliefs
from oblivio.federation.peers import Peer
from oblivio.interfaces.federation_routes import BeliefReader, capability
from oblivio.interfaces.http import Admin, OpenNode, Reader, _Strict


def the_beliefs(request: Request) -> Beliefs:
    """The node's beliefs, opened with its federation when the app started."""
    value: Beliefs = request.app.state.beliefs
    return value


BeliefsDep = Annotated[Beliefs, Depends(the_beliefs)]
BeliefWriter = Annotated[Peer, Depends(capability("belief:write"))]


class BeliefShare(_Strict):
    """POST /v1/beliefs: a payload (base64url) or a stored artifact, shared with peers."""

    plaintext_b64url: StrictStr | None = None
    artifact_id: StrictStr | None = Field(default=None, max_length=64)
    metadata: dict[str, Any] = Field(default_factory=dict)
    recipients: list[StrictStr] = Field(min_length=1, max_length=64)


def share_payload(body: BeliefShare, node: OpenNode) -> tuple[bytes, dict[str, JsonValue]]:
    """The plaintext and metadata a share names: its own payload, or an artifact's plaintext
    (never the artifact's metadata, which the signed envelope would keep in clear)."""
    if (body.plaintext_b64url is None) == (body.artifact_id is None):
        raise InvalidInputError("expected exactly one of plaintext_b64url and artifact_id")
    if body.artifact_id is not None:
        # Only the metadata given: the envelope's stays readable after the belief is forgotten.
        return node.vault.get(body.artifact_id), dict(body.metadata)
    try:
        return b64url_decode(str(body.plaintext_b64url)), dict(body.metadata)
    except ValueError as e:
        raise InvalidInputError(f"plaintext_b64url: {e}") from e


belief_routes = APIRouter()


@belief_routes.post("/v1/beliefs", status_code=201, summary="Share a belief with peers")
def post_belief(
    body: BeliefShare, beliefs: BeliefsDep, node: OpenNode, key: Admin
) -> dict[str, Any]:
    """Encrypt for each recipient; ``pending_federation`` for ``propagation_delay_seconds``."""
    plaintext, metadata = share_payload(body, node)
    return beliefs.share(plaintext, metadata, list(body.recipients), actor=key.name)


@belief_routes.get("/v1/beliefs/{belief_id}", summary="Read a belief (seed 001 query_belief)")
def get_belief(belief_id: str, beliefs: BeliefsDep, _: Reader) -> dict[str, Any]:
    """The content while readable; ``{status: 'deleted', tombstone, content: null}`` after."""
    return beliefs.read(belief_id)


@belief_routes.delete("/v1/beliefs/{belief_id}", summary="Delete a belief")
def delete_belief(belief_id: str, beliefs: BeliefsDep, key: Admin) -> dict[str, Any]:
    """Withdrawn while pending (no tombstone, nothing sent), else tombstoned."""
    return beliefs.delete(belief_id, key.name)


belief_federation_routes = APIRouter()


@belief_federation_routes.post(
    "/v1/federation/beliefs", summary="Receive a belief from its origin (belief:write)"
)
def federation_post_belief(
    body: dict[str, JsonValue], beliefs: BeliefsDep, peer: BeliefWriter
) -> dict[str, Any]:
    """Verify the envelope, open this node's key-blob entry, re-wrap the key here."""
    return beliefs.receive(body, peer)


@belief_federation_routes.get(
    "/v1/federation/beliefs/{belief_id}", summary="A belief as this node holds it (belief:read)"
)
def federation_get_belief(
    belief_id: str, beliefs: BeliefsDep, peer: BeliefReader
) -> dict[str, Any]:
    """For the belief's origin or a recipient: the content, or deleted without content."""
    return beliefs.read(belief_id, peer)
