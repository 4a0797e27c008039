"""The transparency log: signed checkpoints, their history, log entries and RFC 9162 proofs
(public, like the checkpoint).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from oblivio.core.errors import InvalidInputError, NotFoundError
from oblivio.interfaces.http.common import AllServices

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
