"""Capability tokens: the PASETO v4.public vectors through the key conversions oblivio uses,
and every claim check (signature, issuer, expiry, verb) of federation/tokens.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyseto
import pytest

from oblivio.core.signing import SigningKey, VerifyKey
from oblivio.federation.tokens import (
    VERBS,
    CapabilityDeniedError,
    TokenExpiredError,
    VerbMissingError,
    issue_token,
    paseto_public_key,
    paseto_secret_key,
    validate_verbs,
    verify_token,
)

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "paseto_v4_public.json").read_text())
NOW = datetime.now(UTC).replace(microsecond=0)
"""pyseto also checks ``exp`` against the clock, so tokens are issued now."""


def _tests(expect_fail: bool) -> list[dict[str, Any]]:
    return [t for t in VECTORS["tests"] if t["expect-fail"] is expect_fail]


@pytest.mark.parametrize("vector", _tests(False), ids=lambda t: t["name"])
def test_valid_vectors_sign_and_verify_through_oblivio_keys(vector: dict[str, Any]) -> None:
    signing_key = SigningKey(bytes.fromhex(vector["secret-key-seed"]))
    assert signing_key.verify_key.public_bytes.hex() == vector["public-key"]
    token = pyseto.encode(
        paseto_secret_key(signing_key),
        vector["payload"].encode("utf-8"),
        footer=vector["footer"].encode("utf-8"),
        implicit_assertion=vector["implicit-assertion"].encode("utf-8"),
    )
    assert token.decode("ascii") == vector["token"]  # Ed25519 is deterministic
    decoded = pyseto.decode(
        paseto_public_key(VerifyKey(bytes.fromhex(vector["public-key"]))),
        vector["token"],
        implicit_assertion=vector["implicit-assertion"].encode("utf-8"),
    )
    assert decoded.payload == vector["payload"].encode("utf-8")
    assert decoded.footer == vector["footer"].encode("utf-8")
    with pytest.raises(pyseto.VerifyError):
        pyseto.decode(
            paseto_public_key(VerifyKey(bytes.fromhex(vector["public-key"]))),
            vector["token"],
            implicit_assertion=b"another assertion",
        )


@pytest.mark.parametrize("vector", _tests(True), ids=lambda t: t["name"])
def test_expect_fail_vectors_fail(vector: dict[str, Any]) -> None:
    if "public-key" in vector:
        key = paseto_public_key(VerifyKey(bytes.fromhex(vector["public-key"])))
    else:
        key = pyseto.Key.new(version=4, purpose="local", key=bytes.fromhex(vector["key"]))
    with pytest.raises(ValueError, match="key is not found"):
        pyseto.decode(
            key, vector["token"], implicit_assertion=vector["implicit-assertion"].encode()
        )


def test_vectors_file_holds_three_valid_and_two_failing() -> None:
    assert [t["name"] for t in VECTORS["tests"]] == ["4-S-1", "4-S-2", "4-S-3", "4-F-1", "4-F-2"]


KEY = SigningKey(bytes(range(32)))


def _token(**overrides: Any) -> str:
    args: dict[str, Any] = {
        "issuer": "node-a.example",
        "subject": "node-b.example",
        "verbs": ["tombstone:read"],
        "jti": "0190aaaa-0000-7000-8000-000000000000",
        "now": NOW,
        "lifetime": timedelta(hours=1),
    } | overrides
    signing_key = args.pop("signing_key", KEY)
    return issue_token(signing_key, **args)


def test_a_token_verifies_and_names_its_claims() -> None:
    capability = verify_token(_token(), [KEY.verify_key], issuer="node-a.example", now=NOW)
    assert (capability.issuer, capability.subject) == ("node-a.example", "node-b.example")
    assert capability.verbs == ("tombstone:read",)
    assert capability.expires_at == NOW + timedelta(hours=1)
    capability.require("tombstone:read")
    with pytest.raises(VerbMissingError, match="tombstone:write"):
        capability.require("tombstone:write")


def test_expired_token_is_refused() -> None:
    with pytest.raises(TokenExpiredError):
        verify_token(
            _token(), [KEY.verify_key], issuer="node-a.example", now=NOW + timedelta(hours=2)
        )


def test_token_of_another_key_or_issuer_is_refused() -> None:
    other = SigningKey(bytes(range(1, 33)))
    with pytest.raises(CapabilityDeniedError, match="does not hold"):
        verify_token(_token(signing_key=other), [KEY.verify_key], issuer="node-a.example", now=NOW)
    with pytest.raises(CapabilityDeniedError, match="expected issuer"):
        verify_token(_token(), [KEY.verify_key], issuer="node-c.example", now=NOW)


def test_tampered_token_is_refused() -> None:
    token = _token()
    body = token.split(".")[2]
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    with pytest.raises(CapabilityDeniedError):
        verify_token(
            token.replace(body, flipped), [KEY.verify_key], issuer="node-a.example", now=NOW
        )


def test_not_a_paseto_token_is_refused() -> None:
    for text in ("", "obk_abc", "v4.local.xxx", "v4.public." + "A" * 5000):
        with pytest.raises(CapabilityDeniedError):
            verify_token(text, [KEY.verify_key], issuer="node-a.example", now=NOW)


def test_verbs_are_checked() -> None:
    assert validate_verbs(["ack:write", "tombstone:read"]) == ("tombstone:read", "ack:write")
    assert set(VERBS) >= {"tombstone:read", "tombstone:write", "ack:write", "belief:read"}
    for bad in ([], ["tombstone:delete"]):
        with pytest.raises(CapabilityDeniedError):
            validate_verbs(bad)
