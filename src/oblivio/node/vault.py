"""The artifact vault: encrypted, content-addressed artifacts with per-artifact keys (DESIGN.md §4).

``put`` encrypts under a fresh ``K_data`` and nonce, wraps the capability keys through the node's
key custody, and stores ciphertext, metadata and wrapped keys in one transaction (large payloads
stream in chunks first and become visible only with that final transaction). ``get`` checks the
content address and the GCM tag before any plaintext leaves the vault; every mismatch is the one
opaque IntegrityError.

A put about an entity first consults the vault's placement rule inside its transaction: an
active tombstone covering the entity and scope makes the new artifact forgotten in that same
transaction, so it is never readable (ADR 0018).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.envelope import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    ArtifactOpener,
    ArtifactSealer,
    compute_artifact_id,
    digests_equal,
    key_commitment,
    open_artifact,
    seal_artifact,
)
from oblivio.core.errors import (
    ArtifactForgottenError,
    ArtifactNotFoundError,
    IntegrityError,
    InvalidMetadataError,
)
from oblivio.core.forgetting import new_artifact_leaf_json
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import (
    ArtifactId,
    Capability,
    format_time,
    parse_artifact_id,
    uuid7_unix_ms,
    validate_entity_uri,
    validate_scope,
)
from oblivio.keys.custody import KeyCustody
from oblivio.keys.key_tree import TreeLeaf
from oblivio.node.ids import new_uuid7, new_uuid7s
from oblivio.store.database import Database, Transaction
from oblivio.store.key_tree_nodes import SqlKeyTreeNodes, leaf_values

CHUNK_SIZE = 1 << 20
"""Ciphertext is stored in chunks of this size (SQLite and PostgreSQL cap a value at 1 GB)."""
CHUNKS_PER_TRANSACTION = 16
_READ_BATCH = 500
"""``get_many`` reads at most this many artifacts per transaction (bound SQL parameters)."""
METADATA_MAX_BYTES = 64 * 1024
METADATA_MAX_DEPTH = 16


@dataclass(frozen=True)
class ArtifactInput:
    """One artifact to store: its payload, metadata and optional entity and scope."""

    plaintext: bytes
    metadata: Mapping[str, JsonValue]
    entity_uri: str | None = None
    scope: str | None = None


@dataclass(frozen=True)
class Placement:
    """A new artifact about an entity: what a tombstone may cover (seed 002 §23.3.1)."""

    artifact_id: ArtifactId
    entity_uri: str
    scope: str


AfterCommit = Callable[[], None]
InsertFollowUp = Callable[[Transaction], AfterCommit]
"""Work for a put's transaction once its artifact rows are in; returns what to run after the
transaction commits."""
PlacementRule = Callable[[Transaction, Sequence[Placement]], InsertFollowUp | None]
"""Runs first thing in a put's transaction, before any row is written, with the new artifacts
that are about an entity; returns the follow-up their rows need, if any. The tombstones' rule
forgets data written about an entity they cover (ADR 0018)."""


@dataclass(frozen=True)
class ArtifactInfo:
    """What the vault knows about a stored artifact without decrypting it."""

    artifact_id: ArtifactId
    metadata: Mapping[str, JsonValue]
    plaintext_size: int
    entity_uri: str | None
    scope: str | None
    created_at: str


@dataclass(frozen=True)
class _Stored:
    blob_id: str
    metadata_bytes: bytes
    nonce: bytes
    plaintext_size: int
    ciphertext_size: int
    chunk_count: int


def _depth(value: JsonValue, limit: int) -> int:
    if limit < 0:
        return 0
    if isinstance(value, dict):
        return 1 + max((_depth(v, limit - 1) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v, limit - 1) for v in value), default=0)
    return 0


def encode_metadata(metadata: object) -> bytes:
    """Validate artifact metadata and return its JCS bytes.

    Metadata is a JSON object of at most 64 KiB canonical and 16 levels deep.
    Raises InvalidMetadataError naming the problem.
    """
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(
            f"metadata: expected a JSON object, got {type(metadata).__name__}"
        )
    value = dict(metadata)
    if _depth(value, METADATA_MAX_DEPTH + 1) > METADATA_MAX_DEPTH:
        raise InvalidMetadataError(f"metadata: nested deeper than {METADATA_MAX_DEPTH} levels")
    try:
        encoded = canonical_json(value)
    except Exception as e:
        raise InvalidMetadataError(f"metadata: {e}") from e
    if len(encoded) > METADATA_MAX_BYTES:
        raise InvalidMetadataError(
            f"metadata: expected at most {METADATA_MAX_BYTES} bytes canonical, got {len(encoded)}"
        )
    return encoded


def _validate_placement(entity_uri: str | None, scope: str | None) -> tuple[str | None, str | None]:
    if entity_uri is not None:
        validate_entity_uri(entity_uri)
        scope = "local" if scope is None else scope
    if scope is not None:
        validate_scope(scope)
    return entity_uri, scope


class ArtifactVault:
    """Stores and reads artifacts; safe to share between threads."""

    def __init__(
        self,
        db: Database,
        custody: KeyCustody,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.db = db
        self.custody = custody
        self._clock = clock
        self._random = random_bytes
        self.placement_rule: PlacementRule | None = None
        """Consulted by every put about an entity; ``open_services`` sets the tombstones' (the
        latest services opened on a node are the ones whose forgetting it uses)."""

    # -- writing -----------------------------------------------------------------------------

    def _fresh_secrets(self, count: int) -> Iterator[tuple[bytes, dict[Capability, bytes], bytes]]:
        """Per artifact: ``K_data``, the capability keys (§4: ``recover`` holds a copy of
        ``K_data``) and a nonce, all from one call to the random source."""
        size = 2 * KEY_SIZE + NONCE_SIZE
        material = self._random(count * size)
        for at in range(0, count * size, size):
            data_key = material[at : at + KEY_SIZE]
            prove_key = material[at + KEY_SIZE : at + 2 * KEY_SIZE]
            nonce = material[at + 2 * KEY_SIZE : at + size]
            yield data_key, {"decrypt": data_key, "prove": prove_key, "recover": data_key}, nonce

    def put(
        self,
        plaintext: bytes,
        metadata: Mapping[str, JsonValue],
        entity_uri: str | None = None,
        scope: str | None = None,
    ) -> ArtifactId:
        """Encrypt and store one in-memory payload; return its artifact id.

        Raises InvalidMetadataError, InvalidEntityUriError or InvalidScopeError for bad input
        (nothing stored),
        StorageError or KeyBackendError if the infrastructure fails.
        """
        return self.put_many([ArtifactInput(plaintext, metadata, entity_uri, scope)])[0]

    def put_many(
        self,
        items: Sequence[ArtifactInput],
        within: Callable[[Transaction, list[ArtifactId]], None] | None = None,
    ) -> list[ArtifactId]:
        """Store a batch of in-memory payloads in one transaction: all or none of them.
        ``within`` runs in that transaction with the new ids (records that point at them)."""
        created_at = format_time(self._clock())
        artifact_rows: list[tuple[object, ...]] = []
        chunk_rows: list[tuple[object, ...]] = []
        to_wrap: list[tuple[ArtifactId, Mapping[Capability, bytes]]] = []
        ids: list[ArtifactId] = []
        # Time-ordered blob ids append chunks in key order instead of scattering them.
        blob_ids = new_uuid7s(len(items))
        for item, (data_key, keys, nonce), blob_id in zip(
            items, self._fresh_secrets(len(items)), blob_ids, strict=True
        ):
            metadata_bytes = encode_metadata(item.metadata)
            entity_uri, scope = _validate_placement(item.entity_uri, item.scope)
            metadata_digest = sha256(metadata_bytes)
            ciphertext = seal_artifact(data_key, nonce, item.plaintext, metadata_digest)
            artifact_id = compute_artifact_id(ciphertext, metadata_digest)
            chunks = [ciphertext[i : i + CHUNK_SIZE] for i in range(0, len(ciphertext), CHUNK_SIZE)]
            chunk_rows.extend((blob_id, seq, chunk) for seq, chunk in enumerate(chunks))
            artifact_rows.append(
                (
                    artifact_id,
                    blob_id,
                    metadata_bytes,
                    nonce,
                    len(item.plaintext),
                    len(ciphertext),
                    len(chunks),
                    entity_uri,
                    scope,
                    created_at,
                    new_artifact_leaf_json(key_commitment(artifact_id, data_key)),
                )
            )
            to_wrap.append((artifact_id, keys))
            ids.append(artifact_id)
        with self.db.transaction() as tx:
            follow_up = self._consult_rule(tx, artifact_rows)
            tx.executemany(
                "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)", chunk_rows
            )
            # The key tree's leaves go in with the artifacts, in the same transaction: each
            # in its artifact's row (ADR 0010).
            leaves = self.custody.wrap_capability_keys(SqlKeyTreeNodes(tx), to_wrap)
            _insert_artifacts(tx, artifact_rows, leaves)
            if within is not None:
                within(tx, ids)
            after_commit = None if follow_up is None else follow_up(tx)
        if after_commit is not None:
            after_commit()
        return ids

    def _consult_rule(
        self, tx: Transaction, artifact_rows: Sequence[tuple[object, ...]]
    ) -> InsertFollowUp | None:
        """Run the placement rule on the rows a put is about to insert (id first, entity URI
        and scope eighth and ninth, as ``_INSERT_ARTIFACT``)."""
        placed = [
            Placement(ArtifactId(str(row[0])), str(row[7]), str(row[8]))
            for row in artifact_rows
            if row[7] is not None and row[8] is not None
        ]
        if not placed or self.placement_rule is None:
            return None
        return self.placement_rule(tx, placed)

    def put_stream(
        self,
        source: BinaryIO,
        metadata: Mapping[str, JsonValue],
        entity_uri: str | None = None,
        scope: str | None = None,
    ) -> ArtifactId:
        """Encrypt and store a payload read from ``source`` in chunks, never whole in memory.

        Chunks are written ahead under a fresh blob id; the artifact exists only once the final
        transaction records it with its keys. A crash before that leaves unreferenced chunks,
        which ``sweep_orphan_chunks`` removes.
        """
        metadata_bytes = encode_metadata(metadata)
        entity_uri, scope = _validate_placement(entity_uri, scope)
        metadata_digest = sha256(metadata_bytes)
        [(data_key, keys, nonce)] = self._fresh_secrets(1)
        sealer = ArtifactSealer(data_key, nonce, metadata_digest)
        blob_id = new_uuid7()
        pending = bytearray()
        batch: list[tuple[object, ...]] = []
        seq = 0
        plaintext_size = ciphertext_size = 0

        def flush_batch() -> None:
            if batch:
                with self.db.transaction() as tx:
                    tx.executemany(
                        "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)", batch
                    )
                batch.clear()

        while block := source.read(CHUNK_SIZE):
            plaintext_size += len(block)
            pending += sealer.update(block)
            while len(pending) >= CHUNK_SIZE:
                batch.append((blob_id, seq, bytes(pending[:CHUNK_SIZE])))
                del pending[:CHUNK_SIZE]
                seq += 1
                ciphertext_size += CHUNK_SIZE
                if len(batch) >= CHUNKS_PER_TRANSACTION:
                    flush_batch()
        tail, artifact_id = sealer.finish()
        pending += tail
        while pending:
            piece = bytes(pending[:CHUNK_SIZE])
            del pending[:CHUNK_SIZE]
            batch.append((blob_id, seq, piece))
            seq += 1
            ciphertext_size += len(piece)
        row = (
            artifact_id,
            blob_id,
            metadata_bytes,
            nonce,
            plaintext_size,
            ciphertext_size,
            seq,
            entity_uri,
            scope,
            format_time(self._clock()),
            new_artifact_leaf_json(key_commitment(artifact_id, data_key)),
        )
        with self.db.transaction() as tx:
            follow_up = self._consult_rule(tx, [row])
            tx.executemany(
                "INSERT INTO artifact_chunks (blob_id, seq, data) VALUES (?, ?, ?)", batch
            )
            leaves = self.custody.wrap_capability_keys(SqlKeyTreeNodes(tx), [(artifact_id, keys)])
            _insert_artifacts(tx, [row], leaves)
            after_commit = None if follow_up is None else follow_up(tx)
        if after_commit is not None:
            after_commit()
        return artifact_id

    def sweep_orphan_chunks(self, older_than: datetime) -> int:
        """Delete chunks that no artifact references and whose upload began before ``older_than``
        (a crashed ``put_stream``). Returns the number of chunks removed."""
        cutoff_ms = int(older_than.timestamp() * 1000)
        with self.db.transaction() as tx:
            orphans = tx.fetchall(
                "SELECT DISTINCT c.blob_id FROM artifact_chunks c "
                "LEFT JOIN artifacts a ON a.blob_id = c.blob_id WHERE a.artifact_id IS NULL"
            )
            removed = 0
            for (blob_id,) in orphans:
                # Only streamed uploads can leave orphans behind: an in-memory put commits its
                # chunks with its row (blob ids are UUIDv7; older in-memory puts used the id).
                if "-" in blob_id and uuid7_unix_ms(blob_id) < cutoff_ms:
                    removed += tx.execute(
                        "DELETE FROM artifact_chunks WHERE blob_id = ?", (blob_id,)
                    )
            return removed

    # -- reading -----------------------------------------------------------------------------

    def _load(self, artifact_id: str) -> tuple[ArtifactId, _Stored]:
        aid = parse_artifact_id(artifact_id)
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT blob_id, metadata, nonce, plaintext_size, ciphertext_size, chunk_count "
                "FROM artifacts WHERE artifact_id = ?",
                (aid,),
            )
            if row is not None:
                _check_readable(tx, aid)
        if row is None:
            raise ArtifactNotFoundError(f"artifact {aid} is not stored on this node")
        return aid, _Stored(row[0], bytes(row[1]), bytes(row[2]), row[3], row[4], row[5])

    def _data_key(self, aid: ArtifactId) -> bytes:
        return self.custody.unwrap_capability_key(aid, "decrypt")

    def _chunks(self, stored: _Stored) -> Iterator[bytes]:
        for seq in range(stored.chunk_count):
            with self.db.transaction(write=False) as tx:
                row = tx.fetchone(
                    "SELECT data FROM artifact_chunks WHERE blob_id = ? AND seq = ?",
                    (stored.blob_id, seq),
                )
            if row is None:
                raise IntegrityError()
            yield bytes(row[0])

    def describe(self, artifact_id: str) -> ArtifactInfo:
        """Metadata and placement of an artifact, not decrypted. Raises ArtifactNotFoundError."""
        aid = parse_artifact_id(artifact_id)
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone(
                "SELECT metadata, plaintext_size, entity_uri, scope, created_at "
                "FROM artifacts WHERE artifact_id = ?",
                (aid,),
            )
        if row is None:
            raise ArtifactNotFoundError(f"artifact {aid} is not stored on this node")
        return ArtifactInfo(aid, parse_json(bytes(row[0])), row[1], row[2], row[3], row[4])

    def get(self, artifact_id: str) -> bytes:
        """Return the plaintext of a stored artifact, held in memory.

        Raises ArtifactNotFoundError for an unknown id and IntegrityError if any stored byte
        (ciphertext, nonce, metadata, wrapped key) was altered.
        """
        aid, stored = self._load(artifact_id)
        ciphertext = b"".join(self._chunks(stored))
        return _open_stored(aid, stored, ciphertext, self._data_key(aid))

    def get_many(self, artifact_ids: Sequence[str]) -> dict[ArtifactId, bytes]:
        """The plaintexts of several artifacts (each small enough for ``get``), read together:
        per 500 artifacts one read transaction holds their rows, states, chunks and key-tree
        leaves, and one pass down each key tree unwraps all their keys (every node on their
        paths opened once, its keys held only for this call). Nothing is kept between calls.

        An artifact whose ``decrypt`` capability is revoked, suppressed or forgotten is left
        out (``get`` raises ArtifactForgottenError for it). Raises ArtifactNotFoundError for an
        unknown id and IntegrityError as ``get`` does. If the batch's keys do not unwrap (a
        forget committed meanwhile), its artifacts are read one by one, as ``get`` reads them.
        """
        wanted = sorted({parse_artifact_id(a) for a in artifact_ids})
        found: dict[ArtifactId, bytes] = {}
        for at in range(0, len(wanted), _READ_BATCH):
            chunk = wanted[at : at + _READ_BATCH]
            try:
                found |= self._read_batch(chunk)
            except IntegrityError:
                for aid in chunk:
                    with contextlib.suppress(ArtifactForgottenError):
                        found[aid] = self.get(aid)
        return found

    def _read_batch(self, ids: Sequence[ArtifactId]) -> dict[ArtifactId, bytes]:
        marks = ", ".join("?" for _ in ids)
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT a.artifact_id, a.blob_id, a.metadata, a.nonce, a.plaintext_size, "  # noqa: S608 - only placeholders are interpolated
                "a.ciphertext_size, a.chunk_count, s.capabilities FROM artifacts a "
                "LEFT JOIN artifact_states s ON s.artifact_id = a.artifact_id "
                f"WHERE a.artifact_id IN ({marks})",
                list(ids),
            )
            if len(rows) != len(ids):
                missing = sorted(set(ids) - {r[0] for r in rows})[0]
                raise ArtifactNotFoundError(f"artifact {missing} is not stored on this node")
            stored = {
                ArtifactId(r[0]): _Stored(r[1], bytes(r[2]), bytes(r[3]), r[4], r[5], r[6])
                for r in rows
                if r[7] is None or "decrypt" not in parse_json(r[7])
            }
            if not stored:
                return {}
            blobs = sorted({s.blob_id for s in stored.values()})
            chunks: dict[str, list[bytes]] = {}
            for blob_id, _, data in tx.fetchall(
                "SELECT blob_id, seq, data FROM artifact_chunks "  # noqa: S608 - only placeholders are interpolated
                f"WHERE blob_id IN ({', '.join('?' for _ in blobs)}) ORDER BY blob_id, seq",
                blobs,
            ):
                chunks.setdefault(blob_id, []).append(bytes(data))
            nodes = SqlKeyTreeNodes(tx, write=False)
            leaves = nodes.find_leaves([(aid, "decrypt") for aid in stored])
            if {leaf.artifact_id for leaf in leaves} != set(stored):
                raise IntegrityError()
            keys = dict(
                zip(
                    (leaf.artifact_id for leaf in leaves),
                    self.custody.unwrap_leaves(nodes, leaves),
                    strict=True,
                )
            )
        return {
            aid: _open_stored(aid, item, b"".join(chunks.get(item.blob_id, [])), keys[aid])
            for aid, item in stored.items()
        }

    def _decrypt_pass(
        self, aid: ArtifactId, stored: _Stored, data_key: bytes, sink: BinaryIO | None
    ) -> None:
        metadata_digest = sha256(stored.metadata_bytes)
        opener = ArtifactOpener(data_key, stored.nonce, metadata_digest)
        id_hash = hashlib.sha256()
        held = b""  # the last TAG_SIZE bytes seen, which may turn out to be the tag
        total = 0
        written = 0
        for chunk in self._chunks(stored):
            id_hash.update(chunk)
            total += len(chunk)
            data = held + chunk
            body, held = data[:-TAG_SIZE], data[-TAG_SIZE:]
            out = opener.update(body)
            written += len(out)
            if sink is not None:
                sink.write(out)
        id_hash.update(metadata_digest)
        if (
            total != stored.ciphertext_size
            or len(held) != TAG_SIZE
            or not digests_equal(id_hash.hexdigest().encode(), aid.encode())
        ):
            raise IntegrityError()
        out = opener.finish(held)
        written += len(out)
        if sink is not None:
            sink.write(out)
        if written != stored.plaintext_size:
            raise IntegrityError()

    def read_into(self, artifact_id: str, sink: BinaryIO) -> int:
        """Write the plaintext of an artifact to ``sink`` in chunks; return its size.

        A first pass authenticates the whole ciphertext without writing anything, so altered
        data raises IntegrityError before any plaintext is written. The second pass checks the
        tag again; if the store changed in between it raises after a partial write, so callers
        writing to a file should write to a temporary name and rename on success.
        """
        aid, stored = self._load(artifact_id)
        data_key = self._data_key(aid)
        self._decrypt_pass(aid, stored, data_key, None)
        self._decrypt_pass(aid, stored, data_key, sink)
        return stored.plaintext_size

    def count(self) -> int:
        """How many artifacts the vault holds."""
        with self.db.transaction(write=False) as tx:
            row = tx.fetchone("SELECT COUNT(*) FROM artifacts")
        return int(row[0]) if row else 0


def _open_stored(aid: ArtifactId, stored: _Stored, ciphertext: bytes, data_key: bytes) -> bytes:
    """Check the content address, then decrypt and check the tag and the size: every
    mismatch is the one opaque IntegrityError."""
    metadata_digest = sha256(stored.metadata_bytes)
    if len(ciphertext) != stored.ciphertext_size or not digests_equal(
        compute_artifact_id(ciphertext, metadata_digest).encode(), aid.encode()
    ):
        raise IntegrityError()
    plaintext = open_artifact(data_key, stored.nonce, ciphertext, metadata_digest)
    if len(plaintext) != stored.plaintext_size:
        raise IntegrityError()
    return plaintext


def _check_readable(tx: Transaction, artifact_id: ArtifactId) -> None:
    """Raise ArtifactForgottenError if the decrypt capability was revoked, is suppressed by a
    pending forget or a hold, or was forgotten.

    A suppressed artifact answers exactly as a forgotten one: whether its forget waits for an
    epoch, a destruction window or a legal hold, and whether a tombstone asked for it, is not
    the reader's to know (seed 002 §23.6.2, ADR 0017).
    """
    row = tx.fetchone(
        "SELECT status, level, capabilities, request_id FROM artifact_states WHERE artifact_id = ?",
        (artifact_id,),
    )
    if row is None:
        return
    status, level, capabilities, request_id = row
    if "decrypt" not in parse_json(capabilities):
        return
    if status == "revoked":
        raise ArtifactForgottenError(
            f"artifact {artifact_id} is revoked (level 0, forget request {request_id})"
        )
    raise ArtifactForgottenError(
        f"artifact {artifact_id} was forgotten at level {level} (forget request {request_id})"
    )


# The last six columns are LEAF_COLUMNS, in their order (store/key_tree_nodes.py).
_INSERT_ARTIFACT = (
    "INSERT INTO artifacts (artifact_id, blob_id, metadata, nonce, plaintext_size, "
    "ciphertext_size, chunk_count, entity_uri, scope, created_at, leaf_record, leaf_pending, "
    "decrypt_slot, decrypt_key, prove_slot, prove_key, recover_slot, recover_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
)


def _insert_artifacts(
    tx: Transaction, artifact_rows: list[tuple[object, ...]], leaves: Sequence[TreeLeaf]
) -> None:
    """Insert artifact rows (their id first) with their key-tree leaves."""
    by_artifact: dict[str, list[TreeLeaf]] = {}
    for leaf in leaves:
        by_artifact.setdefault(leaf.artifact_id, []).append(leaf)
    tx.executemany(
        _INSERT_ARTIFACT,
        [row + leaf_values(by_artifact.get(str(row[0]), [])) for row in artifact_rows],
    )
