"""The operator console's security (DESIGN.md §18, docs/adr/0033), in process on both backends:
sign-in with admin keys only, sessions in HttpOnly SameSite=Strict cookies, CSRF on every form,
a Content-Security-Policy without inline script, and every user-supplied string escaped.
The browser flow against a real ``oblivio serve`` is tests/interfaces/test_console_browser.py."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from oblivio.interfaces.console.routes import SESSION_COOKIE, console_routers
from oblivio.node.compliance import open_compliance
from oblivio.node.node import open_node
from tests.interfaces.conftest import Api

PAGES = (
    "",
    "/requests",
    "/tombstones",
    "/holds",
    "/federation",
    "/checkpoints",
    "/audit",
    "/verify",
)
HOSTILE = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>"
CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')
SQLITE_ONLY = pytest.mark.parametrize("store_uri", ["sqlite"], indirect=True)
"""For what does not depend on the store (sessions themselves run on both)."""


def form_token(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, api_key: str) -> tuple[int, str]:
    page = client.get("/console/login")
    assert page.status_code == 200
    response = client.post(
        "/console/login",
        data={"api_key": api_key, "csrf_token": form_token(page.text)},
        follow_redirects=False,
    )
    return response.status_code, response.headers.get("set-cookie", "")


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def console(api: Api) -> Iterator[TestClient]:
    """The app's client signed in with the admin key."""
    status, _ = sign_in(api.client, bearer(api.admin))
    assert status == 303
    yield api.client
    api.client.cookies.clear()


def console_route_paths(method: str) -> list[str]:
    """Every console route of ``method`` (so that a page or form added later is covered too)."""
    return sorted(
        route.path
        for router in console_routers()
        for route in router.routes
        if isinstance(route, APIRoute) and method in route.methods
    )


def console_post_routes(api: Api) -> list[str]:
    """Every form route of the console."""
    paths = console_route_paths("POST")
    assert {"/console/login", "/console/logout", "/console/tombstones", "/console/holds"} <= set(
        paths
    )
    return paths


