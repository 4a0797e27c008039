"""What signing a federation answer costs (docs/adr/0027): ``sign_response`` (JCS statement,
SHA-256 of the body, Ed25519) and ``verify_response`` for bodies of 1 KiB, 64 KiB and 1 MiB,
beside the bare primitives measured in the same run (the peer): ``cryptography``'s Ed25519
signature of the body's SHA-256 (``hashlib``).

Prints one JSON object per line. Usage: ``.venv/bin/python benchmarks/signed_responses_bench.py``
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oblivio.core.evidence import sign_response, verify_response
from oblivio.core.signing import SigningKey

SIZES = {"1KiB": 1024, "64KiB": 64 * 1024, "1MiB": 1024 * 1024}


def per_second(work: Callable[[], object], budget: float = 1.0) -> float:
    """Calls per second of ``work`` over about ``budget`` seconds."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        work()
        count += 1
    return count / elapsed


def main() -> None:
    seed = os.urandom(32)
    key = SigningKey(seed)
    raw = Ed25519PrivateKey.from_private_bytes(seed)
    for label, size in SIZES.items():
        body = os.urandom(size)

        def sign(body: bytes = body) -> object:
            return sign_response(
                key,
                node="node-a.example",
                method="GET",
                path="/v1/federation/beliefs/0193a1b2-0000-7000-8000-000000000001",
                status=200,
                body=body,
                signed_at="2026-12-02T12:00:00.000Z",
            )

        statement = sign()

        def verify(body: bytes = body, statement: object = statement) -> object:
            return verify_response(statement, body, key.verify_key)

        def bare(body: bytes = body) -> object:
            return raw.sign(hashlib.sha256(body).digest())

        figures = {
            "body": label,
            "sign_response_per_s": round(per_second(sign)),
            "verify_response_per_s": round(per_second(verify)),
            "peer_ed25519_of_sha256_per_s": round(per_second(bare)),
        }
        figures["overhead_vs_peer"] = round(
            figures["peer_ed25519_of_sha256_per_s"] / figures["sign_response_per_s"], 2
        )
        print(json.dumps(figures, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
