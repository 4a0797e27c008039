"""The node itself over HTTP: its manifest, its audit log and the public health of its epoch
loop.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from oblivio.core.canonical import JsonValue
from oblivio.interfaces.http.common import Admin, AllServices, Services

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
