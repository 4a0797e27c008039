"""Destruction receipts (oblivio.destruction.v1): signing, offline verification, and every way
a receipt can fail: tampering, a non-custodian signer, too few custodian statements."""

from __future__ import annotations

import json

import pytest

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.errors import VerificationError
from oblivio.core.receipts import (
    DestructionReceipt,
    sign_share_deletion,
    verify_destruction_receipt,
)
from oblivio.core.signing import SigningKey, VerifyKey

NODE = SigningKey(bytes([1]) * 32)
CUSTODIANS = [SigningKey(bytes([10 + i]) * 32) for i in range(5)]
OUTSIDER = SigningKey(bytes([99]) * 32)
WHEN = "2026-11-22T10:00:00.000Z"


def _software_receipt() -> DestructionReceipt:
    return DestructionReceipt(
        "software",
        {"key_id": "sw-00112233445566778899aabbccddeeff", "tree": "wrap"},
        3,
        WHEN,
        {"method": "overwrite-in-place+fsync", "forgotten_keys": 2},
    ).signed_by(NODE)


def _threshold_receipt(signers: list[SigningKey], t: int = 3) -> DestructionReceipt:
    key_id = "th-" + "ab" * 16
    statements: list[JsonValue] = [
        sign_share_deletion(signer, key_id, i + 1, WHEN) for i, signer in enumerate(signers)
    ]
    return DestructionReceipt(
        "threshold",
        {
            "key_id": key_id,
            "custodians": sorted(c.key_id for c in CUSTODIANS),
            "threshold": t,
        },
        1,
        WHEN,
        {"share_deletions": statements},
    ).signed_by(NODE)


def _custodian_keys() -> list[VerifyKey]:
    return [c.verify_key for c in CUSTODIANS]


def test_software_receipt_verifies_and_hashes_as_served() -> None:
    receipt = _software_receipt()
    data = receipt.to_bytes()
    verified = verify_destruction_receipt(data, NODE.verify_key)
    assert verified.backend == "software"
    assert verified.epoch == 3
    assert verified.receipt_hash == receipt.digest()
    assert json.loads(data)["type"] == "oblivio.destruction.v1"
    assert DestructionReceipt.from_dict(json.loads(data)) == receipt


def test_threshold_receipt_with_n_minus_t_plus_1_statements_verifies() -> None:
    receipt = _threshold_receipt(CUSTODIANS[:3])  # n=5, t=3: 3 needed
    verified = verify_destruction_receipt(receipt.to_bytes(), NODE.verify_key, _custodian_keys())
    assert verified.custodians_attesting == 3


def test_fewer_than_n_minus_t_plus_1_statements_fail() -> None:
    receipt = _threshold_receipt(CUSTODIANS[:2])
    with pytest.raises(VerificationError, match="at least n - t \\+ 1 = 3"):
        verify_destruction_receipt(receipt.to_bytes(), NODE.verify_key, _custodian_keys())


def test_statement_by_a_non_custodian_fails() -> None:
    receipt = _threshold_receipt([*CUSTODIANS[:2], OUTSIDER])
    with pytest.raises(VerificationError, match="not a custodian"):
        verify_destruction_receipt(receipt.to_bytes(), NODE.verify_key, _custodian_keys())


def test_receipt_signed_by_a_non_custodian_fails() -> None:
    unsigned = _software_receipt()
    forged = DestructionReceipt(
        unsigned.backend, unsigned.key_ref, unsigned.epoch, unsigned.destroyed_at, unsigned.evidence
    ).signed_by(OUTSIDER)
    with pytest.raises(VerificationError, match="step 2"):
        verify_destruction_receipt(forged.to_bytes(), NODE.verify_key)
    extra = _threshold_receipt(CUSTODIANS[:3]).signed_by(OUTSIDER)
    with pytest.raises(VerificationError, match=r"neither|expected the node"):
        verify_destruction_receipt(extra.to_bytes(), NODE.verify_key, _custodian_keys())


def test_receipt_without_the_node_signature_fails() -> None:
    receipt = _threshold_receipt(CUSTODIANS[:3])
    body = receipt.to_dict()
    body["signatures"] = []
    with pytest.raises(VerificationError, match="no signature"):
        verify_destruction_receipt(canonical_json(body), NODE.verify_key, _custodian_keys())


def test_custodian_set_must_be_the_trusted_one() -> None:
    receipt = _threshold_receipt(CUSTODIANS[:3])
    with pytest.raises(VerificationError, match="names custodians"):
        verify_destruction_receipt(
            receipt.to_bytes(), NODE.verify_key, [*_custodian_keys()[:4], OUTSIDER.verify_key]
        )
    with pytest.raises(VerificationError, match="needs the custodians"):
        verify_destruction_receipt(receipt.to_bytes(), NODE.verify_key)


def test_repeated_custodian_counts_once() -> None:
    key_id = "th-" + "ab" * 16
    one = sign_share_deletion(CUSTODIANS[0], key_id, 1, WHEN)
    two = sign_share_deletion(CUSTODIANS[1], key_id, 2, WHEN)
    again = sign_share_deletion(CUSTODIANS[0], key_id, 3, WHEN)
    receipt = DestructionReceipt(
        "threshold",
        {"key_id": key_id, "custodians": sorted(c.key_id for c in CUSTODIANS), "threshold": 3},
        1,
        WHEN,
        {"share_deletions": [one, two, again]},
    ).signed_by(NODE)
    with pytest.raises(VerificationError, match="attests twice"):
        verify_destruction_receipt(receipt.to_bytes(), NODE.verify_key, _custodian_keys())


def test_statement_about_another_key_fails() -> None:
    receipt = _threshold_receipt(CUSTODIANS[:3])
    data = receipt.to_dict()
    statements = data["evidence"]["share_deletions"]
    statements[0] = sign_share_deletion(CUSTODIANS[0], "th-" + "cd" * 16, 1, WHEN)
    resigned = DestructionReceipt.from_dict(data | {"signatures": []}).signed_by(NODE)
    with pytest.raises(VerificationError, match="for key"):
        verify_destruction_receipt(resigned.to_bytes(), NODE.verify_key, _custodian_keys())


def _paths(value: JsonValue, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, (*prefix, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))]
    return [prefix]


def _tamper(data: dict, path: tuple[object, ...]) -> None:  # type: ignore[type-arg]
    target = data
    for step in path[:-1]:
        target = target[step]  # type: ignore[index]
    last = path[-1]
    value = target[last]  # type: ignore[index]
    if isinstance(value, bool):
        target[last] = not value  # type: ignore[index]
    elif isinstance(value, int):
        target[last] = value + 1  # type: ignore[index]
    else:
        text = str(value)
        target[last] = text[:-1] + ("A" if text[-1:] != "A" else "B")  # type: ignore[index]


@pytest.mark.parametrize("kind", ["software", "threshold"])
def test_every_tampered_field_fails(kind: str) -> None:
    receipt = _software_receipt() if kind == "software" else _threshold_receipt(CUSTODIANS[:3])
    original = receipt.to_dict()
    keys = _custodian_keys() if kind == "threshold" else []
    for path in _paths(original):
        data = json.loads(canonical_json(original))
        _tamper(data, path)
        with pytest.raises(VerificationError):
            verify_destruction_receipt(canonical_json(data), NODE.verify_key, keys)


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[]", b'{"type":"oblivio.destruction.v1"}', b'{"a":1,"a":2}'],
)
def test_malformed_receipts_fail_at_step_1(data: bytes) -> None:
    with pytest.raises(VerificationError, match="step 1"):
        verify_destruction_receipt(data, NODE.verify_key)
