"""Refused federation bodies leave an audit entry and change nothing (issue 12, ADR 0028): an
oversize body (413, refused by the body-limit middleware before any route), a body that is not
JSON, and one that is not a record; an oversize body elsewhere is refused but not audited."""

from __future__ import annotations

from typing import Any

from tests.interfaces.conftest import PEER_NAME, Api


def _refusals(api: Api) -> list[dict[str, Any]]:
    events = api.client.get("/v1/audit", params={"limit": 1000}, headers=api.admin).json()
    return [e for e in events["events"] if e["event"] == "federation_request_refused"]


def test_refused_federation_bodies_are_audited(api: Api) -> None:
    big = b'{"id": "' + b"x" * 70_000 + b'"}'
    json_type = {"Content-Type": "application/json"}
    for body, status, code in (
        (big, 413, "request_too_large"),
        (b"{not json", 400, "invalid_input"),
        (b"[1, 2]", 400, "invalid_input"),
    ):
        response = api.client.post(
            "/federation/tombstone", content=body, headers=api.token | json_type
        )
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    too_big_ack = api.client.post("/v1/federation/acks", content=big, headers=json_type)
    assert too_big_ack.status_code == 413  # no token at all: audited without an actor
    elsewhere = api.client.post("/v1/tombstones", content=big, headers=api.admin | json_type)
    assert elsewhere.status_code == 413
    refused = [(e["actor"], e["subject"], e["details"]["code"]) for e in _refusals(api)]
    assert refused == [
        (PEER_NAME, "/federation/tombstone", "request_too_large"),
        (PEER_NAME, "/federation/tombstone", "invalid_input"),
        (PEER_NAME, "/federation/tombstone", "invalid_input"),
        (None, "/v1/federation/acks", "request_too_large"),
    ]
    assert api.count("tombstones") == 0
