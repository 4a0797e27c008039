"""The operator console at /console (DESIGN.md §18, docs/adr/0033).

Security, in one place:

- Sign-in takes an admin API key in a POST body (never in a URL); agent, peer and unknown keys
  are refused and audited. The browser then holds only a session cookie: HttpOnly,
  SameSite=Strict, Path=/console, Secure when the request came over TLS.
- Every form carries a CSRF token: the session's own, or before sign-in a token that must
  equal a short-lived cookie (double submit). A POST without the right token is 403.
- Every page is Jinja2 with autoescape on; scripts are static files, and the
  Content-Security-Policy allows no inline script or style. The verify page's policy also
  forbids every connection (``connect-src 'none'``): its verifier runs in the browser alone.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from oblivio.core.errors import AccessDeniedError, InvalidInputError, OblivioError
from oblivio.core.manifest import signer_uri
from oblivio.interfaces.console.chart import epoch_chart
from oblivio.interfaces.http.common import status_of
from oblivio.node.console_sessions import (
    ConsoleAccessDeniedError,
    ConsoleSession,
    ConsoleSessions,
    new_token,
)
from oblivio.node.overview import Overview
from oblivio.node.services import NodeServices

PREFIX: Final = "/console"
SESSION_COOKIE: Final = "oblivio_console"
SIGN_IN_COOKIE: Final = "oblivio_console_sign_in"
_HERE = Path(__file__).parent
_TEMPLATES = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    auto_reload=False,
)
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
VERIFY_PAGE_POLICY: Final = CONTENT_SECURITY_POLICY.replace(
    "connect-src 'self'", "connect-src 'none'"
)
MATRIX_TOMBSTONES: Final = 50

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SignInRequiredError(Exception):
    """No live console session: pages redirect to the sign-in page, JSON answers 401."""


class CsrfRefusedError(Exception):
    """A console form without this session's CSRF token: 403."""


class ConsoleHeaders:
    """ASGI middleware: the console's security headers on every /console response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        policy = VERIFY_PAGE_POLICY if path == f"{PREFIX}/verify" else CONTENT_SECURITY_POLICY

        async def secured(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", policy.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                if not path.startswith(f"{PREFIX}/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, secured)


# -- sessions and forms ----------------------------------------------------------------------


def _services(request: Request) -> NodeServices:
    services: NodeServices = request.app.state.services
    return services


def _sessions(request: Request) -> ConsoleSessions:
    compliance = _services(request).compliance
    return ConsoleSessions(compliance.api_keys.db, compliance.api_keys, compliance.audit)


def signed_in(request: Request) -> ConsoleSession:
    """The request's live console session; raises SignInRequiredError otherwise. An API key in
    an Authorization header is not a session: the console takes only its own cookie."""
    session = _sessions(request).find(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequiredError
    return session


Session = Annotated[ConsoleSession, Depends(signed_in)]


def checked_form(session: Session, csrf_token: Annotated[str, Form()] = "") -> ConsoleSession:
    """The session of a form POST whose CSRF token is the session's; 403 otherwise."""
    if not session.csrf_matches(csrf_token):
        raise CsrfRefusedError
    return session


