"""Seed 002 §23.6 tombstones (admin keys only; agent keys get 403 ``tombstone_access_denied``)
and seed 001 deletion requests' signature check.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field, StrictBool, StrictStr

from oblivio.core.deletion import SignedDeletionRequest
from oblivio.core.deletion import verify_deletion_request as verify_request_signature
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.identifiers import validate_entity_uri
from oblivio.core.tombstones import TOMBSTONE_PREFIX, validate_record_id
from oblivio.interfaces.http.common import Admin, ExistingTombstoneError, Services, Strict
from oblivio.node.compliance import Compliance

# -- request bodies


class TombstoneRequest(Strict):
    """POST /v1/tombstones (seed 002 §23.6.1)."""

    entity_uri: StrictStr = Field(max_length=600, examples=["user:alice"])
    scope: StrictStr | list[StrictStr] = Field(examples=["*"])
    reason: StrictStr | None = Field(default=None, max_length=2000)
    legal_hold: StrictBool = False


class RevokeRequest(Strict):
    """POST /v1/tombstones/{id}/revoke (seed 002 §23.6.3)."""

    reason: StrictStr = Field(min_length=1, max_length=2000)


class DeletionRequest(Strict):
    """Seed 001 ``DeletionRequest``: signed by the originator over its JCS bytes without
    ``signature`` (base64url Ed25519), with the key the originator's manifest held at
    ``timestamp``."""

    belief_id: StrictStr
    tombstone_id: StrictStr
    reason: Literal["user_request", "legal_requirement", "accidental_share", "other"]
    originator_id: StrictStr = Field(max_length=600)
    signature: StrictStr = Field(max_length=200)
    timestamp: StrictStr = Field(max_length=40)
    propagate: StrictBool
    legal_reference: StrictStr | None = Field(default=None, max_length=600)


# -- tombstones (seed 002 §23.6) ------------------------------------------------------------------

tombstone_routes = APIRouter()


@tombstone_routes.post("/v1/tombstones", status_code=201, summary="Issue a tombstone (§23.6.1)")
def post_tombstone(body: TombstoneRequest, services: Services, key: Admin) -> dict[str, Any]:
    """201 with the signed record; 409 tombstone_already_exists with the active one."""
    record, created = services.tombstones.issue(
        key.name, body.entity_uri, body.scope, body.reason, body.legal_hold
    )
    if not created:
        raise ExistingTombstoneError(record.to_dict())
    return record.to_dict()


@tombstone_routes.get(
    "/v1/tombstones/{entity_uri_encoded:path}", summary="Tombstone status (§23.6.2)"
)
def get_tombstones(entity_uri_encoded: str, services: Services, _: Admin) -> dict[str, Any]:
    """Every tombstone and revocation for the (percent-encoded) entity URI."""
    entity_uri = validate_entity_uri(entity_uri_encoded)
    tombstones, revocations = services.tombstones.store.for_entity(entity_uri)
    if not tombstones:
        return {"tombstoned": False, "tombstones": []}
    revoked = {r.tombstone_id for r in revocations}
    return {
        "tombstoned": any(t.id not in revoked for t in tombstones),
        "tombstones": [t.to_dict() for t in tombstones],
        "revocations": [r.to_dict() for r in revocations],
    }


@tombstone_routes.post(
    "/v1/tombstones/{tombstone_id}/revoke", summary="Revoke a tombstone (§23.6.3)"
)
def post_revoke(tombstone_id: str, body: RevokeRequest, services: Services, key: Admin) -> Response:
    """200 with the signed revocation; the headers say what could not be restored."""
    validate_record_id(tombstone_id, TOMBSTONE_PREFIX)
    revocation = services.tombstones.revoke(key.name, tombstone_id, body.reason)
    erased = len(revocation.erased_artifacts)
    restoration = (
        f"{erased} artifacts erased at level 1 stay unreadable" if erased else "nothing was erased"
    )
    return Response(
        content=json.dumps(revocation.record.to_dict()),
        media_type="application/json",
        headers={
            "Oblivio-Erased-Artifacts": str(erased),
            "Oblivio-Restoration": "suppression lifted; " + restoration,
        },
    )


def verify_deletion_request(services: Compliance, request: dict[str, Any]) -> None:
    """Verify a seed 001 DeletionRequest against its originator's manifest (core/deletion.py).

    ``originator_id`` names the org (an org name, or ``agent:ORG/NAME``); the key is the one
    that org's manifest held at ``timestamp``. Raises VerificationError naming the failed link.
    """
    try:
        parsed = SignedDeletionRequest.from_dict(request)
    except InvalidInputError as e:
        raise VerificationError(f"deletion request: {e}") from e
    manifest = services.manifests.find(parsed.org)
    if manifest is None:
        raise VerificationError(
            f"deletion request: no manifest known for originator {parsed.org!r}"
        )
    verify_request_signature(parsed, manifest)
