"""The memory store's HTTP routes on both stores: writes, recall, instruction, subscription,
and bad input (400 with a clear code, nothing stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.interfaces.conftest import Api


def _fact(entity: str, attribute: str, literal: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"entity_uri": entity, "attribute": attribute}
    body["value"] = {"ref": extra.pop("ref")} if "ref" in extra else {"literal": literal}
    return body | extra


def test_write_and_recall(api: Api) -> None:
    c = api.client
    one = c.post("/v1/facts", json=_fact("user:alice", "email", "a@example.org"), headers=api.agent)
    assert one.status_code == 201, one.text
    batch = c.post(
        "/v1/facts",
        json={
            "facts": [_fact("user:bob", "knows", ref="user:alice"), _fact("user:bob", "age", 40)]
        },
        headers=api.agent,
    )
    assert batch.status_code == 201
    assert len(batch.json()["facts"]) == 2
    card = c.post(
        "/v1/cards",
        json={"about_entity": "user:bob", "text": "Bob sails", "related_entities": ["user:alice"]},
        headers=api.agent,
    )
    assert card.status_code == 201
    page = c.get("/v1/recall", params={"entity": "user:bob", "hops": 1}, headers=api.agent)
    assert page.status_code == 200
    assert page.headers["X-Total-Count"] == "4"
    body = page.json()
    assert body["edges"] == [
        {
            "fact_id": body["edges"][0]["fact_id"],
            "from": "user:bob",
            "attribute": "knows",
            "to": "user:alice",
        }
    ]
    found = c.get("/v1/recall", params={"q": "sails"}, headers=api.agent).json()
    assert [x["text"] for x in found["cards"]] == ["Bob sails"]
    block = c.post(
        "/v1/recall/instruction",
        json={"entity": "user:bob", "token_budget": 200},
        headers=api.agent,
    ).json()
    assert "Bob sails" in block["text"]
    assert block["tokens"] <= 200
    # A tombstone applies at once on every path.
    tomb = c.post(
        "/v1/tombstones", json={"entity_uri": "user:alice", "scope": "*"}, headers=api.admin
    )
    assert tomb.status_code == 201
    after = c.get("/v1/recall", params={"entity": "user:bob", "hops": 1}, headers=api.agent)
    assert after.headers["X-Total-Count"] == "2"
    assert after.json()["cards"][0]["related_entities"] == []


def test_retract(api: Api) -> None:
    c = api.client
    fact_id = c.post("/v1/facts", json=_fact("user:a", "city", "Rome"), headers=api.agent).json()[
        "facts"
    ][0]["id"]
    done = c.post(f"/v1/facts/{fact_id}/retract", headers=api.agent)
    assert done.status_code == 200
    assert set(done.json()) == {"id", "fact_id", "retracted_at"}
    assert c.get("/v1/recall", params={"entity": "user:a"}, headers=api.agent).json()["total"] == 0
    missing = c.post("/v1/facts/nope/retract", headers=api.agent)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"entity": "user:a", "scopes": "team,galaxy"}, "recall_scope_unknown"),
        ({"entity": "user:a", "hops": 4}, "recall_hops_out_of_range"),
        ({"entity": "user:a", "token_budget": -1}, "recall_token_budget_invalid"),
        ({"entity": "user:a", "token_budget": 10**12}, "recall_token_budget_invalid"),
        ({"entity": "user:a", "cursor": "garbage"}, "recall_cursor_invalid"),
        ({"entity": "user:*"}, "recall_entity_uri_invalid"),
        ({}, "recall_invalid_input"),
    ],
)
def test_bad_recall_input_is_400_with_a_clear_code(
    api: Api, params: dict[str, Any], code: str
) -> None:
    answer = api.client.get("/v1/recall", params=params, headers=api.agent)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


def test_scopes_of_the_key_are_enforced(api: Api) -> None:
    from oblivio.node.compliance import open_compliance
    from oblivio.node.node import open_node

    with open_node(api.home) as node:
        _, token = open_compliance(node).api_keys.create(
            "narrow", "agent", read_scopes=["public"], write_scopes=["public"]
        )
    narrow = {"Authorization": f"Bearer {token}"}
    denied = api.client.post(
        "/v1/facts", json=_fact("user:a", "x", 1, scope="team"), headers=narrow
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "recall_scope_forbidden"
    assert api.count("facts") == 0
    refused = api.client.get(
        "/v1/recall", params={"entity": "user:a", "scopes": "team"}, headers=narrow
    )
    assert refused.status_code == 403
    assert api.client.get("/v1/recall", params={"q": "x"}, headers=api.peer).status_code == 403


def test_subscribe_streams_new_records_filtered_at_send_time(api: Api) -> None:
    c = api.client
    c.post("/v1/facts", json=_fact("user:bob", "motto", "carpe diem"), headers=api.agent)
    c.post("/v1/facts", json=_fact("user:alice", "motto", "secret"), headers=api.agent)
    # Alice is tombstoned before the events are sent: her fact is never delivered.
    c.post("/v1/tombstones", json={"entity_uri": "user:alice", "scope": "*"}, headers=api.admin)
    with c.stream(
        "GET",
        "/v1/subscribe",
        params={"after": "2000-01-01T00:00:00.000Z", "seconds": 1},
        headers=api.agent,
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [(d["entity_uri"], d["value"]) for d in data] == [
        ("user:bob", {"literal": "carpe diem"})
    ]
    assert "secret" not in text


def _card(about: str, text: str = "a note", **extra: Any) -> dict[str, Any]:
    return {"about_entity": about, "text": text, **extra}


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/facts", _fact("user:*", "x", 1), "recall_entity_uri_invalid"),
        ("/v1/facts", _fact("user:a", "x", "y" * 20_000), "fact_too_large"),
        ("/v1/facts", _fact("user:a", "x", 1, scope="galaxy"), "recall_scope_unknown"),
        (
            "/v1/facts",
            {"facts": [_fact("user:a", "x", 1), _fact("user:a", "BAD", 1)]},
            "fact_invalid",
        ),
        ("/v1/facts", {"facts": []}, "fact_invalid"),
        ("/v1/facts", {"facts": [_fact("user:a", "n", i) for i in range(501)]}, "fact_too_large"),
        ("/v1/cards", _card("user:*"), "recall_entity_uri_invalid"),
        ("/v1/cards", _card("user:a", related_entities=["team:*"]), "recall_entity_uri_invalid"),
        ("/v1/cards", _card("user:a", "y" * 40_000), "fact_too_large"),
        ("/v1/cards", _card("user:a", scope="galaxy"), "recall_scope_unknown"),
        ("/v1/cards", {"about_entity": "user:a"}, "fact_invalid"),
    ],
)
def test_bad_facts_and_cards_are_400_and_nothing_is_stored(
    api: Api, path: str, body: Any, code: str
) -> None:
    answer = api.client.post(path, json=body, headers=api.agent)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code
    assert [api.count(t) for t in ("facts", "memory_cards", "artifacts")] == [0, 0, 0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"entity": "user:a", "token_budget": -5}, "recall_token_budget_invalid"),
        ({"entity": "user:a", "token_budget": 10**9}, "recall_token_budget_invalid"),
        ({"entity": "user:a", "hops": 9, "token_budget": 100}, "recall_hops_out_of_range"),
        ({"entity": "user:*", "token_budget": 100}, "recall_entity_uri_invalid"),
        ({"q": "x", "scopes": ["galaxy"], "token_budget": 100}, "recall_scope_unknown"),
        ({"entity": "user:a"}, "recall_invalid_input"),
    ],
)
def test_bad_instruction_input_is_400(api: Api, body: Any, code: str) -> None:
    answer = api.client.post("/v1/recall/instruction", json=body, headers=api.agent)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"entity": "user:*"}, "recall_entity_uri_invalid"),
        ({"scopes": "galaxy"}, "recall_scope_unknown"),
    ],
)
def test_bad_subscribe_input_is_400(api: Api, params: dict[str, Any], code: str) -> None:
    answer = api.client.get("/v1/subscribe", params=params, headers=api.agent)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == code
