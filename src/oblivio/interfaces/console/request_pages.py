"""The console's erasure-request pages (DESIGN.md §18): the list with due dates, one request with
what it links and its progress (polled), the actions of ``oblivio request`` as CSRF-checked
forms, and the completion report (HTML, PDF) and proof bundle as downloads. The work is the
erasure-request service's (node/erasure_requests.py), as for ``/v1/requests``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from oblivio.core.erasure import OPEN_STATUSES, REGIMES, STATUSES
from oblivio.core.errors import InvalidInputError, OblivioError
from oblivio.core.manifest import signer_uri
from oblivio.interfaces.console.routes import (
    PREFIX,
    FormSession,
    Session,
    _page,
    _scope_pattern,
    _see_other,
    _services,
)
from oblivio.interfaces.http.common import status_of
from oblivio.interfaces.reports import bundle_file_name, render, report_format, report_view
from oblivio.node.console_sessions import ConsoleSession
from oblivio.node.erasure_requests import ErasureRequestService

MOVING: Final = frozenset({"identity_verified", "in_processing"})
"""Statuses a request leaves by itself (the worker processes it): pages poll while one shows."""

request_pages = APIRouter(prefix=PREFIX, include_in_schema=False)


def _requests(request: Request) -> ErasureRequestService:
    service: ErasureRequestService = request.app.state.erasure_requests
    return service


def _actor(request: Request, session: ConsoleSession) -> str:
    return signer_uri(_services(request).compliance.org, session.key.name)


def _list_page(
    request: Request, session: ConsoleSession, status: int = 200, error: str | None = None
) -> Response:
    now = datetime.now(UTC)
    listed = [r.to_dict(now) for r in reversed(_requests(request).every())]
    return _page(
        request,
        session,
        "requests.html",
        status=status,
        title="Erasure requests",
        requests=listed,
        regimes=REGIMES,
        moving=any(r["status"] in MOVING for r in listed),
        error=error,
    )


@request_pages.get("/requests")
def requests_page(request: Request, session: Session) -> Response:
    """Every request, newest first, with its due date and overdue flag."""
    return _list_page(request, session)


@request_pages.get("/requests.json")
def requests_progress(request: Request, _: Session) -> dict[str, Any]:
    """What the list polls: each request's status and step."""
    now = datetime.now(UTC)
    listed = [r.to_dict(now) for r in _requests(request).every()]
    fields: dict[str, Any] = {}
    for r in listed:
        fields[f"status-{r['id']}"] = r["status"]
        fields[f"step-{r['id']}"] = r["step"] or ""
    return fields | {"done": not any(r["status"] in MOVING for r in listed)}


@request_pages.post("/requests")
def create_request(
    request: Request,
    session: FormSession,
    *,
    entity_uri: Annotated[str, Form(max_length=600)] = "",
    scope: Annotated[str, Form(max_length=200)] = "*",
    regime: Annotated[str, Form(max_length=10)] = "gdpr",
    requestor: Annotated[str, Form(max_length=600)] = "",
) -> Response:
    """Record a request (``received``): its clock waits until the identity is verified."""
    try:
        if regime not in REGIMES:
            raise UnknownRegimeError(f"regime: expected one of {', '.join(REGIMES)}")
        created = _requests(request).create(
            entity_uri.strip(),
            _scope_pattern(scope),
            regime,
            requestor,
            _actor(request, session),
        )
    except OblivioError as e:
        return _list_page(request, session, status_of(e), str(e))
    return _see_other(f"/requests/{created.id}")


def _detail_page(
    request: Request,
    session: ConsoleSession,
    request_id: str,
    status: int = 200,
    error: str | None = None,
) -> Response:
    described = _requests(request).describe(request_id)
    return _page(
        request,
        session,
        "request.html",
        status=status,
        title=f"Erasure request {request_id}",
        r=described,
        links=described["links"],
        moving=described["status"] in MOVING,
        is_open=described["status"] in OPEN_STATUSES,
        statuses=STATUSES,
        error=error,
    )


