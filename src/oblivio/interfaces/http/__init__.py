"""The node's HTTP API (ASGI, FastAPI; OpenAPI at /openapi.json), run by ``oblivio serve``.

One router module per domain: ``node`` (the org manifest, the audit log, the public
``/v1/health`` of the epoch loop), ``tombstones`` (seed 002 §23.6, admin keys only; agent keys
get 403 ``tombstone_access_denied``), ``artifacts`` (artifacts, forgetting, proofs and legal
holds, mirroring the command line), ``log`` (checkpoints and RFC 9162 proofs), ``recall``,
``federation`` (seed 001 ``/federation/*`` and ``/v1/federation/*``, capability tokens) and
``witness``; ``common`` holds the error shape, the body limit and the API-key role checks, and
``app`` puts them together.
Every error is JSON ``{"error": {"code": …, "message": …}}`` with the §23.7 codes where they
apply; request bodies are size-limited and unknown fields are refused.
"""

from oblivio.interfaces.http.app import create_app

__all__ = ["create_app"]
