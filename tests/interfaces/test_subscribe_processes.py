"""``GET /v1/subscribe`` served by a real ``oblivio serve`` process and read by a real SSE client
(httpx-sse) on both stores: events arrive as they are written, a tombstoned entity's records are
never sent, and ``Last-Event-ID`` resumes without repeats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import connect_sse

from oblivio.node.node import init_node
from tests.interfaces.conftest import make_keys
from tests.processes import Served, free_port

START = "2000-01-01T00:00:00.000Z"


@pytest.fixture
def served(tmp_path: Path, store_uri: str) -> Iterator[tuple[Served, dict[str, str]]]:
    home = tmp_path / "node"
    init_node(home, name="subscribe.example", store_uri=store_uri).close()
    keys = make_keys(home)
    server = Served("node", home, free_port(), keys["admin"], tmp_path / "serve.log")
    server.start()
    try:
        yield server, keys["agent"]
    finally:
        server.stop()


def _fact(client: httpx.Client, entity: str, attribute: str, **value: Any) -> None:
    body = {"entity_uri": entity, "attribute": attribute, "value": value}
    assert client.post("/v1/facts", json=body).status_code == 201


def test_a_real_client_reads_the_stream_filtered_at_send_time(
    served: tuple[Served, dict[str, str]],
) -> None:
    server, agent_key = served
    with server.client() as admin, server.client(agent_key) as agent:
        _fact(agent, "user:bob", "motto", literal="carpe diem")
        _fact(agent, "user:alice", "motto", literal="alice was here")
        tomb = admin.post("/v1/tombstones", json={"entity_uri": "user:alice", "scope": "*"})
        assert tomb.status_code == 201, tomb.text
        received: list[dict[str, Any]] = []
        last_id = ""
        params = {"after": START, "seconds": "60"}
        with connect_sse(agent, "GET", "/v1/subscribe", params=params) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for event in source.iter_sse():
                received.append({"event": event.event, **json.loads(event.data)})
                last_id = event.id
                if len(received) == 1:
                    # Written while the client reads: delivered as they come, Alice's never.
                    _fact(agent, "user:alice", "city", literal="alice town")
                    _fact(agent, "user:bob", "city", literal="Graz")
                    card = {
                        "about_entity": "user:bob",
                        "text": "Bob met friends",
                        "related_entities": ["user:alice", "user:carol"],
                    }
                    assert agent.post("/v1/cards", json=card).status_code == 201
                if received[-1]["event"] == "card":
                    break
        assert [(r["event"], r.get("value")) for r in received] == [
            ("fact", {"literal": "carpe diem"}),
            ("fact", {"literal": "Graz"}),
            ("card", None),
        ]
        assert received[-1]["related_entities"] == ["user:carol"]
        assert "alice" not in json.dumps(received)
        # Resuming from the last id sends nothing twice.
        resume = {"seconds": "1"}
        with connect_sse(
            agent, "GET", "/v1/subscribe", params=resume, headers={"Last-Event-ID": last_id}
        ) as source:
            assert list(source.iter_sse()) == []
