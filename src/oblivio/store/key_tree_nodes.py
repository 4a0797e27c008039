"""The key tree's persistence in SQL (DESIGN.md §5; schema: migration 3 ``key_tree``).

key_tree_heads        one row per tree: fan-out, height, generation, root key reference, standby
                      root key reference (migration 10)
key_tree_nodes        nodes: (tree, level, idx) → version, their children's keys sealed under
                      their own (the root's under the backend's root key)
artifacts             the leaves, in their artifact's row (migration 12): per capability its
                      slot in the tree and the capability key wrapped under its leaf key
                      (decrypt_slot/decrypt_key, prove_…, recover_…; docs/adr/0014)
key_tree_journal      forget batches: intent → destroyed (with the standby each one's
                      destruction makes, migration 15)
destruction_receipts  signed receipts (oblivio.destruction.v1) by hash
key_store_binding     the key store this database belongs to, and the generation (migration 15)
key_root_plans        root keys named before the backend makes them: planned → adopted or
                      abandoned (migration 15; docs/adr/0016)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

from oblivio.core.errors import IntegrityError
from oblivio.core.identifiers import CAPABILITIES, ArtifactId, Capability
from oblivio.core.receipts import DestructionReceipt
from oblivio.keys.backend import KeyStoreBinding, RootKeyPurpose
from oblivio.keys.key_tree import (
    JournalEntry,
    JournalState,
    RootPlan,
    RootPlanState,
    TreeHead,
    TreeLeaf,
    TreeNode,
    tree_of,
)
from oblivio.store.database import Database, Transaction

# Any constant works: it only has to be the same for every oblivio process on a database.
_PG_KEY_TREE_LOCK = 0x0B11_7733
# Positions or ranges per statement: keeps the parameter count well inside both databases' limits.
_CHUNK = 200


_LEAF_COLUMNS: dict[Capability, tuple[str, str]] = {
    c: (f"{c}_slot", f"{c}_key") for c in CAPABILITIES
}
"""The columns of an artifact's row holding each capability's leaf: its slot in the tree and
the capability key wrapped under the leaf key (NULL only in rows from before migration 12 whose
leaf was erased in place; a forgotten leaf keeps its now unreadable key, docs/adr/0014)."""


def _encode_leaves(leaves: Sequence[tuple[ArtifactId, Capability]]) -> bytes:
    """A batch's forgotten keys as stored in the journal: artifact id (32) | capability (1)."""
    return b"".join(bytes.fromhex(aid) + bytes([CAPABILITIES.index(c)]) for aid, c in leaves)


def _decode_leaves(data: bytes) -> tuple[tuple[ArtifactId, Capability], ...]:
    return tuple(
        (ArtifactId(data[at : at + 32].hex()), CAPABILITIES[data[at + 32]])
        for at in range(0, len(data), 33)
    )


LEAF_COLUMNS: tuple[str, ...] = tuple(name for c in CAPABILITIES for name in _LEAF_COLUMNS[c])
"""The leaf columns of an artifact's row, in the order ``leaf_values`` gives their values:
decrypt_slot, decrypt_key, prove_slot, prove_key, recover_slot, recover_key."""


def leaf_values(leaves: Sequence[TreeLeaf]) -> tuple[object, ...]:
    """The values of ``LEAF_COLUMNS`` for one artifact's leaves (NULL for a capability it has
    no leaf for), for callers that write the artifact's row with its leaves."""
    by_capability = {leaf.capability: leaf for leaf in leaves}
    values: list[object] = []
    for capability in CAPABILITIES:
        leaf = by_capability.get(capability)
        values += (None, None) if leaf is None else (leaf.slot, leaf.wrapped)
    return tuple(values)


def _by_capability(leaves: Sequence[TreeLeaf]) -> dict[Capability, list[TreeLeaf]]:
    grouped: dict[Capability, list[TreeLeaf]] = {}
    for leaf in leaves:
        grouped.setdefault(leaf.capability, []).append(leaf)
    return grouped