FormSession = Annotated[ConsoleSession, Depends(checked_form)]


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _page(
    request: Request,
    session: ConsoleSession | None,
    template: str,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    services = _services(request)
    html = _TEMPLATES.get_template(template).render(
        csrf_token=session.csrf_token if session else "",
        signed_in_as=session.key.name if session else None,
        node_name=services.node.config.name,
        path=request.url.path,
        error=context.pop("error", None),
        **context,
    )
    return HTMLResponse(html, status_code=status)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


def _scope_pattern(text: str) -> str | list[str]:
    """A form's scope field: ``*``, one scope, or scopes separated by commas."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1:
        return parts[0]
    return parts


console_routes = APIRouter(prefix=PREFIX, include_in_schema=False)


# -- signing in and out ------------------------------------------------------------------------


@console_routes.get("/login")
def sign_in_page(request: Request) -> Response:
    """The sign-in form, with a fresh double-submit token in a short-lived cookie."""
    if _sessions(request).find(request.cookies.get(SESSION_COOKIE)) is not None:
        return _see_other("")
    token = new_token()
    response = _page(request, None, "login.html", title="Sign in", form_token=token)
    _cookie(response, request, SIGN_IN_COOKIE, token, 600)
    return response


@console_routes.post("/login")
def sign_in(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Open a session for an admin API key; refuse every other key (audited)."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise CsrfRefusedError
    retry = new_token()
    try:
        token, _ = _sessions(request).sign_in(api_key.strip())
    except ConsoleAccessDeniedError:
        message = "This key may not sign in: the console needs an admin API key."
        response = _page(
            request, None, "login.html", status=403, title="Sign in", form_token=retry,
            error=message,
        )  # fmt: skip
    except AccessDeniedError:
        message = "Unknown or revoked API key."
        response = _page(
            request, None, "login.html", status=401, title="Sign in", form_token=retry,
            error=message,
        )  # fmt: skip
    else:
        signed = _see_other("")
        _cookie(signed, request, SESSION_COOKIE, token, 8 * 3600)
        signed.delete_cookie(SIGN_IN_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return signed
    _cookie(response, request, SIGN_IN_COOKIE, retry, 600)
    return response


@console_routes.post("/logout")
def sign_out(request: Request, session: FormSession) -> Response:
    """End the session and forget the cookie."""
    _sessions(request).sign_out(request.cookies.get(SESSION_COOKIE, ""), session)
    response = _see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# -- overview and progress ----------------------------------------------------------------------


def _progress(services: NodeServices) -> dict[str, Any]:
    overview = Overview(services.node.db)
    pending = overview.pending_forgets()
    latest = services.checkpoints.latest_checkpoint()
    return {
        "pending_forgets": len(pending),
        "pending": pending,
        "latest_epoch": latest.epoch if latest else 0,
        "log_size": latest.size if latest else 0,
        "epochs": services.forgetting.epoch_health().to_dict(),
    }


@console_routes.get("")
def dashboard(request: Request, session: Session) -> Response:
    """The node at a glance: epochs, pending forgets (polled), tombstones, holds, peers."""
    services = _services(request)
    overview = Overview(services.node.db)
    now = datetime.now(UTC)
    erasures = [r.to_dict(now) for r in request.app.state.erasure_requests.every()]
    return _page(
        request,
        session,
        "dashboard.html",
        open_requests=sum(1 for r in erasures if r["status"] not in ("complete", "canceled")),
        overdue_requests=sum(1 for r in erasures if r["overdue"]),
        title="Overview",
        progress=_progress(services),
        tombstones=len(overview.tombstones()),
        holds=sum(1 for h in overview.legal_holds() if h.released_at is None),
        verifier_key=services.checkpoints.verifier_key,
    )


@console_routes.get("/progress.json")
def progress(request: Request, _: Session) -> dict[str, Any]:
    """What the pages poll: pending forget requests and the epoch loop."""
    return _progress(_services(request))


# -- tombstones and revocations -----------------------------------------------------------------


def _listing_page(
    request: Request,
    session: ConsoleSession,
    what: Literal["tombstones", "holds"],
    status: int = 200,
    error: str | None = None,
) -> Response:
    """The tombstones or the legal holds page, with an error from a form when there is one."""
    overview = Overview(_services(request).node.db)
    items: list[Any]
    if what == "tombstones":
        template, title, items = "tombstones.html", "Tombstones", overview.tombstones()
    else:
        template, title, items = "holds.html", "Legal holds", overview.legal_holds()
    return _page(
        request, session, template, status=status, title=title, error=error, **{what: items}
    )


@console_routes.get("/tombstones")
def tombstones_page(request: Request, session: Session) -> Response:
    """Tombstones issued and received, with their revocations."""
    return _listing_page(request, session, "tombstones")


@console_routes.post("/tombstones")
def issue_tombstone(
    request: Request,
    *,
    session: FormSession,
    entity_uri: Annotated[str, Form(max_length=600)] = "",
    scope: Annotated[str, Form(max_length=200)] = "*",
    reason: Annotated[str, Form(max_length=2000)] = "",
    legal_hold: Annotated[bool, Form()] = False,
) -> Response:
    """Issue a tombstone as POST /v1/tombstones does, signed by the node for this key."""
    try:
        _services(request).compliance.tombstones.issue(
            session.key.name, entity_uri.strip(), _scope_pattern(scope), reason or None, legal_hold
        )
    except OblivioError as e:
        return _listing_page(request, session, "tombstones", status_of(e), str(e))
    return _see_other("/tombstones")


@console_routes.post("/tombstones/{tombstone_id}/revoke")
def revoke_tombstone(
    request: Request,
    tombstone_id: str,
    session: FormSession,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Revoke a tombstone (a reason is required, seed 002 §23.6.3)."""
    try:
        if not reason.strip():
            raise RevocationReasonMissingError("a revocation needs a reason")
        _services(request).compliance.tombstones.revoke(session.key.name, tombstone_id, reason)
    except OblivioError as e:
        return _listing_page(request, session, "tombstones", status_of(e), str(e))
    return _see_other("/tombstones")


# -- legal holds ------------------------------------------------------------------------------


@console_routes.get("/holds")
def holds_page(request: Request, session: Session) -> Response:
    """Legal holds in force and released."""
    return _listing_page(request, session, "holds")


@console_routes.post("/holds")
def place_hold(
    request: Request,
    *,
    session: FormSession,
    entity_uri: Annotated[str, Form(max_length=600)] = "",
    artifact_id: Annotated[str, Form(max_length=100)] = "",
    scope: Annotated[str, Form(max_length=200)] = "*",
    authority: Annotated[str, Form(max_length=200)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Place a legal hold on an entity's artifacts or on one artifact."""
    services = _services(request)
    try:
        if not authority.strip():
            raise HoldAuthorityMissingError("a legal hold needs an authority")
        services.place_hold(
            artifact_id=artifact_id.strip() or None,
            entity_uri=entity_uri.strip() or None,
            scope=_scope_pattern(scope),
            authority=authority,
            reason=reason,
            actor=signer_uri(services.compliance.org, session.key.name),
        )
    except OblivioError as e:
        return _listing_page(request, session, "holds", status_of(e), str(e))
    return _see_other("/holds")


@console_routes.post("/holds/{hold_id}/release")
def release_hold(
    request: Request,
    hold_id: str,
    session: FormSession,
    authority: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Release a legal hold; the destruction it deferred runs at the next epoch."""
    services = _services(request)
    try:
        if not authority.strip():
            raise HoldAuthorityMissingError("releasing a legal hold needs an authority")
        services.release_hold(
            hold_id,
            authority=authority,
            actor=signer_uri(services.compliance.org, session.key.name),
        )
    except OblivioError as e:
        return _listing_page(request, session, "holds", status_of(e), str(e))
    return _see_other("/holds")


# -- federation: peers x tombstones -------------------------------------------------------------


@console_routes.get("/federation")
def federation_page(request: Request, session: Session) -> Response:
    """Per tombstone and peer: proved, acknowledged, held, silent, non_compliant or pending."""
    federation = request.app.state.federation
    peers = [p.name for p in federation.peers.every()]
    tracked = federation.tracked()[-MATRIX_TOMBSTONES:]
    rows = []
    for tombstone_id in reversed(tracked):
        status = federation.propagation(tombstone_id)
        by_peer = {p["peer"]: p for p in status["peers"]}
        peers.extend(p for p in by_peer if p not in peers)
        rows.append({"id": tombstone_id, "deadline": status["ack_deadline"], "by_peer": by_peer})
    return _page(
        request,
        session,
        "federation.html",
        title="Federation",
        peers=peers,
        rows=rows,
        peer_rows=[p.to_dict() for p in federation.peers.every()],
    )


# -- checkpoints -------------------------------------------------------------------------------


@console_routes.get("/checkpoints")
def checkpoints_page(request: Request, session: Session) -> Response:
    """The checkpoint and map-root history: a chart of log size and forgets per epoch."""
    points = Overview(_services(request).node.db).epochs()
    return _page(
        request,
        session,
        "checkpoints.html",
        title="Checkpoints",
        chart=epoch_chart(points),
        points=list(reversed(points)),
    )


# -- audit log ---------------------------------------------------------------------------------


@console_routes.get("/audit")
def audit_page(
    request: Request,
    *,
    session: Session,
    event: Annotated[str, Query(max_length=100)] = "",
    actor: Annotated[str, Query(max_length=600)] = "",
    subject: Annotated[str, Query(max_length=600)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """The audit log, newest first, filtered by event, actor and subject."""
    overview = Overview(_services(request).node.db)
    events = overview.audit(event=event, actor=actor, subject=subject, before=before, limit=limit)
    return _page(
        request,
        session,
        "audit.html",
        title="Audit log",
        events=events,
        names=overview.audit_event_names(),
        filters={"event": event, "actor": actor, "subject": subject},
        limit=limit,
        older=events[-1].seq if len(events) == limit else None,
    )


# -- verify ------------------------------------------------------------------------------------


@console_routes.get("/verify")
def verify_page(request: Request, session: Session) -> Response:
    """Verify a Proof of Forgetting in the browser: nothing is sent to the server."""
    return _page(
        request,
        session,
        "verify.html",
        title="Verify a proof",
        verifier_key=_services(request).checkpoints.verifier_key,
    )


class RevocationReasonMissingError(InvalidInputError):
    """A revocation without a reason (seed 002 §23.6.3): 400."""

    code = "invalid_request"


class HoldAuthorityMissingError(InvalidInputError):
    """A legal hold placed or released without an authority: 400."""

    code = "invalid_request"


def _sign_in_required(request: Request, _: Exception) -> Response:
    if request.url.path.endswith(".json"):
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "sign in to the console first"}},
            status_code=401,
        )
    return _see_other("/login")


def _csrf_refused(request: Request, _: Exception) -> Response:
    return HTMLResponse(
        _TEMPLATES.get_template("refused.html").render(
            title="Refused",
            csrf_token="",
            signed_in_as=None,
            node_name=_services(request).node.config.name,
            path=request.url.path,
            error="The form's CSRF token is missing or wrong: reload the page and try again.",
        ),
        status_code=403,
    )


def console_routers() -> tuple[APIRouter, ...]:
    """Every router of the console (the request pages build on this module)."""
    from oblivio.interfaces.console.request_pages import request_pages

    return console_routes, request_pages


def mount_console(app: FastAPI) -> None:
    """Serve the console on ``app``: its routes, static files, headers and error pages."""
    for router in console_routers():
        app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static"), name="console-static")
    app.add_exception_handler(SignInRequiredError, _sign_in_required)
    app.add_exception_handler(CsrfRefusedError, _csrf_refused)
    app.add_middleware(ConsoleHeaders)
