"""HTTP routes of the witness role (DESIGN.md §17, C2SP tlog-witness), and the background thread
of ``oblivio serve`` that asks this node's witnesses for cosignatures.

- ``POST /v1/witness/add-checkpoint``: the C2SP body in, cosignature lines out; 400 malformed,
  404 unknown origin, 403 no trusted signature, 409 ``text/x.tlog.size`` (old size mismatch or
  a fork), 422 bad consistency proof. Like the spec, no authentication beyond the checkpoint's
  signature. Errors other than 409 use the API's JSON error shape.
- ``GET /v1/witness``: the witness's verifier key and the logs it witnesses, with the latest
  size and root it cosigned for each.
- ``GET /v1/witness/equivocations``: equivocation evidence (``oblivio.equivocation.v1``), public.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from oblivio.core.errors import OblivioError
from oblivio.core.witness import (
    SIZE_CONTENT_TYPE,
    BadConsistencyProofError,
    UnknownLogError,
    UntrustedCheckpointError,
    WitnessConflictError,
    WitnessRequestError,
    size_body,
)
from oblivio.node.services import NodeServices
from oblivio.node.witness import CosignatureCollector, HttpWitnessTransport, WitnessService

witness_routes = APIRouter()

_STATUS: tuple[tuple[type[OblivioError], int], ...] = (
    (WitnessRequestError, 400),
    (UnknownLogError, 404),
    (UntrustedCheckpointError, 403),
    (BadConsistencyProofError, 422),
)


def start_witnessing(
    app: FastAPI, services: NodeServices, stop: threading.Event
) -> threading.Thread:
    """Open the witness service for the routes and start the thread that asks this node's
    witnesses to cosign each new checkpoint; it runs until ``stop`` is set."""
    node = services.node
    app.state.witness = WitnessService(node.db, node.config.name, node.signing_key)
    transport = HttpWitnessTransport()
    collector = CosignatureCollector(node.db, lambda: services.checkpoints, transport)
    app.state.cosignatures = collector

    def run() -> None:
        try:
            collector.run(stop, services.checkpoints.committed)
        finally:
            transport.close()

    thread = threading.Thread(target=run, name="oblivio-witnesses", daemon=True)
    thread.start()
    return thread


def _witness(request: Request) -> WitnessService:
    value: WitnessService = request.app.state.witness
    return value


def _error(status: int, error: OblivioError) -> JSONResponse:
    message = " ".join(str(error).split())
    return JSONResponse(
        status_code=status, content={"error": {"code": error.code, "message": message}}
    )


@witness_routes.post(
    "/v1/witness/add-checkpoint",
    summary="C2SP tlog-witness add-checkpoint: cosign a consistent checkpoint",
    responses={
        200: {"content": {"text/plain": {}}, "description": "cosignature lines"},
        400: {"description": "malformed body, or old size above the checkpoint's"},
        403: {"description": "no signature by a trusted key"},
        404: {"description": "unknown origin"},
        409: {"content": {SIZE_CONTENT_TYPE: {}}, "description": "the latest cosigned size"},
        422: {"description": "the consistency proof does not verify"},
    },
)
async def add_checkpoint(request: Request) -> Response:
    """Check the checkpoint against the stored state and cosign it (module docstring)."""
    body = await request.body()
    witness = _witness(request)
    try:
        line = await run_in_threadpool(witness.add_checkpoint, body)
    except WitnessConflictError as e:
        # Exactly the spec's type, without the charset Starlette adds to a text/* media type.
        return Response(
            size_body(e.latest_size), status_code=409, headers={"content-type": SIZE_CONTENT_TYPE}
        )
    except (
        WitnessRequestError,
        UnknownLogError,
        UntrustedCheckpointError,
        BadConsistencyProofError,
    ) as e:
        status = next(code for kind, code in _STATUS if isinstance(e, kind))
        return _error(status, e)
    return Response(line.encode("utf-8"), media_type="text/plain; charset=utf-8")


@witness_routes.get("/v1/witness", summary="This witness's key and the logs it witnesses")
def get_witness(request: Request) -> dict[str, Any]:
    """Public: the cosignature verifier key and, per log, the latest size and root cosigned."""
    witness = _witness(request)
    return {
        "name": witness.signer.name,
        "verifier_key": witness.verifier_key,
        "logs": [log.to_dict() for log in witness.logs()],
    }


@witness_routes.get("/v1/witness/equivocations", summary="Equivocation evidence kept")
def get_equivocations(
    request: Request,
    after: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Public: pairs of checkpoints a log signed at one size with different roots, each
    checkable offline with ``oblivio verify-evidence FILE --key LOG_VKEY``."""
    return {"equivocations": [e.to_dict() for e in _witness(request).equivocations(after, limit)]}
