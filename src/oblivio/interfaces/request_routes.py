"""HTTP routes of erasure requests (DESIGN.md §18, docs/adr/0032), admin keys only, and the
worker thread of ``oblivio serve`` that processes them.

``POST /v1/requests`` (201), ``GET /v1/requests[?status=]``, ``GET /v1/requests/{id}`` (with
what it links), ``POST /v1/requests/{id}/verify-identity`` (processing then starts in the
worker), ``…/extend``, ``…/cancel``, ``…/retry`` (a failed step now), ``GET …/bundle`` (the
Proof of Forgetting bundle) and ``GET …/report?format=html|pdf``. Errors: 404
``erasure_request_not_found``, 409 ``erasure_request_invalid_transition`` and
``erasure_request_extension_refused``, 400 for bad input; nothing is changed then.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import Field, StrictInt, StrictStr

from oblivio.core.erasure import STATUSES, Regime
from oblivio.core.manifest import signer_uri
from oblivio.interfaces.http import AllServices, Operator, _Strict
from oblivio.interfaces.reports import render, report_format, report_view
from oblivio.node.api_keys import ApiKey
from oblivio.node.erasure_requests import ErasureRequestService, PropagationStatus
from oblivio.node.services import NodeServices

request_routes = APIRouter()


class ErasureRequestBody(_Strict):
    """POST /v1/requests."""

    entity_uri: StrictStr = Field(max_length=600, examples=["user:alice"])
    scope: StrictStr | list[StrictStr] = Field(default="*")
    regime: Regime
    requestor: StrictStr = Field(default="", max_length=600)


class ExtensionBody(_Strict):
    """POST /v1/requests/{id}/extend."""

    days: StrictInt = Field(ge=1, le=366)
    reason: StrictStr = Field(min_length=1, max_length=2000)


def start_erasure_requests(
    app: FastAPI,
    services: NodeServices,
    propagation: PropagationStatus | None,
    stop: threading.Event,
    *,
    run: bool = True,
) -> threading.Thread:
    """Open the erasure-request service for the routes and (with ``run``) start its worker
    thread, which runs until ``stop`` is set."""
    service = ErasureRequestService(
        services, propagation=propagation, clock=services.compliance.clock
    )
    app.state.erasure_requests = service

    def work() -> None:
        service.run_worker(stop, timedelta(seconds=1))

    thread = threading.Thread(target=work, name="oblivio-erasure-requests", daemon=True)
    if run:
        thread.start()
    return thread


def _service(request: Request) -> ErasureRequestService:
    value: ErasureRequestService = request.app.state.erasure_requests
    return value


def _actor(services: NodeServices, key: ApiKey) -> str:
    return signer_uri(services.compliance.org, key.name)


def _now() -> datetime:
    return datetime.now(UTC)


@request_routes.post("/v1/requests", status_code=201, summary="Record an erasure request")
def post_request(
    body: ErasureRequestBody, request: Request, services: AllServices, key: Operator
) -> dict[str, Any]:
    """201 with the request (``received``; its clock waits for the identity check)."""
    service = _service(request)
    created = service.create(
        body.entity_uri, body.scope, body.regime, body.requestor, _actor(services, key)
    )
    return service.describe(created.id)


@request_routes.get("/v1/requests", summary="Erasure requests, with due dates")
def get_requests(
    request: Request,
    _: Operator,
    status: Annotated[str | None, Query(description=" | ".join(STATUSES))] = None,
) -> dict[str, Any]:
    """Every request (or those in ``status``), oldest first, each with its due date."""
    now = _now()
    return {"requests": [r.to_dict(now) for r in _service(request).every(status)]}


@request_routes.get("/v1/requests/{request_id}", summary="One erasure request and its links")
def get_request(request_id: str, request: Request, _: Operator) -> dict[str, Any]:
    """The request with its tombstone, forget requests, per-peer status and checkpoint."""
    return _service(request).describe(request_id)


@request_routes.post(
    "/v1/requests/{request_id}/verify-identity", summary="The requester's identity is verified"
)
def post_verify_identity(
    request_id: str, request: Request, services: AllServices, key: Operator
) -> dict[str, Any]:
    """``received`` -> ``identity_verified``; the worker then processes it by itself."""
    service = _service(request)
    service.verify_identity(request_id, _actor(services, key))
    return service.describe(request_id)


@request_routes.post("/v1/requests/{request_id}/extend", summary="Extend the due date")
def post_extend(
    request_id: str, body: ExtensionBody, request: Request, services: AllServices, key: Operator
) -> dict[str, Any]:
    """Within the regime's limit, with a recorded reason; 409 past it."""
    service = _service(request)
    service.extend(request_id, body.days, body.reason, _actor(services, key))
    return service.describe(request_id)


@request_routes.post("/v1/requests/{request_id}/cancel", summary="Cancel an erasure request")
def post_cancel(
    request_id: str, request: Request, services: AllServices, key: Operator
) -> dict[str, Any]:
    """409 from a status the transition table does not allow it from."""
    service = _service(request)
    service.cancel(request_id, _actor(services, key))
    return service.describe(request_id)


@request_routes.post("/v1/requests/{request_id}/retry", summary="Retry a failed step now")
async def post_retry(request_id: str, request: Request, _: Operator) -> dict[str, Any]:
    """Advance the request now (a failed one from the step that failed)."""
    service = _service(request)
    await run_in_threadpool(service.advance, request_id, retry_now=True)
    return await run_in_threadpool(service.describe, request_id)


@request_routes.get("/v1/requests/{request_id}/bundle", summary="The Proof of Forgetting bundle")
def get_bundle(request_id: str, request: Request, _: Operator) -> dict[str, Any]:
    """``oblivio.pof.bundle`` of every artifact forgotten, under one checkpoint; 404 until
    the request has one."""
    return _service(request).bundle(request_id)


@request_routes.get("/v1/requests/{request_id}/report", summary="The completion report")
async def get_report(
    request_id: str,
    request: Request,
    _: Operator,
    format: Annotated[str, Query(description="html or pdf")] = "html",
) -> Response:
    """HTML or PDF (the bundle attached), as a download."""
    kind = report_format(format)
    service = _service(request)

    def build() -> bytes:
        described = service.describe(request_id)
        bundle = service.bundle(request_id) if described["pof_bundle"] else None
        return render(report_view(described, bundle, _now()), kind)

    content = await run_in_threadpool(build)
    media = "application/pdf" if kind == "pdf" else "text/html; charset=utf-8"
    name = f"erasure-request-{request_id}.{kind}"
    return Response(
        content,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )
