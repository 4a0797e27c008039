"""The node's ASGI application: routers, error handlers and the lifespan that opens the node and
runs the epoch loop, the federation workers and the witness thread.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oblivio.core.errors import (
    InvalidEntityUriError,
    InvalidScopeError,
    OblivioError,
    TombstoneVerificationFailedError,
)
from oblivio.interfaces.http.artifacts import artifact_routes, forgetting_routes
from oblivio.interfaces.http.beliefs import belief_federation_routes, belief_routes
from oblivio.interfaces.http.common import (
    BodyLimit,
    ExistingTombstoneError,
    ForbiddenError,
    TombstoneAccessDeniedError,
    error_response,
    status_of,
)
from oblivio.interfaces.http.compliance import compliance_routes
from oblivio.interfaces.http.log import log_routes
from oblivio.interfaces.http.node import health_routes, node_routes
from oblivio.interfaces.http.recall import recall_routes
from oblivio.interfaces.http.signed_responses import SignedFederationResponses
from oblivio.interfaces.http.tombstones import tombstone_routes
from oblivio.interfaces.http.witness import start_witnessing, witness_routes
from oblivio.node.node import open_node
from oblivio.node.services import open_services

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
    return error_response(status or status_of(error), error.code, message)


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
    from oblivio.interfaces.console.routes import mount_console
    from oblivio.interfaces.http.federation import audit_refused_body, federation_router
    from oblivio.interfaces.http.requests import request_routes, start_erasure_requests

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
        # Erasure requests (DESIGN.md §18): a worker processes verified requests by itself.
        erasures = start_erasure_requests(
            app, services, app.state.federation.propagation, stop, run=run_epochs
        )
        try:
            yield
        finally:
            stop.set()
            services.checkpoints.committed.set()  # wakes the witness thread to see the stop
            workers.stop()
            app.state.erasure_requests.wake.set()
            for thread in (epochs, witnesses, erasures):
                if thread.is_alive():
                    thread.join(timeout=30)
            app.state.federation.client.close()
            node.close()

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
        request_routes,
    ):
        app.include_router(router)
    app.add_exception_handler(OblivioError, on_oblivio_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    mount_console(app)  # the operator console at /console (DESIGN.md §18)
    app.add_middleware(BodyLimit, on_refused=audit_refused_body)
    # Outermost: federation answers are signed as sent, a 413 included (docs/adr/0027).
    app.add_middleware(SignedFederationResponses)
    return app
