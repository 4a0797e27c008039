"""HTTP to peers: the one place oblivio speaks to another node (httpx, synchronous).

Every call names the peer's URL and the capability token the peer issued us. A peer that cannot
be reached, times out or answers 5xx raises PeerUnreachableError (retry later); a 4xx answer
raises PeerRefusedError with the peer's JSON error code (retry later too: the outbox never gives
up while the peer is active, but the operator sees why).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx

from oblivio.core.canonical import JsonValue, parse_json
from oblivio.core.errors import InfrastructureError
from oblivio.core.evidence import SIGNATURE_HEADER

TIMEOUT: Final = httpx.Timeout(20.0, connect=5.0)
EVENTS_READ_TIMEOUT: Final = 45.0
"""Seconds without a byte before an announce stream is dropped (the server sends keep-alives
every 15 s)."""
MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


class PeerUnreachableError(InfrastructureError):
    """The peer could not be reached or failed (5xx): try again later."""

    code = "peer_unreachable"


class PeerRefusedError(InfrastructureError):
    """The peer answered 4xx; ``error_code`` is its JSON error code."""

    code = "peer_refused"

    def __init__(self, message: str, status: int, error_code: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


@dataclass(frozen=True)
class RawResponse:
    """A peer's answer as received: status, exact body bytes, its response signature."""

    status: int
    body: bytes
    signature: str | None


class PeerClient:
    """Requests to peers over one connection pool."""

    def __init__(self) -> None:
        self._client = httpx.Client(timeout=TIMEOUT, follow_redirects=False)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _call(
        self,
        method: str,
        url: str,
        token: str | None,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = self._client.request(method, url, headers=headers, json=body, params=params)
        except httpx.HTTPError as e:
            raise PeerUnreachableError(f"{method} {url}: {type(e).__name__}: {e}") from e
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise PeerUnreachableError(f"{method} {url}: response over {MAX_RESPONSE_BYTES} bytes")
        try:
            data = parse_json(response.content)
        except Exception as e:
            raise PeerUnreachableError(
                f"{method} {url}: answered {response.status_code} without JSON"
            ) from e
        if response.status_code >= 500:
            raise PeerUnreachableError(f"{method} {url}: answered {response.status_code}")
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            code = str(error.get("code", "unknown")) if isinstance(error, dict) else "unknown"
            message = str(error.get("message", "")) if isinstance(error, dict) else ""
            raise PeerRefusedError(
                f"{method} {url}: {response.status_code} {code}: {message}",
                response.status_code,
                code,
            )
        if not isinstance(data, dict):
            raise PeerUnreachableError(f"{method} {url}: expected a JSON object")
        return data

    def fetch(self, base_url: str, path: str, token: str | None) -> RawResponse:
        """``GET base_url + path`` as answered, any status below 500: the exact body bytes and
        the response signature header (a probe keeps both as evidence). Raises
        PeerUnreachableError when the peer cannot be reached, answers 5xx or too much."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{base_url}{path}"
        try:
            response = self._client.request("GET", url, headers=headers)
        except httpx.HTTPError as e:
            raise PeerUnreachableError(f"GET {url}: {type(e).__name__}: {e}") from e
        if len(response.content) > MAX_RESPONSE_BYTES or response.status_code >= 500:
            raise PeerUnreachableError(f"GET {url}: answered {response.status_code}")
        return RawResponse(
            response.status_code, response.content, response.headers.get(SIGNATURE_HEADER)
        )

    def manifest(self, base_url: str) -> dict[str, Any]:
        """The peer's own manifest (public ``GET /v1/manifest``)."""
        return self._call("GET", f"{base_url}/v1/manifest", None)

    def org_manifest(self, base_url: str, token: str | None, org: str) -> dict[str, Any]:
        """The manifest a peer holds for another org (``GET /v1/federation/manifests/{org}``)."""
        return self._call("GET", f"{base_url}/v1/federation/manifests/{org}", token)

    def push(
        self, base_url: str, token: str | None, record: Mapping[str, JsonValue]
    ) -> dict[str, Any]:
        """Deliver a tombstone or revocation (``POST /federation/tombstone``)."""
        return self._call("POST", f"{base_url}/federation/tombstone", token, body=record)

    def send_belief(
        self, base_url: str, token: str | None, delivery: Mapping[str, JsonValue]
    ) -> dict[str, Any]:
        """Deliver a belief to a recipient (``POST /v1/federation/beliefs``)."""
        return self._call("POST", f"{base_url}/v1/federation/beliefs", token, body=delivery)

    def send_ack(
        self, base_url: str, token: str | None, ack: Mapping[str, JsonValue]
    ) -> dict[str, Any]:
        """Deliver a signed ack (``POST /v1/federation/acks``)."""
        return self._call("POST", f"{base_url}/v1/federation/acks", token, body=ack)

    def pull(self, base_url: str, token: str | None, since: str, limit: int) -> dict[str, Any]:
        """One page of the peer's records (``GET /v1/federation/tombstones``, §23.4.3)."""
        return self._call(
            "GET",
            f"{base_url}/v1/federation/tombstones",
            token,
            params={"since": since, "limit": limit},
        )

    def events(self, base_url: str, token: str | None) -> Iterator[str]:
        """The names of the events the peer announces, as they come (Server-Sent Events).

        Ends when the stream ends; raises PeerUnreachableError when it cannot be opened or
        breaks, PeerRefusedError when refused."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(TIMEOUT.connect, read=EVENTS_READ_TIMEOUT)
        try:
            with httpx.stream(
                "GET", f"{base_url}/v1/federation/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    raise PeerRefusedError(
                        f"GET {base_url}/v1/federation/events: {response.status_code}",
                        response.status_code,
                        "events_refused",
                    )
                yield "open"
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        yield line.removeprefix("event:").strip()
        except httpx.HTTPError as e:
            raise PeerUnreachableError(f"announce stream of {base_url}: {e}") from e
