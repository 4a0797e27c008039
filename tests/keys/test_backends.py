"""The wrapping-key backend contract, for software, threshold and pkcs11 (SoftHSM2) alike."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import IntegrityError, InvalidKeysUriError, KeyBackendError
from oblivio.core.receipts import DestructionReceipt, verify_destruction_receipt
from oblivio.core.shamir import Share
from oblivio.core.signing import SigningKey, VerifyKey
from oblivio.keys.backend import WrappingKeyBackend, check_keys_uri
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.key_file import KeyFile
from oblivio.keys.pkcs11 import parse_pkcs11_uri
from oblivio.keys.software import SoftwareBackend
from oblivio.keys.threshold import (
    BINDING_MAGIC,
    FileCustodian,
    ThresholdBackend,
    parse_threshold_uri,
)
from oblivio.store.database import Database
from oblivio.store.key_tree_nodes import SqlKeyTreeStore
from tests.keys.helpers import add_artifacts, artifact_ids

Opener = Callable[[str, Path | None], WrappingKeyBackend]
NODE_KEY = SigningKey(bytes([9]) * 32)


def test_wrap_unwrap_destroy(keys_uri: str, open_backend: Opener) -> None:
    backend = open_backend(keys_uri, None)
    ref = backend.create_root_key("wrap")
    other = backend.create_root_key("escrow")
    assert backend.has_root_key(ref)
    assert {ref, other} <= backend.live_root_keys()
    key = secrets.token_bytes(32)
    wrapped = backend.wrap(ref, key, b"ctx")
    assert backend.unwrap(ref, wrapped, b"ctx") == key
    assert backend.wrap_many(ref, [(key, b"a"), (key, b"b")])[1] != wrapped
    with pytest.raises(IntegrityError):
        backend.unwrap(ref, wrapped, b"other context")
    with pytest.raises(IntegrityError):
        backend.unwrap(other, wrapped, b"ctx")
    flipped = bytearray(wrapped)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityError):
        backend.unwrap(ref, bytes(flipped), b"ctx")
    evidence = backend.destroy_root_key(ref)
    assert evidence.backend == backend.scheme
    assert evidence.key_ref["key_id"] == ref
    assert not backend.has_root_key(ref)
    assert ref not in backend.live_root_keys()
    with pytest.raises(IntegrityError):
        backend.unwrap(ref, wrapped, b"ctx")
    with pytest.raises(KeyBackendError):
        backend.wrap(ref, key, b"ctx")
    # Destruction is idempotent: a second call proves absence again.
    backend.destroy_root_key(ref)
    assert backend.has_root_key(other)


def test_root_keys_persist_across_reopen(keys_uri: str, open_backend: Opener) -> None:
    backend = open_backend(keys_uri, None)
    ref = backend.create_root_key("wrap")
    wrapped = backend.wrap(ref, b"k" * 32, b"ctx")
    backend.close()
    again = open_backend(keys_uri, None)
    assert again.unwrap(ref, wrapped, b"ctx") == b"k" * 32


def test_rotate_destroys_one_root_and_makes_another(keys_uri: str, open_backend: Opener) -> None:
    backend = open_backend(keys_uri, None)
    old = backend.create_root_key("wrap")
    kept = backend.create_root_key("escrow")
    wrapped = backend.wrap(old, b"k" * 32, b"ctx")
    evidence, new = backend.rotate_root_key(old, "wrap")
    assert evidence.key_ref["key_id"] == old
    assert not backend.has_root_key(old)
    assert {new, kept} <= backend.live_root_keys()
    assert old not in backend.live_root_keys()
    with pytest.raises(IntegrityError):
        backend.unwrap(old, wrapped, b"ctx")
    assert backend.unwrap(new, backend.wrap(new, b"n" * 32, b"ctx"), b"ctx") == b"n" * 32
    # Another process (a second instance) sees the same state.
    backend.close()
    again = open_backend(keys_uri, None)
    assert not again.has_root_key(old)
    assert again.has_root_key(new)


def test_software_rotation_writes_the_new_key_over_the_old_one(tmp_path: Path) -> None:
    """ADR 0008: one write and one fsync; the old key's bytes are gone from the file, whose
    size does not change."""
    backend = SoftwareBackend(tmp_path / "roots", create=True)
    old = backend.create_root_key("wrap")
    backend.create_root_key("escrow")
    secret = backend._root_key(old)
    assert secret is not None
    size = (tmp_path / "roots").stat().st_size
    _, new = backend.rotate_root_key(old, "wrap")
    data = (tmp_path / "roots").read_bytes()
    assert secret not in data
    assert len(data) == size
    assert bytes.fromhex(new[3:]) in data
    backend.close()


def test_unknown_references_are_opaque(keys_uri: str, open_backend: Opener) -> None:
    backend = open_backend(keys_uri, None)
    for ref in ("", "nonsense", "sw-00", "p11-zz", "th-" + "0" * 32, "sw-" + "0" * 32):
        assert not backend.has_root_key(ref)
        with pytest.raises(IntegrityError):
            backend.unwrap(ref, bytes(60), b"ctx")


@pytest.mark.parametrize(
    "uri",
    [
        "hsm:",
        "software://host/x",
        "threshold:?n=2",
        "threshold:?n=2&t=3",
        "threshold:?n=x&t=1",
        "pkcs11:",
        "pkcs11:token=x",
        "pkcs11:token=x;slot=1?pin-value=1",
        "pkcs11:token=x?pin-value=1&bogus=2",
        "pkcs11:token=x?pin-value=1&wrap-mechanism=aes-cbc",
    ],
)
def test_bad_keys_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidKeysUriError):
        check_keys_uri(uri)


def test_uri_parsing(tmp_path: Path) -> None:
    config = parse_threshold_uri("threshold:?n=3&t=2", tmp_path)
    assert (config.directory, config.shares, config.threshold) == (
        tmp_path / "keys" / "custodians",
        3,
        2,
    )
    assert parse_threshold_uri("threshold:/c?n=1&t=1", tmp_path).directory == Path("/c")
    pin_file = tmp_path / "pin"
    pin_file.write_text("9999\n")
    parsed = parse_pkcs11_uri(
        f"pkcs11:token=a%20b;object=n1?module-path=/m.so&pin-source={pin_file}"
    )
    assert (parsed.token_label, parsed.object_prefix, parsed.pin, parsed.module_path) == (
        "a b",
        "n1",
        "9999",
        "/m.so",
    )


# -- threshold: quorum and share deletion statements -------------------------------------------


class OfflineCustodian:
    """A custodian that cannot be reached (its machine is down): it answers nothing."""

    def __init__(self, inner: FileCustodian) -> None:
        self.inner = inner

    @property
    def verify_key(self) -> VerifyKey:
        return self.inner.verify_key

    def store_share(self, reference: bytes, share: Share) -> None:
        raise KeyBackendError("custodian offline")

    def share(self, reference: bytes) -> Share | None:
        raise KeyBackendError("custodian offline")

    def references(self) -> set[bytes]:
        raise KeyBackendError("custodian offline")

    def delete_share(
        self, reference: bytes, key_id: str, share_x: int, now: datetime
    ) -> dict[str, JsonValue]:
        raise KeyBackendError("custodian offline")


def _custodians(tmp_path: Path, n: int) -> list[FileCustodian]:
    return [FileCustodian(tmp_path / f"c{i}", create=True) for i in range(n)]


def test_threshold_needs_t_shares_and_proves_destruction_below_quorum(tmp_path: Path) -> None:
    custodians = _custodians(tmp_path, 5)
    backend = ThresholdBackend(custodians, 3)
    ref = backend.create_root_key("wrap")
    wrapped = backend.wrap(ref, b"k" * 32, b"ctx")
    # Two custodians down: the other three still make the quorum.
    degraded = ThresholdBackend(
        [OfflineCustodian(custodians[0]), OfflineCustodian(custodians[1]), *custodians[2:]], 3
    )
    assert degraded.unwrap(ref, wrapped, b"ctx") == b"k" * 32
    # Three down: below quorum, nothing unwraps.
    below = ThresholdBackend([OfflineCustodian(c) for c in custodians[:3]] + custodians[3:], 3)
    with pytest.raises(IntegrityError):
        below.unwrap(ref, wrapped, b"ctx")
    # n - t + 1 = 3 deletions are needed; with three custodians offline only two can sign.
    with pytest.raises(KeyBackendError, match="expected at least n - t \\+ 1 = 3"):
        below.destroy_root_key(ref)
    # Those two deleted their shares; three reachable custodians now finish it.
    evidence = degraded.destroy_root_key(ref)
    statements = evidence.evidence["share_deletions"]
    assert isinstance(statements, list)
    assert len(statements) == 3
    assert not backend.has_root_key(ref)
    with pytest.raises(IntegrityError):
        backend.unwrap(ref, wrapped, b"ctx")
    node = SigningKey(bytes(range(32)))
    receipt = DestructionReceipt(
        evidence.backend,
        evidence.key_ref,
        7,
        "2026-11-22T10:00:00.000Z",
        evidence.evidence,
    ).signed_by(node)
    verified = verify_destruction_receipt(
        receipt.to_bytes(), node.verify_key, [c.verify_key for c in custodians]
    )
    assert verified.custodians_attesting == 3
    assert verified.destroyed_at == "2026-11-22T10:00:00.000Z"


def test_threshold_custodian_time_is_recorded(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    backend = ThresholdBackend(_custodians(tmp_path, 3), 2, clock=lambda: moment)
    ref = backend.create_root_key("escrow")
    evidence = backend.destroy_root_key(ref)
    statements = evidence.evidence["share_deletions"]
    assert isinstance(statements, list)
    assert {s["deleted_at"] for s in statements} == {"2026-11-22T12:00:00.000Z"}
    assert sorted(s["share"] for s in statements) == [1, 2, 3]


def test_a_destruction_is_recorded_when_no_standby_can_be_made(
    tmp_path: Path, database: Database
) -> None:
    """ADR 0008: with a custodian offline, shares of a new root cannot all be stored, but the
    old root's destruction (n - t + 1 deletions) succeeds: the receipt is recorded without a
    standby, and the next forget makes its root when it can."""
    custodians = _custodians(tmp_path, 5)
    store = SqlKeyTreeStore(database)
    binding = tmp_path / "binding"
    online = KeyTreeCustody(
        ThresholdBackend(custodians, 3, binding_file=KeyFile(binding, BINDING_MAGIC, create=True)),
        store,
        NODE_KEY,
        fanout=4,
    )
    online.bind_new(NODE_KEY.key_id)
    online.initialise()
    ids = artifact_ids(0, 8)
    add_artifacts(database, online, ids)
    online.forget([ids[0]])  # leaves a standby root for each tree
    degraded = KeyTreeCustody(
        ThresholdBackend(
            [OfflineCustodian(custodians[0]), *custodians[1:]],
            3,
            binding_file=KeyFile(binding, BINDING_MAGIC),
        ),
        store,
        NODE_KEY,
        fanout=4,
    )
    receipts = degraded.forget([ids[1]])
    assert len(receipts) == 2
    with database.transaction(write=False) as tx:
        heads = tx.fetchall("SELECT standby_root FROM key_tree_heads")
        states = tx.fetchall("SELECT DISTINCT state FROM key_tree_journal")
    assert heads == [(None,), (None,)]
    assert states == [("destroyed",)]
    for aid in ids:
        try:
            degraded.unwrap_capability_key(aid, "decrypt")
            readable = True
        except IntegrityError:
            readable = False
        assert readable == (aid not in ids[:2])
