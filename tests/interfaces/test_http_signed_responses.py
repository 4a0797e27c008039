"""Every answer of a federation route is signed (interfaces/signed_responses.py, docs/adr/0027):
success, refusal, unknown route and oversize body alike; other routes are not."""

from __future__ import annotations

import pytest

from oblivio.core.errors import VerificationError
from oblivio.core.evidence import SIGNATURE_HEADER, decode_statement, verify_response
from oblivio.node.home import load_signing_key
from tests.interfaces.conftest import Api


def _check(api: Api, response: object, method: str, path: str) -> dict[str, object]:
    import httpx

    assert isinstance(response, httpx.Response)
    statement = decode_statement(response.headers[SIGNATURE_HEADER])
    key = load_signing_key(api.home).verify_key
    signed = verify_response(statement, response.content, key)
    assert (signed.node, signed.method, signed.path, signed.status) == (
        "node-a.example",
        method,
        path,
        response.status_code,
    )
    with pytest.raises(VerificationError):
        verify_response(statement, response.content + b" ", key)
    return statement


def test_federation_answers_are_signed_whatever_their_status(api: Api) -> None:
    client = api.client
    status = client.get(
        "/federation/belief/0193a1b2-0000-7000-8000-000000000001/status", headers=api.token
    )
    assert status.status_code == 200
    _check(api, status, "GET", "/federation/belief/0193a1b2-0000-7000-8000-000000000001/status")
    refused = client.get("/federation/belief/0193a1b2-0000-7000-8000-000000000001/status")
    assert refused.status_code == 401
    _check(api, refused, "GET", "/federation/belief/0193a1b2-0000-7000-8000-000000000001/status")
    pulled = client.get("/v1/federation/tombstones?limit=5", headers=api.token)
    assert pulled.status_code == 200
    _check(api, pulled, "GET", "/v1/federation/tombstones?limit=5")
    unknown = client.get("/v1/federation/nothing-here", headers=api.token)
    assert unknown.status_code == 404
    _check(api, unknown, "GET", "/v1/federation/nothing-here")
    oversize = client.post(
        "/federation/tombstone", content=b"{" + b" " * (2 * 1024 * 1024) + b"}", headers=api.token
    )
    assert oversize.status_code == 413
    _check(api, oversize, "POST", "/federation/tombstone")


def test_other_routes_are_not_signed(api: Api) -> None:
    assert SIGNATURE_HEADER not in api.client.get("/v1/health").headers
    assert SIGNATURE_HEADER not in api.client.get("/v1/tombstones", headers=api.admin).headers
