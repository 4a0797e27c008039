"""Recall fixtures: a node's services with an agent key, and short ways to write records."""

from __future__ import annotations

from typing import Any

import pytest

from oblivio.core.canonical import JsonValue
from oblivio.node.api_keys import ApiKey
from oblivio.node.node import Node
from oblivio.node.recall.model import parse_card, parse_fact
from oblivio.node.recall.query import make_query
from oblivio.node.recall.service import RecallService
from oblivio.node.services import NodeServices, open_services


@pytest.fixture
def services(node: Node) -> NodeServices:
    return open_services(node)


@pytest.fixture
def agent(services: NodeServices) -> ApiKey:
    key, _ = services.compliance.api_keys.create("agent-1", "agent")
    return key


def add_fact(
    recall: RecallService,
    key: ApiKey,
    entity: str,
    attribute: str,
    value: JsonValue = None,
    *,
    ref: str | None = None,
    scope: str = "local",
    derived_from: list[str] | None = None,
    valid_from: str | None = None,
) -> dict[str, Any]:
    """Write one fact; its id and hash."""
    body: dict[str, Any] = {
        "entity_uri": entity,
        "attribute": attribute,
        "value": {"ref": ref} if ref is not None else {"literal": value},
        "scope": scope,
        "derived_from": derived_from or [],
    }
    if valid_from is not None:
        body["valid_from"] = valid_from
    return recall.add_facts(key, [parse_fact(body)])[0]


def add_card(
    recall: RecallService,
    key: ApiKey,
    about: str,
    text: str,
    *,
    related: list[str] | None = None,
    scope: str = "local",
) -> dict[str, Any]:
    return recall.add_card(
        key,
        parse_card(
            {"about_entity": about, "text": text, "related_entities": related or [], "scope": scope}
        ),
    )


def recall_json(recall: RecallService, key: ApiKey, **query: Any) -> dict[str, Any]:
    """A recall page as the HTTP API answers it."""
    return recall.recall(key, make_query(**query)).to_dict()
