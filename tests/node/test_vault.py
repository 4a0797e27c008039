"""The artifact vault on SQLite and PostgreSQL: round trips, validation, and tamper evidence."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.envelope import compute_artifact_id
from oblivio.core.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    InvalidEntityUriError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidScopeError,
)
from oblivio.core.hashing import sha256
from oblivio.node.node import Node
from oblivio.node.services import open_services
from oblivio.node.vault import CHUNK_SIZE, ArtifactInput


def test_put_get_round_trip(node: Node) -> None:
    artifact_id = node.vault.put(b"hello world", {"kind": "note", "n": 1}, "user:alice", "team")
    assert node.vault.get(artifact_id) == b"hello world"
    info = node.vault.describe(artifact_id)
    assert info.metadata == {"kind": "note", "n": 1}
    assert (info.entity_uri, info.scope, info.plaintext_size) == ("user:alice", "team", 11)


def test_artifact_id_is_hash_of_ciphertext_and_metadata_digest(node: Node) -> None:
    metadata = {"b": [1, 2], "a": "x"}
    artifact_id = node.vault.put(b"payload", metadata)
    with node.db.transaction(write=False) as tx:
        row = tx.fetchone(
            "SELECT c.data, a.metadata FROM artifacts a JOIN artifact_chunks c "
            "ON c.blob_id = a.blob_id WHERE a.artifact_id = ?",
            (artifact_id,),
        )
    assert row is not None
    assert bytes(row[1]) == canonical_json(metadata)
    assert compute_artifact_id(bytes(row[0]), sha256(canonical_json(metadata))) == artifact_id


def test_entity_defaults_to_local_scope(node: Node) -> None:
    artifact_id = node.vault.put(b"x", {}, entity_uri="user:bob")
    assert node.vault.describe(artifact_id).scope == "local"


def test_same_plaintext_twice_gives_two_artifacts(node: Node) -> None:
    first = node.vault.put(b"same", {})
    second = node.vault.put(b"same", {})
    assert first != second
    assert node.vault.count() == 2


def test_put_many_is_one_batch(node: Node) -> None:
    items = [ArtifactInput(f"item {i}".encode(), {"i": i}) for i in range(50)]
    ids = node.vault.put_many(items)
    assert len(set(ids)) == 50
    assert [node.vault.get(i) for i in ids] == [item.plaintext for item in items]


def test_bad_item_in_batch_stores_nothing(node: Node) -> None:
    items = [ArtifactInput(b"ok", {}), ArtifactInput(b"bad", {}, entity_uri="no-namespace")]
    with pytest.raises(InvalidEntityUriError):
        node.vault.put_many(items)
    assert node.vault.count() == 0


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK_SIZE - 16, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 5]
)
def test_stream_round_trip_across_chunk_boundaries(node: Node, size: int) -> None:
    payload = (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]
    artifact_id = node.vault.put_stream(io.BytesIO(payload), {"size": size})
    sink = io.BytesIO()
    assert node.vault.read_into(artifact_id, sink) == size
    assert sink.getvalue() == payload
    assert node.vault.get(artifact_id) == payload


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ([1, 2], InvalidMetadataError),
        ({"x": float("nan")}, InvalidMetadataError),
        ({"big": "x" * 70_000}, InvalidMetadataError),
        ({"deep": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}, InvalidMetadataError),
        ({1: "non-string key"}, InvalidMetadataError),
    ],
)
def test_bad_metadata_is_refused(node: Node, metadata: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        node.vault.put(b"x", metadata)
    assert node.vault.count() == 0


def test_bad_scope_and_entity_are_refused(node: Node) -> None:
    with pytest.raises(InvalidScopeError):
        node.vault.put(b"x", {}, "user:alice", "everyone")
    with pytest.raises(InvalidEntityUriError):
        node.vault.put_stream(io.BytesIO(b"x"), {}, "user:*")
    assert node.vault.count() == 0


def test_unknown_and_malformed_ids(node: Node) -> None:
    with pytest.raises(ArtifactNotFoundError):
        node.vault.get("0" * 64)
    with pytest.raises(InvalidInputError):
        node.vault.get("not-an-id")


# -- tamper evidence: any altered stored byte is an IntegrityError, never wrong plaintext -------

_COLUMNS = {
    "ciphertext": (
        "artifact_chunks",
        "data",
        "blob_id = (SELECT blob_id FROM artifacts WHERE artifact_id = ?)",
    ),
    "nonce": ("artifacts", "nonce", "artifact_id = ?"),
    "metadata": ("artifacts", "metadata", "artifact_id = ?"),
    "wrapped_key": ("artifacts", "decrypt_key", "artifact_id = ?"),
}


def _read(node: Node, column: str, artifact_id: str) -> bytes:
    table, name, where = _COLUMNS[column]
    with node.db.transaction(write=False) as tx:
        row = tx.fetchone(f"SELECT {name} FROM {table} WHERE {where}", (artifact_id,))  # noqa: S608
    assert row is not None
    return bytes(row[0])


def _write(node: Node, column: str, artifact_id: str, value: bytes) -> None:
    table, name, where = _COLUMNS[column]
    with node.db.transaction() as tx:
        tx.execute(f"UPDATE {table} SET {name} = ? WHERE {where}", (value, artifact_id))  # noqa: S608


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_flipping_any_stored_byte_is_an_integrity_error(node: Node, data: st.DataObject) -> None:
    payload = data.draw(st.binary(min_size=0, max_size=200), label="payload")
    artifact_id = node.vault.put(payload, {"label": "tamper"})
    column = data.draw(st.sampled_from(sorted(_COLUMNS)), label="column")
    original = _read(node, column, artifact_id)
    index = data.draw(st.integers(0, len(original) - 1), label="index")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(original)
    flipped[index] ^= 1 << bit
    _write(node, column, artifact_id, bytes(flipped))
    with pytest.raises(IntegrityError):
        node.vault.get(artifact_id)
    with pytest.raises(IntegrityError):
        node.vault.read_into(artifact_id, io.BytesIO())
    _write(node, column, artifact_id, original)
    assert node.vault.get(artifact_id) == payload


def test_swapped_wrapped_keys_do_not_unwrap(node: Node) -> None:
    first = node.vault.put(b"first", {})
    second = node.vault.put(b"second", {})
    first_key = _read(node, "wrapped_key", first)
    _write(node, "wrapped_key", second, first_key)
    with pytest.raises(IntegrityError):
        node.vault.get(second)
    assert node.vault.get(first) == b"first"


def test_missing_chunk_is_an_integrity_error(node: Node) -> None:
    artifact_id = node.vault.put_stream(io.BytesIO(b"x" * (CHUNK_SIZE + 10)), {})
    with node.db.transaction() as tx:
        tx.execute(
            "DELETE FROM artifact_chunks WHERE seq = 1 AND blob_id = "
            "(SELECT blob_id FROM artifacts WHERE artifact_id = ?)",
            (artifact_id,),
        )
    with pytest.raises(IntegrityError):
        node.vault.get(artifact_id)
    with pytest.raises(IntegrityError):
        node.vault.read_into(artifact_id, io.BytesIO())


def test_altered_stream_writes_no_plaintext(node: Node) -> None:
    artifact_id = node.vault.put_stream(io.BytesIO(b"secret" * 400_000), {})
    with node.db.transaction() as tx:
        tx.execute(
            "UPDATE artifact_chunks SET data = ? WHERE seq = 1 AND blob_id = "
            "(SELECT blob_id FROM artifacts WHERE artifact_id = ?)",
            (b"\x00" * 16, artifact_id),
        )
    sink = io.BytesIO()
    with pytest.raises(IntegrityError):
        node.vault.read_into(artifact_id, sink)
    assert sink.getvalue() == b""


# -- reading many: one transaction and one pass down the key tree per batch -----------------


def test_get_many_reads_what_get_reads(node: Node) -> None:
    # Enough artifacts to span several level-1 nodes of the key tree and two read batches.
    items = [ArtifactInput(f"value {i}".encode() * (i % 3 + 1), {"i": i}) for i in range(620)]
    ids = node.vault.put_many(items)
    streamed = node.vault.put_stream(io.BytesIO(b"s" * (CHUNK_SIZE + 3)), {})
    wanted = [*ids[::-1], streamed, ids[0]]
    read = node.vault.get_many(wanted)
    assert set(read) == set(wanted)
    assert all(read[i] == node.vault.get(i) for i in wanted)
    assert node.vault.get_many([]) == {}


def test_get_many_leaves_out_suppressed_and_forgotten_artifacts(node: Node) -> None:
    services = open_services(node)
    kept, pending, forgotten = node.vault.put_many(
        [ArtifactInput(b"kept", {}), ArtifactInput(b"pending", {}), ArtifactInput(b"gone", {})]
    )
    services.forgetting.forget(artifact_id=forgotten, level=1)
    services.forgetting.commit_due()
    services.forgetting.forget(artifact_id=pending, level=1)  # suppressed until the epoch
    assert node.vault.get_many([kept, pending, forgotten]) == {kept: b"kept"}


def test_get_many_refuses_unknown_ids_and_altered_bytes(node: Node) -> None:
    first, second = node.vault.put_many([ArtifactInput(b"first", {}), ArtifactInput(b"2", {})])
    with pytest.raises(ArtifactNotFoundError):
        node.vault.get_many([first, "0" * 64])
    with pytest.raises(InvalidInputError):
        node.vault.get_many(["not-an-id"])
    for column in sorted(_COLUMNS):
        original = _read(node, column, second)
        _write(node, column, second, bytes([original[0] ^ 1]) + original[1:])
        with pytest.raises(IntegrityError):
            node.vault.get_many([first, second])
        _write(node, column, second, original)
    with node.db.transaction() as tx:
        tx.execute("UPDATE key_tree_nodes SET children = ? WHERE tree_level = 1", (b"\x00" * 8,))
    with pytest.raises(IntegrityError):
        node.vault.get_many([first, second])