class SqlKeyTreeNodes:
    """The key tree's rows, read and written inside one open transaction."""

    def __init__(self, tx: Transaction, *, write: bool = True) -> None:
        self.tx = tx
        self._write = write

    def head(self, tree: RootKeyPurpose) -> TreeHead | None:
        sql = "SELECT fanout, height, generation, root_ref, next_slot, standby_root "
        sql += "FROM key_tree_heads "
        sql += "WHERE tree = ?"
        if self._write and self.tx.dialect == "postgresql":
            sql += " FOR UPDATE"  # writers of one tree queue here (SQLite: BEGIN IMMEDIATE)
        row = self.tx.fetchone(sql, (tree,))
        if row is None:
            return None
        return TreeHead(tree, int(row[0]), int(row[1]), int(row[2]), row[3], int(row[4]), row[5])

    def save_head(self, head: TreeHead) -> None:
        values = (
            head.fanout,
            head.height,
            head.generation,
            head.root_ref,
            head.next_slot,
            head.standby_root,
            head.tree,
        )
        changed = self.tx.execute(
            "UPDATE key_tree_heads SET fanout = ?, height = ?, generation = ?, root_ref = ?, "
            "next_slot = ?, standby_root = ? WHERE tree = ?",
            values,
        )
        if changed == 0:
            self.tx.execute(
                "INSERT INTO key_tree_heads (fanout, height, generation, root_ref, next_slot, "
                "standby_root, tree) VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def nodes_at(
        self, tree: RootKeyPurpose, positions: Sequence[tuple[int, int]]
    ) -> list[TreeNode]:
        """One statement per ``_CHUNK`` positions: a forget's path (a node per level) is one
        ``UNION ALL`` of per-level lookups, each on the primary key (an ``OR`` across levels
        would scan the tree's rows)."""
        by_level: dict[int, list[int]] = {}
        for level, index in positions:
            by_level.setdefault(level, []).append(index)
        statements: list[list[tuple[int, list[int]]]] = [[]]
        size = 0
        for level, indices in by_level.items():
            for at in range(0, len(indices), _CHUNK):
                chunk = indices[at : at + _CHUNK]
                if size + len(chunk) > _CHUNK:
                    statements.append([])
                    size = 0
                statements[-1].append((level, chunk))
                size += len(chunk)
        found: list[TreeNode] = []
        for statement in filter(None, statements):
            sql = " UNION ALL ".join(
                "SELECT tree_level, idx, version, children FROM key_tree_nodes "  # noqa: S608
                f"WHERE tree = ? AND tree_level = ? AND idx IN ({', '.join('?' * len(ids))})"
                for _, ids in statement
            )
            params: list[object] = []
            for level, ids in statement:
                params += [tree, level, *ids]
            found += [
                TreeNode(int(r[0]), int(r[1]), int(r[2]), bytes(r[3]))
                for r in self.tx.fetchall(sql, params)
            ]
        return found

    def save_nodes(self, tree: RootKeyPurpose, nodes: Sequence[TreeNode]) -> None:
        if not nodes:
            return
        self.tx.executemany(
            "INSERT INTO key_tree_nodes (tree, tree_level, idx, version, children) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tree, tree_level, idx) "
            "DO UPDATE SET version = excluded.version, children = excluded.children",
            [(tree, n.level, n.index, n.version, n.children) for n in nodes],
        )

    def leaf(self, artifact_id: ArtifactId, capability: Capability) -> TreeLeaf | None:
        found = self.find_leaves([(artifact_id, capability)])
        return found[0] if found else None

    def find_leaves(self, keys: Sequence[tuple[ArtifactId, Capability]]) -> list[TreeLeaf]:
        """One statement per ``_CHUNK`` artifacts, whatever capabilities are asked for."""
        wanted: dict[ArtifactId, set[Capability]] = {}
        for aid, capability in keys:
            wanted.setdefault(aid, set()).add(capability)
        capabilities = [c for c in CAPABILITIES if any(c in caps for caps in wanted.values())]
        columns = ", ".join(name for c in capabilities for name in _LEAF_COLUMNS[c])
        ids = list(wanted)
        found: list[TreeLeaf] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            rows = self.tx.fetchall(
                f"SELECT artifact_id, {columns} FROM artifacts "  # noqa: S608
                f"WHERE artifact_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for row in rows:
                aid = ArtifactId(row[0])
                for n, capability in enumerate(capabilities):
                    slot, key = row[1 + 2 * n], row[2 + 2 * n]
                    if capability in wanted[aid] and slot is not None and key is not None:
                        found.append(TreeLeaf(int(slot), aid, capability, bytes(key)))
        return found

    def insert_leaves(self, tree: RootKeyPurpose, leaves: Sequence[TreeLeaf]) -> None:
        for capability, rows in _by_capability(leaves).items():
            slot, key = _LEAF_COLUMNS[capability]
            self.tx.executemany(
                f"UPDATE artifacts SET {slot} = ?, {key} = ? WHERE artifact_id = ?",  # noqa: S608
                [(leaf.slot, leaf.wrapped, leaf.artifact_id) for leaf in rows],
            )

    def journal(self, states: Sequence[JournalState]) -> list[JournalEntry]:
        marks = ", ".join("?" * len(states))
        rows = self.tx.fetchall(
            "SELECT batch_id, tree, state, old_generation, old_root, new_root, leaves, "  # noqa: S608
            "created_at, destroy_after, receipt_hash, next_root, next_generation "
            "FROM key_tree_journal "
            f"WHERE state IN ({marks}) ORDER BY batch_id",
            tuple(states),
        )
        return [
            JournalEntry(
                batch_id=r[0],
                tree=cast(RootKeyPurpose, r[1]),
                state=cast(JournalState, r[2]),
                old_generation=int(r[3]),
                old_root=r[4],
                new_root=r[5],
                leaves=_decode_leaves(bytes(r[6])),
                created_at=r[7],
                destroy_after=r[8],
                receipt_hash=r[9],
                next_root=r[10],
                next_generation=None if r[11] is None else int(r[11]),
            )
            for r in rows
        ]

    def add_journal(self, entry: JournalEntry) -> None:
        self.tx.execute(
            "INSERT INTO key_tree_journal (batch_id, tree, state, old_generation, old_root, "
            "new_root, leaves, created_at, destroy_after, receipt_hash, next_root, "
            "next_generation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.batch_id,
                entry.tree,
                entry.state,
                entry.old_generation,
                entry.old_root,
                entry.new_root,
                _encode_leaves(entry.leaves),
                entry.created_at,
                entry.destroy_after,
                entry.receipt_hash,
                entry.next_root,
                entry.next_generation,
            ),
        )

    def record_destruction(self, entry: JournalEntry, receipt: DestructionReceipt) -> None:
        """The receipt row, and the entry's state and receipt hash: the entry's other columns
        (a batch's forgotten keys: 33 bytes each) are not written again."""
        receipt_hash = receipt.digest().hex()
        self.tx.execute(
            "INSERT INTO destruction_receipts (receipt_hash, batch_id, tree, epoch, receipt, "
            "destroyed_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                receipt_hash,
                entry.batch_id,
                entry.tree,
                receipt.epoch,
                receipt.to_bytes(),
                receipt.destroyed_at,
            ),
        )
        changed = self.tx.execute(
            "UPDATE key_tree_journal SET state = 'destroyed', receipt_hash = ? WHERE batch_id = ?",
            (receipt_hash, entry.batch_id),
        )
        if changed != 1:
            raise IntegrityError()

    def drop_nodes(self, tree: RootKeyPurpose) -> None:
        self.tx.execute("DELETE FROM key_tree_nodes WHERE tree = ?", (tree,))

    def artifacts_with_leaves(self, trees: Sequence[RootKeyPurpose]) -> int:
        slots = [_LEAF_COLUMNS[c][0] for c in CAPABILITIES if tree_of(c) in trees]
        if not slots:
            return 0
        condition = " OR ".join(f"{slot} IS NOT NULL" for slot in slots)
        row = self.tx.fetchone(f"SELECT COUNT(*) FROM artifacts WHERE {condition}")  # noqa: S608
        return int(row[0]) if row else 0

    def binding(self) -> KeyStoreBinding | None:
        row = self.tx.fetchone(
            "SELECT store_id, node, generation FROM key_store_binding WHERE singleton = 1"
        )
        return None if row is None else KeyStoreBinding(row[0], row[1], int(row[2]))

    def save_binding(self, binding: KeyStoreBinding) -> None:
        self.tx.execute(
            "INSERT INTO key_store_binding (singleton, store_id, node, generation) "
            "VALUES (1, ?, ?, ?) ON CONFLICT (singleton) DO UPDATE SET "
            "store_id = excluded.store_id, node = excluded.node, generation = excluded.generation",
            (binding.store_id, binding.node, binding.generation),
        )

    def plan_root(self, plan: RootPlan) -> None:
        self.tx.execute(
            "INSERT INTO key_root_plans (key_ref, tree, generation, state, planned_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (plan.key_ref, plan.tree, plan.generation, plan.state, plan.planned_at),
        )

    def planned_roots(self) -> list[RootPlan]:
        rows = self.tx.fetchall(
            "SELECT key_ref, tree, generation, planned_at FROM key_root_plans "
            "WHERE state = 'planned' ORDER BY generation"
        )
        return [
            RootPlan(r[0], cast(RootKeyPurpose, r[1]), int(r[2]), r[3], "planned") for r in rows
        ]

    def settle_root(self, key_ref: str, state: RootPlanState) -> None:
        self.tx.execute(
            "UPDATE key_root_plans SET state = ? WHERE key_ref = ? AND state = 'planned'",
            (state, key_ref),
        )


class SqlKeyTreeStore:
    """Transactions over the key tree's tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[SqlKeyTreeNodes]:
        """A transaction; on PostgreSQL a write transaction also takes the key-tree lock, so that
        creating and sweeping root keys never interleave between processes (SQLite's BEGIN
        IMMEDIATE does that already)."""
        with self.db.transaction(write=write) as tx:
            if write and tx.dialect == "postgresql":
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_KEY_TREE_LOCK,))
            yield SqlKeyTreeNodes(tx, write=write)


def receipts_for_batch(db: Database, batch_id: str) -> list[bytes]:
    """The stored receipts of one forget batch, oldest first, as served."""
    with db.transaction(write=False) as tx:
        rows = tx.fetchall(
            "SELECT receipt FROM destruction_receipts WHERE batch_id = ? ORDER BY destroyed_at",
            (batch_id,),
        )
    return [bytes(r[0]) for r in rows]


def all_receipts(db: Database) -> list[bytes]:
    """Every stored destruction receipt, oldest first."""
    with db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT receipt FROM destruction_receipts ORDER BY destroyed_at")
    return [bytes(r[0]) for r in rows]