@SQLITE_ONLY
def test_no_page_works_without_signing_in(api: Api) -> None:
    pages = [p for p in console_route_paths("GET") if p != "/console/login"]
    assert {f"/console{p}" for p in PAGES} <= set(pages)
    for path in pages:
        concrete = re.sub(r"\{[a-z_]+\}", "x", path)
        # The API's own bearer key is not a console session either.
        for headers in ({}, api.admin):
            response = api.client.get(concrete, headers=headers, follow_redirects=False)
            if path.endswith(".json"):
                assert response.status_code == 401, path
            else:
                assert response.status_code == 303, path
                assert response.headers["location"] == "/console/login"
    for path in console_post_routes(api):
        if path == "/console/login":
            continue
        concrete = path.replace("{tombstone_id}", "tomb_x").replace("{hold_id}", "h")
        concrete = re.sub(r"\{[a-z_]+\}", "x", concrete)
        response = api.client.post(concrete, data={"csrf_token": "x"}, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/console/login"


@pytest.mark.parametrize("role", ["agent", "peer"])
def test_agent_and_peer_keys_are_refused(api: Api, role: str) -> None:
    status, cookie = sign_in(api.client, bearer(getattr(api, role)))
    assert status == 403
    assert SESSION_COOKIE + "=" not in cookie
    assert api.client.get("/console", follow_redirects=False).status_code == 303
    assert api.count("console_sessions") == 0


def test_an_unknown_key_is_refused_and_audited(api: Api) -> None:
    status, cookie = sign_in(api.client, "obk_" + "A" * 43)
    assert status == 401
    assert SESSION_COOKIE + "=" not in cookie
    with open_node(api.home) as node:
        events = [e.event for e in open_compliance(node).audit.read(0, 1000)]
    assert "console_sign_in_refused" in events


@SQLITE_ONLY
def test_the_key_never_goes_in_a_url(api: Api) -> None:
    page = api.client.get("/console/login").text
    assert 'method="post"' in page
    assert 'type="password"' in page
    # A key in the query string signs nobody in.
    response = api.client.get(
        "/console/login", params={"api_key": bearer(api.admin)}, follow_redirects=False
    )
    assert response.status_code == 200
    assert SESSION_COOKIE + "=" not in response.headers.get("set-cookie", "")


def test_the_session_cookie_is_httponly_strict_and_secure_over_tls(api: Api) -> None:
    status, cookie = sign_in(api.client, bearer(api.admin))
    assert status == 303
    session = next(c for c in cookie.split(", ") if c.startswith(SESSION_COOKIE + "="))
    attributes = {a.strip().lower() for a in session.split(";")}
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/console" in attributes
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    # Only the hash of the session token is stored.
    token = session.split(";")[0].split("=", 1)[1]
    with open_node(api.home) as node, node.db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT token_hash FROM console_sessions")
    assert len(rows) == 1
    assert token not in rows[0][0]

    tls = TestClient(api.client.app, base_url="https://testserver")  # type: ignore[arg-type]
    status, cookie = sign_in(tls, bearer(api.admin))
    assert status == 303
    session = next(c for c in cookie.split(", ") if c.startswith(SESSION_COOKIE + "="))
    assert "secure" in {a.strip().lower() for a in session.split(";")}


def test_every_form_checks_the_csrf_token(api: Api, console: TestClient) -> None:
    posts = console_post_routes(api)
    before = api.count("tombstones"), api.count("legal_holds"), api.count("console_sessions")
    for path in posts:
        concrete = re.sub(r"\{[a-z_]+\}", "x", path)
        for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"}):
            response = console.post(
                concrete,
                data={**data, "entity_uri": "user:mallory", "authority": "a", "reason": "r"},
                follow_redirects=False,
            )
            assert response.status_code == 403, (path, data)
    assert (api.count("tombstones"), api.count("legal_holds"), api.count("console_sessions")) == (
        before
    )
    # Still signed in: the forged sign-out did nothing.
    assert console.get("/console", follow_redirects=False).status_code == 200


@SQLITE_ONLY
def test_the_policy_allows_no_inline_script_and_the_verify_page_no_connection(
    console: TestClient,
) -> None:
    for page in (*PAGES, "/login"):
        response = console.get("/console" + page)
        assert response.status_code == 200, page
        policy = response.headers["content-security-policy"]
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        text = response.text
        # Scripts are static files: no inline script, handler or style attribute.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), page
        assert not re.search(r"\son[a-z]+=", text), page
        assert " style=" not in text, page
        if page == "/verify":
            assert "connect-src 'none'" in policy
        else:
            assert "connect-src 'self'" in policy


@SQLITE_ONLY
def test_hostile_strings_are_escaped_on_every_page(api: Api, console: TestClient) -> None:
    token = form_token(console.get("/console/tombstones").text)
    entity = "user:" + HOSTILE.replace(" ", "")
    issued = console.post(
        "/console/tombstones",
        data={"csrf_token": token, "entity_uri": entity, "scope": "*", "reason": HOSTILE},
    )
    assert issued.status_code == 200
    placed = console.post(
        "/console/holds",
        data={"csrf_token": token, "entity_uri": entity, "authority": HOSTILE, "reason": HOSTILE},
    )
    assert placed.status_code == 200
    created = console.post(
        "/console/requests",
        data={"csrf_token": token, "entity_uri": entity, "regime": "gdpr", "requestor": HOSTILE},
        follow_redirects=False,
    )
    assert created.status_code == 303
    shown = 0
    for page in (*PAGES, created.headers["location"].removeprefix("/console")):
        response = console.get("/console" + page)
        assert response.status_code == 200, page
        text = response.text
        for hostile in (HOSTILE, entity):
            assert hostile not in text, page
        shown += text.count(html.escape("<script>alert("))
    # The requests, request, tombstones, holds and audit pages show them, escaped.
    assert shown >= 5
    audit = console.get("/console/audit", params={"subject": HOSTILE})
    assert HOSTILE not in audit.text
    # Bad input gets the error on the page, the hostile input escaped in it, and no record.
    before = api.count("tombstones")
    bad = console.post(
        "/console/tombstones",
        data={"csrf_token": token, "entity_uri": HOSTILE, "scope": "*"},
    )
    assert bad.status_code == 400
    assert 'class="error"' in bad.text
    assert HOSTILE not in bad.text
    assert api.count("tombstones") == before


def test_sign_out_ends_the_session_for_good(api: Api, console: TestClient) -> None:
    cookie = console.cookies.get(SESSION_COOKIE)
    assert cookie
    token = form_token(console.get("/console").text)
    out = console.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/console/login"
    assert console.get("/console", follow_redirects=False).status_code == 303
    # The old cookie, replayed, is no session any more.
    replay = TestClient(api.client.app, cookies={SESSION_COOKIE: cookie})  # type: ignore[arg-type]
    assert replay.get("/console", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions(api: Api, console: TestClient) -> None:
    assert console.get("/console", follow_redirects=False).status_code == 200
    with open_node(api.home) as node:
        open_compliance(node).api_keys.revoke("admin-1")
    assert console.get("/console", follow_redirects=False).status_code == 303


@SQLITE_ONLY
def test_forms_act_and_show_what_they_did(api: Api, console: TestClient) -> None:
    token = form_token(console.get("/console/tombstones").text)
    console.post(
        "/console/tombstones",
        data={"csrf_token": token, "entity_uri": "user:erin", "scope": "team", "reason": "asked"},
    )
    page = console.get("/console/tombstones").text
    tombstone_id = re.search(r"<code>(tomb_[0-9a-f-]+)</code>", page)
    assert tombstone_id
    revoked = console.post(
        f"/console/tombstones/{tombstone_id.group(1)}/revoke",
        data={"csrf_token": token, "reason": "withdrawn"},
    )
    assert revoked.status_code == 200
    assert "revoked" in revoked.text
    unknown = console.post(
        "/console/holds/nonexistent/release", data={"csrf_token": token, "authority": "court"}
    )
    assert unknown.status_code == 404
    assert 'class="error"' in unknown.text
    audit = console.get("/console/audit", params={"event": "tombstone_revoked"}).text
    assert tombstone_id.group(1) in audit


@SQLITE_ONLY
def test_request_forms_refuse_bad_input_and_change_nothing(api: Api, console: TestClient) -> None:
    token = form_token(console.get("/console/requests").text)
    assert console.get("/console/requests/no-such-request").status_code == 404
    missing = console.post("/console/requests/no-such-request/cancel", data={"csrf_token": token})
    assert missing.status_code == 404
    unknown_regime = console.post(
        "/console/requests",
        data={"csrf_token": token, "entity_uri": "user:frank", "regime": "lgpd"},
    )
    assert unknown_regime.status_code == 400
    assert api.count("erasure_requests") == 0
    created = console.post(
        "/console/requests",
        data={"csrf_token": token, "entity_uri": "user:frank", "regime": "ccpa"},
        follow_redirects=False,
    )
    page = created.headers["location"]
    # CCPA allows 45 more days: 46 is refused with the reason on the page, nothing recorded.
    too_long = console.post(
        page + "/extend", data={"csrf_token": token, "days": "46", "reason": "complex"}
    )
    assert too_long.status_code == 409
    assert 'class="error"' in too_long.text
    assert api.count("erasure_request_extensions") == 0
    assert console.post(page + "/cancel", data={"csrf_token": token}).status_code == 200
    again = console.post(page + "/cancel", data={"csrf_token": token})
    assert again.status_code == 409
    assert "canceled" in again.text


@SQLITE_ONLY
def test_the_matrix_and_the_progress_show_what_is_under_way(api: Api, console: TestClient) -> None:
    token = form_token(console.get("/console/holds").text)
    with open_node(api.home) as node:
        node.vault.put(b"grace's record", {}, "user:grace", "team")
    # A hold keeps the tombstone's forget pending: the overview's progress lists it.
    console.post(
        "/console/holds",
        data={"csrf_token": token, "entity_uri": "user:grace", "authority": "court"},
    )
    console.post(
        "/console/tombstones",
        data={"csrf_token": token, "entity_uri": "user:grace", "scope": "*"},
    )
    progress = console.get("/console/progress.json").json()
    assert progress["pending_forgets"] == 1
    assert progress["pending"][0]["artifacts"] == 1
    assert progress["pending"][0]["executed"] == 0
    # The peer the fixture pinned (unreachable) is sent the tombstone: pending in the matrix.
    matrix = console.get("/console/federation").text
    assert "node-b.example" in matrix
    assert re.search(r'class="status pending"[^>]*>pending<', matrix)
