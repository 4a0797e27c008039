"""The operator's non-compliance routes (DESIGN.md §12, docs/adr/0027), admin API keys only:
kept evidence, probes, reinstating an isolated peer. Under ``/v1/federation`` like the other
federation routes, so their answers are signed too (signed_responses.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from oblivio.core.canonical import JsonValue
from oblivio.interfaces.http.common import Admin
from oblivio.interfaces.http.federation import FederationDep

compliance_routes = APIRouter()


@compliance_routes.get("/v1/federation/evidence", summary="Non-compliance evidence kept")
def evidence_list(
    federation: FederationDep,
    _: Admin,
    peer: Annotated[str | None, Query(max_length=300)] = None,
) -> dict[str, Any]:
    """Evidence records kept against peers, newest first: id, peer, finding, tombstone."""
    return {"evidence": federation.noncompliance.evidence_list(peer)}


@compliance_routes.get(
    "/v1/federation/evidence/{evidence_id}", summary="One evidence record, to verify offline"
)
def evidence_record(evidence_id: str, federation: FederationDep, _: Admin) -> dict[str, JsonValue]:
    """``oblivio.noncompliance-evidence.v1`` exactly as kept (``oblivio verify-evidence``)."""
    return federation.noncompliance.evidence(evidence_id[:200])


@compliance_routes.get("/v1/federation/probes", summary="Probes of peers after tombstones")
def probes(
    federation: FederationDep,
    _: Admin,
    tombstone_id: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Per tombstone and peer: state (``due``, ``done``), attempts, findings, last result."""
    return {"probes": federation.noncompliance.probes(tombstone_id)}


@compliance_routes.post(
    "/v1/federation/peers/{name}/reinstate", summary="Lift a peer's isolation (audited)"
)
def reinstate(name: str, federation: FederationDep, key: Admin) -> dict[str, Any]:
    """An isolated peer becomes active with reputation 1.0; 400 if it is not isolated."""
    return federation.noncompliance.reinstate(name[:300], actor=key.name).to_dict()
