"""Tombstones as a node service (node/tombstones.py, node/services.py), on SQLite and PostgreSQL:
what a tombstone asks for is logged exactly as an operator's forget or hold is (ADR 0017).
"""

from __future__ import annotations

from typing import Any

import pytest

from oblivio.core.canonical import parse_json
from oblivio.core.forgetting import COMMITTED_AUTHORITY, open_requestor_commitment
from oblivio.node.node import Node
from oblivio.node.services import NodeServices, open_services


@pytest.fixture
def services(node: Node) -> NodeServices:
    return open_services(node)


def _log_entries(services: NodeServices) -> list[dict[str, Any]]:
    log = services.checkpoints.log
    return [parse_json(log.entry(i)) for i in range(log.size())]


# -- what a tombstone's requests look like in public (ADR 0017) ---------------------------------


def _shape(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with what differs between any two requests (ids, hashes, times) blanked."""
    blank = {"id", "artifacts", "requestor_commitment", "requested_at", "at"}
    return {k: ("…" if k in blank else v) for k, v in entry.items()}


def test_tombstone_requests_are_logged_as_an_operators_are(
    node: Node, services: NodeServices
) -> None:
    for entity in ("user:jack", "user:kate", "user:liam", "user:mona"):
        node.vault.put(entity.encode(), {}, entity, "team")
    start = services.checkpoints.log.size()
    services.compliance.tombstones.issue("admin-1", "user:jack", "*", "erasure #12")
    services.compliance.tombstones.issue("admin-1", "user:kate", "*", "hold #7", legal_hold=True)
    tombstone_entries = _log_entries(services)[start:]
    start = services.checkpoints.log.size()
    services.forgetting.forget(entity_uri="user:liam", level=2, authority="GDPR-17", reason="x")
    services.place_hold(entity_uri="user:mona", authority="court order 7", reason="y")
    services.forgetting.forget(entity_uri="user:mona", level=2, authority="GDPR-17")
    operator_entries = _log_entries(services)[start:]

    assert [_shape(e) for e in tombstone_entries] == [_shape(e) for e in operator_entries]
    for entry in tombstone_entries + operator_entries:
        assert entry["authority"] == COMMITTED_AUTHORITY
    # The node keeps the openings: each commitment opens to the authority asked for.
    with node.db.transaction(write=False) as tx:
        requests = {
            commitment: parse_json(opening)
            for commitment, opening in tx.fetchall(
                "SELECT requestor_commitment, opening FROM forget_requests"
            )
        }
        holds = {
            hold_id: parse_json(opening)
            for hold_id, opening in tx.fetchall("SELECT id, opening FROM legal_holds")
        }
    for entry in tombstone_entries + operator_entries:
        opening = (
            holds[entry["id"]]
            if entry["type"] == "legal_hold"
            else requests[entry["requestor_commitment"]]
        )
        salt = bytes.fromhex(opening["salt"])
        open_requestor_commitment(entry["requestor_commitment"], salt, opening["value"])
    authorities = [str(o["value"]["authority"]) for o in [*requests.values(), *holds.values()]]
    assert sorted(authorities) == sorted(
        ["tombstone", "tombstone", "legal-hold tombstone", "GDPR-17", "GDPR-17", "court order 7"]
    )