@request_pages.get("/requests/{request_id}")
def request_page(request: Request, request_id: str, session: Session) -> Response:
    """One request: status, due date, what it links, its timeline; 404 for an unknown id."""
    try:
        return _detail_page(request, session, request_id)
    except OblivioError as e:
        return _page(
            request, session, "refused.html", status=status_of(e), title="Not found",
            error=str(e),
        )  # fmt: skip


@request_pages.get("/requests/{request_id}/progress.json")
def request_progress(request: Request, request_id: str, _: Session) -> dict[str, Any]:
    """What the request page polls; ``done`` (and reload) once it stops moving by itself."""
    described = _requests(request).describe(request_id)
    forgets = described["links"]["forget_requests"] or []
    events = [e for f in forgets for e in f.get("events") or []]
    return {
        "status": described["status"],
        "step": described["step"] or "",
        "attempts": described["attempts"],
        "last_error": described["last_error"] or "",
        "executed": sum(1 for e in events if e.get("epoch") is not None),
        "artifacts": len(events),
        "done": described["status"] not in MOVING,
        "reload": True,
    }


def _act(request: Request, session: ConsoleSession, request_id: str, action: Any) -> Response:
    try:
        action(_requests(request))
    except OblivioError as e:
        return _detail_page(request, session, request_id, status_of(e), str(e))
    return _see_other(f"/requests/{request_id}")


@request_pages.post("/requests/{request_id}/verify-identity")
def verify_identity(request: Request, request_id: str, session: FormSession) -> Response:
    """``received`` -> ``identity_verified``: processing then starts by itself."""
    actor = _actor(request, session)
    return _act(request, session, request_id, lambda s: s.verify_identity(request_id, actor))


@request_pages.post("/requests/{request_id}/extend")
def extend(
    request: Request,
    request_id: str,
    session: FormSession,
    *,
    days: Annotated[int, Form(ge=1, le=366)] = 1,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Extend the due date within the regime's limit, with a recorded reason."""
    actor = _actor(request, session)
    return _act(request, session, request_id, lambda s: s.extend(request_id, days, reason, actor))


@request_pages.post("/requests/{request_id}/cancel")
def cancel(request: Request, request_id: str, session: FormSession) -> Response:
    """Cancel, where the transition table allows it."""
    actor = _actor(request, session)
    return _act(request, session, request_id, lambda s: s.cancel(request_id, actor))


@request_pages.post("/requests/{request_id}/retry")
async def retry(request: Request, request_id: str, session: FormSession) -> Response:
    """Run the request's next step now (a failed one from the step that failed)."""
    service = _requests(request)
    try:
        await run_in_threadpool(service.advance, request_id, retry_now=True)
    except OblivioError as e:
        return _detail_page(request, session, request_id, status_of(e), str(e))
    return _see_other(f"/requests/{request_id}")


@request_pages.get("/requests/{request_id}/report")
async def download_report(
    request: Request,
    request_id: str,
    _: Session,
    format: Annotated[str, Query(max_length=10)] = "html",
) -> Response:
    """The completion report (HTML or PDF, the proof bundle attached) as a download."""
    kind = report_format(format)
    service = _requests(request)

    def build() -> bytes:
        described = service.describe(request_id)
        bundle = service.bundle(request_id) if described["pof_bundle"] else None
        return render(report_view(described, bundle, datetime.now(UTC)), kind)

    content = await run_in_threadpool(build)
    return Response(
        content,
        media_type="application/pdf" if kind == "pdf" else "text/html; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="erasure-request-{request_id}.{kind}"'
        },
    )


@request_pages.get("/requests/{request_id}/bundle")
def download_bundle(request: Request, request_id: str, _: Session) -> Response:
    """The request's Proof of Forgetting bundle, as the file ``oblivio verify`` takes."""
    bundle = _requests(request).bundle(request_id)
    return Response(
        json.dumps(bundle, indent=1, sort_keys=True) + "\n",
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{bundle_file_name(request_id)}"'},
    )


class UnknownRegimeError(InvalidInputError):
    """A regime other than gdpr or ccpa."""

    code = "invalid_request"
