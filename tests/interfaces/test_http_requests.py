"""Erasure requests over HTTP (/v1/requests…, interfaces/request_routes.py) on both stores: the
serve worker processes a verified request by itself; admin keys only; bad input gets the JSON
error shape with the request's codes and changes nothing; reports download as HTML and PDF
with every user-supplied string escaped."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.encoding import b64url_encode
from oblivio.core.identifiers import parse_time
from oblivio.core.pof import parse_proof_document, verify_document
from tests.interfaces.conftest import PEER_NAME, Api, served_api
from tests.interfaces.report_checks import HOSTILE, pdf_attachments, pdf_text, require_weasyprint
from tests.processes import poll

ACK_DEADLINE_SECONDS = 2


@pytest.fixture
def api(tmp_path: Path, store_uri: str) -> Iterator[Api]:
    """The node of tests/interfaces/conftest.py (a peer pinned at an unreachable URL), with an
    ack deadline of 2 s so that a request waiting on that silent peer completes in the test."""
    yield from served_api(tmp_path, store_uri, {"ack_deadline_seconds": ACK_DEADLINE_SECONDS})


def _put(api: Api, entity: str, count: int = 2) -> list[str]:
    ids = []
    for i in range(count):
        body = {
            "plaintext_b64url": b64url_encode(f"{entity} {i}".encode()),
            "entity_uri": entity,
            "scope": "team",
        }
        response = api.client.post("/v1/artifacts", json=body, headers=api.admin)
        assert response.status_code == 201, response.text
        ids.append(response.json()["artifact_id"])
    return ids


def _create(api: Api, **body: Any) -> dict[str, Any]:
    response = api.client.post("/v1/requests", json={"regime": "gdpr", **body}, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _show(api: Api, request_id: str) -> dict[str, Any]:
    response = api.client.get(f"/v1/requests/{request_id}", headers=api.admin)
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


def _verifier_key(api: Api) -> str:
    key: str = api.client.get("/v1/checkpoint").json()["verifier_key"]
    return key


def _complete(api: Api, request_id: str) -> dict[str, Any]:
    response = api.client.post(f"/v1/requests/{request_id}/verify-identity", headers=api.admin)
    assert response.status_code == 200, response.text
    poll("request complete", lambda: _show(api, request_id)["status"] == "complete", deadline=60)
    return _show(api, request_id)


def test_a_verified_request_completes_by_itself_and_links_its_evidence(api: Api) -> None:
    forgotten = _put(api, "user:alice")
    created = _create(api, entity_uri="user:alice", scope="*", requestor="Alice")
    assert created["status"] == "received"
    assert created["clock_running"] is False
    assert created["links"]["tombstone"] is None

    shown = _complete(api, created["id"])
    links = shown["links"]
    # The peer cannot be reached: the request waited for it (delivered, answered, or silent
    # past the ack deadline) before it completed.
    waited = parse_time(shown["completed_at"]) - parse_time(links["tombstone"]["created_at"])
    assert waited >= timedelta(seconds=ACK_DEADLINE_SECONDS)
    assert links["tombstone"]["id"] == shown["tombstone_id"]
    events = [e for f in links["forget_requests"] for e in f["events"]]
    assert sorted(e["artifact_id"] for e in events) == sorted(forgotten)
    # The node's federation answers per-peer status: the pinned peer is listed.
    assert [(p["peer"], p["status"]) for p in links["propagation"]["peers"]] == [
        (PEER_NAME, "silent")
    ]
    assert shown["pof_bundle"] is True
    bundle = api.client.get(f"/v1/requests/{created['id']}/bundle", headers=api.admin)
    proven = verify_document(bundle.json(), _verifier_key(api))
    assert sorted(p.artifact_id for p in proven) == sorted(forgotten)
    for artifact_id in forgotten:
        assert api.client.get(f"/v1/artifacts/{artifact_id}", headers=api.admin).status_code == 410
    listed = api.client.get("/v1/requests?status=complete", headers=api.admin).json()
    assert [r["id"] for r in listed["requests"]] == [created["id"]]


def test_only_admin_keys_reach_the_request_routes(api: Api) -> None:
    created = _create(api, entity_uri="user:bob")
    routes = [
        ("get", "/v1/requests"),
        ("get", f"/v1/requests/{created['id']}"),
        ("post", f"/v1/requests/{created['id']}/verify-identity"),
        ("post", f"/v1/requests/{created['id']}/cancel"),
        ("get", f"/v1/requests/{created['id']}/report"),
    ]
    for method, path in routes:
        assert api.client.request(method, path, headers=api.agent).status_code == 403
        assert api.client.request(method, path, headers=api.peer).status_code in (401, 403)
        assert api.client.request(method, path, headers=api.token).status_code == 401
        assert api.client.request(method, path).status_code == 401
    response = api.client.post(
        "/v1/requests", json={"entity_uri": "user:x", "regime": "gdpr"}, headers=api.agent
    )
    assert response.status_code == 403
    assert _show(api, created["id"])["status"] == "received"


def test_bad_input_gets_clear_errors_and_changes_nothing(api: Api) -> None:
    for path, method in [
        ("/v1/requests/nope", "get"),
        ("/v1/requests/nope/verify-identity", "post"),
        ("/v1/requests/nope/cancel", "post"),
        ("/v1/requests/nope/retry", "post"),
        ("/v1/requests/nope/bundle", "get"),
        ("/v1/requests/nope/report", "get"),
    ]:
        response = api.client.request(method, path, headers=api.admin)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "erasure_request_not_found"
    response = api.client.post(
        "/v1/requests/nope/extend", json={"days": 3, "reason": "r"}, headers=api.admin
    )
    assert response.json()["error"]["code"] == "erasure_request_not_found"

    bad_bodies = [
        ({"entity_uri": "user:x", "regime": "hipaa"}, "invalid_request"),
        ({"entity_uri": "not a uri", "regime": "gdpr"}, "tombstone_entity_uri_invalid"),
        ({"entity_uri": "user:x", "regime": "gdpr", "scope": "galaxy"}, "tombstone_invalid_scope"),
        ({"entity_uri": "user:x", "regime": "gdpr", "extra": 1}, "invalid_request"),
    ]
    for body, code in bad_bodies:
        response = api.client.post("/v1/requests", json=body, headers=api.admin)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code, body
    assert api.client.get("/v1/requests", headers=api.admin).json() == {"requests": []}

    _put(api, "user:carol", 1)
    created = _create(api, entity_uri="user:carol")
    over = api.client.post(
        f"/v1/requests/{created['id']}/extend", json={"days": 63, "reason": "r"}, headers=api.admin
    )
    assert over.status_code == 409
    assert over.json()["error"]["code"] == "erasure_request_extension_refused"
    for days in (0, "5"):
        response = api.client.post(
            f"/v1/requests/{created['id']}/extend",
            json={"days": days, "reason": "r"},
            headers=api.admin,
        )
        assert response.status_code == 400
    unchanged = _show(api, created["id"])
    assert (unchanged["extended_days"], unchanged["extensions"]) == (0, [])

    complete = _complete(api, created["id"])
    for action in ("verify-identity", "cancel"):
        response = api.client.post(f"/v1/requests/{created['id']}/{action}", headers=api.admin)
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "erasure_request_invalid_transition"
        assert "from complete" in response.json()["error"]["message"]
    response = api.client.get(f"/v1/requests/{created['id']}/report?format=docx", headers=api.admin)
    assert response.status_code == 400
    after = _show(api, created["id"])
    assert after["transitions"] == complete["transitions"]
    assert after["status"] == "complete"


def test_reports_download_with_hostile_strings_escaped(api: Api) -> None:
    require_weasyprint()
    _put(api, "user:mallory", 1)
    created = _create(api, entity_uri="user:mallory", requestor=HOSTILE)
    extend = api.client.post(
        f"/v1/requests/{created['id']}/extend",
        json={"days": 5, "reason": HOSTILE},
        headers=api.admin,
    )
    assert extend.status_code == 200, extend.text
    _complete(api, created["id"])

    html = api.client.get(f"/v1/requests/{created['id']}/report?format=html", headers=api.admin)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    assert "attachment" in html.headers["content-disposition"]
    assert "script-src" not in html.headers["content-security-policy"]
    assert "<script" not in html.text
    assert "<img" not in html.text
    assert html.text.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 2
    data_uri = re.search(r'href="data:application/json;base64,([A-Za-z0-9+/=]+)"', html.text)
    assert data_uri is not None
    bundle = parse_proof_document(base64.b64decode(data_uri.group(1)))
    assert verify_document(bundle, _verifier_key(api))

    pdf = api.client.get(f"/v1/requests/{created['id']}/report?format=pdf", headers=api.admin)
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    text = pdf_text(pdf.content)
    assert text.count(HOSTILE) == 2  # requestor and reason, as text: nothing was taken as markup
    attached = pdf_attachments(pdf.content)
    assert list(attached) == [f"erasure-request-{created['id']}.pof.json"]
    assert json.loads(attached[f"erasure-request-{created['id']}.pof.json"]) == bundle
