"""A peer that ignores tombstones: a real HTTP server in a process of its own, for the
non-compliance process test (issue 12, deliverable 6).

It has a real Ed25519 identity (its seed in a file) and serves a manifest that ``oblivio peer
add`` accepts. It signs every answer the way oblivio nodes do (core/evidence.py
``Oblivio-Response-Signature``), accepts pushed tombstones (``accepted: true``) and belief
deliveries, and keeps serving every belief it was given or asked about: the status route says
``exists: true, deleted: false`` and the belief route answers content. It pulls nothing and
never acks.

    python -m tests.federation.ignoring_peer --name NAME --port PORT --seed-file FILE

``GET /test/pushed`` lists the ids of the records pushed to it (for the test to poll).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from oblivio.core.canonical import canonical_json
from oblivio.core.evidence import SIGNATURE_HEADER, encode_statement, sign_response
from oblivio.core.identifiers import format_time
from oblivio.core.manifest import new_manifest
from oblivio.core.signing import SigningKey

BELIEF_ROUTE = re.compile(r"/v1/federation/beliefs/([^/?]+)")
STATUS_ROUTE = re.compile(r"/federation/belief/([^/?]+)/status")


def serve(name: str, port: int, key: SigningKey) -> None:
    """Serve until killed."""
    created = format_time(datetime.now(UTC) - timedelta(minutes=1))
    manifest = new_manifest(name, key, created)
    pushed: list[str] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = canonical_json(body)
            statement = sign_response(
                key,
                node=name,
                method=self.command,
                path=self.path,
                status=status,
                body=data,
                signed_at=format_time(datetime.now(UTC)),
            )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header(SIGNATURE_HEADER, encode_statement(statement))
            self.end_headers()
            self.wfile.write(data)

        def _bearer(self) -> bool:
            if self.headers.get("Authorization", "").startswith("Bearer "):
                return True
            self._answer(401, {"error": {"code": "capability_denied", "message": "no token"}})
            return False

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path in ("/v1/health", "/v1/manifest", "/test/pushed"):
                with lock:
                    known = {"/v1/manifest": manifest, "/test/pushed": {"pushed": list(pushed)}}
                self._answer(200, known.get(path, {"status": "ok"}))
                return
            if not self._bearer():
                return
            belief = BELIEF_ROUTE.fullmatch(path)
            status = STATUS_ROUTE.fullmatch(path)
            if belief:
                content = {"id": belief.group(1), "status": "active", "content": "still here"}
                self._answer(200, content)
            elif status:
                self._answer(200, {"exists": True, "deleted": False})
            elif path == "/v1/federation/tombstones":
                since = re.search(r"since=([^&]*)", self.path)
                cursor = since.group(1) if since else "c1.none"
                self._answer(200, {"tombstones": [], "revocations": [], "cursor": cursor})
            else:
                self._answer(404, {"error": {"code": "not_found", "message": path}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body: Any = json.loads(self.rfile.read(length) or b"{}")
            if not self._bearer():
                return
            record_id = str(body.get("id")) if isinstance(body, dict) else "?"
            with lock:
                pushed.append(record_id)
            self._answer(200, {"accepted": True, "tombstone_id": record_id, "new": True})

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed-file", type=Path, required=True)
    args = parser.parse_args()
    serve(args.name, args.port, SigningKey(args.seed_file.read_bytes()))


if __name__ == "__main__":
    main()
