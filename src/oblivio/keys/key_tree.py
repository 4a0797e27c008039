"""The key tree (DESIGN.md §5): scalable cryptographic erasure with one root key in the backend.

Leaves are capability keys; every inner node of fan-out ``b`` has a 256-bit key that wraps its
children's keys, and the root key lives only in the wrapping-key backend (Reardon, Ritzdorf,
Basin and Čapkun, "Secure Data Deletion from Persistent Media", CCS 2013). Positions::

    level 0            leaves, slot s = 0, 1, 2, …   (slots are never reused)
    level l (1 … h-1)  node index s // b**l, key wrapped under its parent
    level h            the root: a key of the backend, version = the tree's generation

A wrap binds where it belongs and the version of the key that wraps it::

    context = "oblivio/key-tree/v1" | tree | level (1) | index (8) | parent version (8)
              [ | artifact id (32) | capability ]   (leaves)

Forgetting a set of leaves (one batch, one epoch) drops their wrapped keys, gives every node on
their paths a new key, re-wraps those nodes' remaining children, makes a new root key in the
backend and destroys the old one: about ``b · depth`` wraps per forget, shared by a batch. Once
the old root is destroyed, no copy of the old wrapped keys, in any backup, can be unwrapped: the
old path keys exist only under it.

Crash safety is a journal in the same database as the tree, written first and read by recovery::

    intent     new root made in the backend; the re-keyed tree, the new head and the batch's
               journal entry committed in one transaction (the old root is still alive)
    destroy    old root destroyed in the backend and confirmed by a failed lookup
    commit     journal entry marked ``destroyed`` with the signed receipt

A crash before the intent commits leaves the old state (nothing was acknowledged; the unused new
root is destroyed by recovery); after it, the new state, and ``recover`` finishes the
destruction. Recovery also destroys any root the backend still holds that the database does
not account for: one made just before a crash, or a destroyed one that came back (SoftHSMv2
issue 903). So a live leaf's key is never lost and a forgotten one never stays recoverable.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, Protocol

import uuid6

from oblivio.core.envelope import (
    KEY_SIZE,
    NONCE_SIZE,
    TAG_SIZE,
    unwrap_key,
    unwrap_keys,
    wrap_key,
    wrap_keys,
)
from oblivio.core.errors import IntegrityError, KeyBackendError
from oblivio.core.identifiers import ArtifactId, Capability, format_time, parse_time
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import RootKeyPurpose, WrappingKeyBackend

KEY_TREE_CONTEXT: Final = b"oblivio/key-tree/v1"
DEFAULT_FANOUT: Final = 16
"""Cheapest forgets at 10^6 keys (docs/benchmarks/key-tree-forget.md); reads pay one more unwrap
than at 64."""
MIN_FANOUT: Final = 2
TREES: Final[tuple[RootKeyPurpose, ...]] = ("wrap", "escrow")
JournalState = Literal["intent", "destroyed"]
"""``intent``: the re-keyed tree is committed and the old root is to be destroyed (once the
destruction window has passed); ``destroyed``: it was, and the receipt is stored."""


def tree_of(capability: Capability) -> RootKeyPurpose:
    """The tree holding a capability: ``recover`` copies sit under the escrow root (§4)."""
    return "escrow" if capability == "recover" else "wrap"


@dataclass(frozen=True)
class TreeHead:
    """The state of one tree: shape, root generation and root key, next free slot."""

    tree: RootKeyPurpose
    fanout: int
    height: int
    generation: int
    root_ref: str
    next_slot: int


@dataclass(frozen=True)
class TreeNode:
    """A node (level 1 … height; the root is ``(height, 0)``): its key's version and its
    children's keys wrapped under its key, packed (``pack_children``)."""

    level: int
    index: int
    version: int
    children: bytes


@dataclass(frozen=True)
class TreeLeaf:
    """A capability key wrapped under its leaf key; the leaf key sits in its level-1 parent."""

    slot: int
    artifact_id: ArtifactId
    capability: Capability
    wrapped: bytes


@dataclass(frozen=True)
class JournalEntry:
    """One forget batch of one tree, as the journal records it."""

    batch_id: str
    tree: RootKeyPurpose
    state: JournalState
    old_generation: int
    old_root: str
    new_root: str
    leaves: tuple[tuple[ArtifactId, Capability], ...]
    created_at: str
    destroy_after: str | None = None
    receipt_hash: str | None = None


class KeyTreeNodes(Protocol):
    """The key tree's persistence inside one open transaction (implemented by the store)."""

    def head(self, tree: RootKeyPurpose) -> TreeHead | None:
        """The tree's head; in a write transaction it stays locked until commit."""

    def save_head(self, head: TreeHead) -> None:
        """Insert or replace the tree's head."""

    def nodes_at(
        self, tree: RootKeyPurpose, positions: Sequence[tuple[int, int]]
    ) -> list[TreeNode]:
        """The nodes at the given ``(level, index)`` positions that exist."""

    def save_nodes(self, tree: RootKeyPurpose, nodes: Sequence[TreeNode]) -> None:
        """Insert or replace nodes."""

    def leaf(self, artifact_id: ArtifactId, capability: Capability) -> TreeLeaf | None:
        """The leaf holding one capability key of an artifact."""

    def find_leaves(self, keys: Sequence[tuple[ArtifactId, Capability]]) -> list[TreeLeaf]:
        """The leaves holding these capability keys, those that exist."""

    def insert_leaves(self, tree: RootKeyPurpose, leaves: Sequence[TreeLeaf]) -> None:
        """Record new leaves (their artifacts must exist already)."""

    def delete_leaves(self, tree: RootKeyPurpose, slots: Sequence[int]) -> None:
        """Drop leaves: their wrapped keys are gone from the live tree."""

    def journal(self, states: Sequence[JournalState]) -> list[JournalEntry]:
        """Journal entries in the given states, oldest first."""

    def save_journal(self, entry: JournalEntry) -> None:
        """Insert or replace a journal entry, by batch id."""

    def save_receipt(self, entry: JournalEntry, receipt: DestructionReceipt) -> None:
        """Store a destruction receipt (as served) for a batch."""


class KeyTreeStore(Protocol):
    """Opens transactions over the key tree's persistence."""

    def transaction(self, *, write: bool = True) -> AbstractContextManager[KeyTreeNodes]:
        """A transaction; write transactions serialise key-tree writers between processes."""


_POSITION = struct.Struct(">BQQ")
_TREE_PREFIXES = {tree: KEY_TREE_CONTEXT + tree.encode() for tree in ("wrap", "escrow")}


def node_context(tree: str, level: int, index: int, parent_version: int) -> bytes:
    """The wrap context of the key of node ``(level, index)`` (level 0: a leaf key) under its
    parent's key of ``parent_version``."""
    prefix = _TREE_PREFIXES.get(tree) or KEY_TREE_CONTEXT + tree.encode()
    return prefix + _POSITION.pack(level, index, parent_version)


def capability_context(
    tree: str, slot: int, artifact_id: ArtifactId, capability: Capability
) -> bytes:
    """The wrap context of a capability key under its leaf key."""
    return (
        KEY_TREE_CONTEXT
        + tree.encode()
        + struct.pack(">Q", slot)
        + bytes.fromhex(artifact_id)
        + capability.encode("ascii")
    )


WRAPPED_SIZE: Final = NONCE_SIZE + KEY_SIZE + TAG_SIZE
_ENTRY_SIZE: Final = 4 + WRAPPED_SIZE


def pack_children(entries: dict[int, bytes]) -> bytes:
    """A node's children as stored: ``offset (4, big-endian) | wrapped key (60)`` each, by
    offset (the child's index minus the node's index times the fan-out)."""
    return b"".join(o.to_bytes(4, "big") + entries[o] for o in sorted(entries))


def unpack_children(blob: bytes) -> dict[int, bytes]:
    """Inverse of ``pack_children``; IntegrityError if the bytes are not such a list."""
    if len(blob) % _ENTRY_SIZE:
        raise IntegrityError()
    entries = {
        int.from_bytes(blob[at : at + 4], "big"): blob[at + 4 : at + _ENTRY_SIZE]
        for at in range(0, len(blob), _ENTRY_SIZE)
    }
    if len(entries) * _ENTRY_SIZE != len(blob):
        raise IntegrityError()  # an offset listed twice
    return entries


@dataclass
class _Key:
    """A node key in the clear while a batch is being computed (None: the backend root)."""

    version: int
    key: bytes | None


@dataclass
class _Path:
    """Nodes loaded for one operation: keys in the clear, children (mutable), versions, and
    which positions changed and must be written back."""

    keys: dict[tuple[int, int], _Key]
    children: dict[tuple[int, int], dict[int, bytes]]
    versions: dict[tuple[int, int], int]
    changed: set[tuple[int, int]] = field(default_factory=set)


def _clear(key: _Key) -> bytes:
    if key.key is None:
        raise KeyBackendError("key tree: the root key never leaves the backend")
    return key.key


class KeyTree:
    """One tree (``wrap`` or ``escrow``) over a backend; stateless between calls.

    Every method that takes ``nodes`` runs inside the caller's transaction; ``forget_leaves``,
    ``recover`` and ``destroy_due`` open their own, because the backend must act between commits.
    """

    def __init__(
        self,
        tree: RootKeyPurpose,
        backend: WrappingKeyBackend,
        store: KeyTreeStore,
        signer: SigningKey,
        *,
        fanout: int = DEFAULT_FANOUT,
        destruction_window: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if fanout < MIN_FANOUT:
            raise ValueError(f"key tree fan-out: expected at least {MIN_FANOUT}, got {fanout}")
        self.tree = tree
        self.backend = backend
        self.store = store
        self.signer = signer
        self.fanout = fanout
        self.destruction_window = destruction_window
        self._clock = clock
        self._random = random_bytes

    # -- shape -------------------------------------------------------------------------------

    def _span(self, level: int) -> int:
        return int(self.fanout**level)

    def initialise(self, nodes: KeyTreeNodes) -> TreeHead:
        """Return the tree's head, creating the tree (one root key in the backend) if new."""
        head = nodes.head(self.tree)
        if head is None:
            head = TreeHead(
                self.tree, self.fanout, 1, 0, self.backend.create_root_key(self.tree), 0
            )
            nodes.save_nodes(self.tree, [TreeNode(1, 0, 0, b"")])
            nodes.save_head(head)
        return self._adopt(head)

    def _adopt(self, head: TreeHead) -> TreeHead:
        """A tree keeps the fan-out it was made with; the configured one applies to new trees."""
        if head.fanout < MIN_FANOUT:
            raise IntegrityError()
        self.fanout = head.fanout
        return head

    # -- wrapping helpers --------------------------------------------------------------------

    def _wrap(
        self, root_ref: str, parent: _Key, items: Sequence[tuple[bytes, bytes]]
    ) -> list[bytes]:
        if not items:
            return []
        if parent.key is None:
            return self.backend.wrap_many(root_ref, items)
        return wrap_keys(parent.key, self._random(NONCE_SIZE * len(items)), items)

    def _unwrap(
        self, root_ref: str, parent: _Key, items: Sequence[tuple[bytes, bytes]]
    ) -> list[bytes]:
        if not items:
            return []
        if parent.key is None:
            return self.backend.unwrap_many(root_ref, items)
        return unwrap_keys(parent.key, items)

    def _path(
        self, nodes: KeyTreeNodes, head: TreeHead, slots: Iterable[int], *, create: bool
    ) -> _Path:
        """The nodes above ``slots`` with their keys in the clear, top-down from the root.

        With ``create``, missing nodes are made (fresh keys added to their parents, which are
        then marked changed); without, a missing node is an IntegrityError."""
        slots = sorted(set(slots))
        b = self.fanout
        wanted = [
            (level, index)
            for level in range(head.height, 0, -1)
            for index in sorted({slot // self._span(level) for slot in slots})
        ]
        rows = {(n.level, n.index): n for n in nodes.nodes_at(self.tree, wanted)}
        root = rows.get((head.height, 0))
        if root is None or root.version != head.generation:
            raise IntegrityError()
        path = _Path(
            keys={(head.height, 0): _Key(head.generation, None)},
            children={pos: unpack_children(row.children) for pos, row in rows.items()},
            versions={pos: row.version for pos, row in rows.items()},
        )
        for level in range(head.height - 1, 0, -1):
            by_parent: dict[int, list[int]] = {}
            for lvl, index in wanted:
                if lvl == level:
                    by_parent.setdefault(index // b, []).append(index)
            for parent_index, indices in by_parent.items():
                parent_pos = (level + 1, parent_index)
                parent = path.keys[parent_pos]
                siblings = path.children[parent_pos]
                present = [i for i in indices if i - parent_index * b in siblings]
                plain = self._unwrap(
                    head.root_ref,
                    parent,
                    [
                        (
                            siblings[i - parent_index * b],
                            node_context(self.tree, level, i, parent.version),
                        )
                        for i in present
                    ],
                )
                for i, key in zip(present, plain, strict=True):
                    if (level, i) not in path.versions:
                        raise IntegrityError()
                    path.keys[(level, i)] = _Key(path.versions[(level, i)], key)
                missing = [i for i in indices if i - parent_index * b not in siblings]
                # A node row whose parent does not list it was tampered with: never overwrite it.
                if missing and (not create or any((level, i) in path.versions for i in missing)):
                    raise IntegrityError()
                fresh = [self._random(KEY_SIZE) for _ in missing]
                wrapped = self._wrap(
                    head.root_ref,
                    parent,
                    [
                        (key, node_context(self.tree, level, i, parent.version))
                        for i, key in zip(missing, fresh, strict=True)
                    ],
                )
                for i, key, blob in zip(missing, fresh, wrapped, strict=True):
                    siblings[i - parent_index * b] = blob
                    path.keys[(level, i)] = _Key(0, key)
                    path.children[(level, i)] = {}
                    path.versions[(level, i)] = 0
                    path.changed |= {parent_pos, (level, i)}
        return path

    def _save(self, nodes: KeyTreeNodes, path: _Path, positions: Iterable[tuple[int, int]]) -> None:
        nodes.save_nodes(
            self.tree,
            [
                TreeNode(
                    level,
                    index,
                    path.versions[(level, index)],
                    pack_children(path.children[(level, index)]),
                )
                for level, index in sorted(positions)
            ],
        )

    def _grow(self, nodes: KeyTreeNodes, head: TreeHead) -> TreeHead:
        """Add a level on top: the old root node gets a key of its own, under a new root."""
        level = head.height
        found = nodes.nodes_at(self.tree, [(level, 0)])
        if len(found) != 1 or found[0].version != head.generation:
            raise IntegrityError()
        old_root = found[0]
        key = _Key(0, self._random(KEY_SIZE))
        root = _Key(head.generation, None)
        entries = unpack_children(old_root.children)
        offsets = sorted(entries)
        plain = self._unwrap(
            head.root_ref,
            root,
            [(entries[o], node_context(self.tree, level - 1, o, head.generation)) for o in offsets],
        )
        rewrapped = self._wrap(
            head.root_ref,
            key,
            [
                (k, node_context(self.tree, level - 1, o, 0))
                for k, o in zip(plain, offsets, strict=True)
            ],
        )
        top = self._wrap(
            head.root_ref, root, [(_clear(key), node_context(self.tree, level, 0, head.generation))]
        )
        nodes.save_nodes(
            self.tree,
            [
                TreeNode(level, 0, 0, pack_children(dict(zip(offsets, rewrapped, strict=True)))),
                TreeNode(level + 1, 0, head.generation, pack_children({0: top[0]})),
            ],
        )
        grown = replace(head, height=head.height + 1)
        nodes.save_head(grown)
        return grown

    # -- adding and reading leaves -----------------------------------------------------------

    def add_leaves(
        self, nodes: KeyTreeNodes, items: Sequence[tuple[ArtifactId, Capability, bytes]]
    ) -> list[TreeLeaf]:
        """Wrap capability keys into new leaves of this tree inside the caller's transaction.

        Each capability key is wrapped under a fresh leaf key; the leaf key goes into its
        level-1 node, so forgetting re-wraps leaf keys there and never touches leaf rows."""
        if not items:
            return []
        head = self.initialise(nodes)
        end = head.next_slot + len(items)
        while self._span(head.height) < end:
            head = self._grow(nodes, head)
        slots = list(range(head.next_slot, end))
        path = self._path(nodes, head, slots, create=True)
        leaves: list[TreeLeaf] = []
        by_parent: dict[int, list[tuple[int, bytes]]] = {}
        nonces = self._random(NONCE_SIZE * len(items))
        for n, (slot, (aid, capability, key)) in enumerate(zip(slots, items, strict=True)):
            leaf_key = self._random(KEY_SIZE)
            nonce = nonces[n * NONCE_SIZE : (n + 1) * NONCE_SIZE]
            wrapped = wrap_key(
                leaf_key, nonce, key, capability_context(self.tree, slot, aid, capability)
            )
            leaves.append(TreeLeaf(slot, aid, capability, wrapped))
            by_parent.setdefault(slot // self.fanout, []).append((slot, leaf_key))
        for parent_index, group in by_parent.items():
            position = (1, parent_index)
            parent = path.keys[position]
            wrapped_keys = self._wrap(
                head.root_ref,
                parent,
                [(k, node_context(self.tree, 0, slot, parent.version)) for slot, k in group],
            )
            entries = path.children[position]
            for (slot, _), blob in zip(group, wrapped_keys, strict=True):
                entries[slot - parent_index * self.fanout] = blob
            path.changed.add(position)
        self._save(nodes, path, path.changed)
        nodes.insert_leaves(self.tree, leaves)
        nodes.save_head(replace(head, next_slot=end))
        return leaves

    def unwrap_leaf(self, nodes: KeyTreeNodes, leaf: TreeLeaf) -> bytes:
        """The capability key of ``leaf`` in the clear; IntegrityError if any wrap on its path
        fails (altered bytes, a forgotten key, a destroyed root)."""
        head = nodes.head(self.tree)
        if head is None or not 0 <= leaf.slot < head.next_slot:
            raise IntegrityError()
        head = self._adopt(head)
        path = self._path(nodes, head, [leaf.slot], create=False)
        position = (1, leaf.slot // self.fanout)
        entry = path.children[position].get(leaf.slot - position[1] * self.fanout)
        if entry is None:
            raise IntegrityError()
        parent = path.keys[position]
        [leaf_key] = self._unwrap(
            head.root_ref, parent, [(entry, node_context(self.tree, 0, leaf.slot, parent.version))]
        )
        return unwrap_key(
            leaf_key,
            leaf.wrapped,
            capability_context(self.tree, leaf.slot, leaf.artifact_id, leaf.capability),
        )

    # -- forgetting --------------------------------------------------------------------------

    def forget_leaves(
        self, leaves: Sequence[tuple[ArtifactId, Capability]]
    ) -> DestructionReceipt | None:
        """Forget these leaves of this tree as one batch: re-key, rotate, destroy, record.

        Returns the destruction receipt of the old root, or None when nothing was forgotten
        (no such leaf) or the destruction window defers destruction (``destroy_due`` issues
        the receipt later). Raises KeyBackendError if the backend fails: if the re-keyed tree
        was committed the journal holds the batch and ``destroy_due``/``recover`` finish it;
        if not, nothing changed, and ``recover`` destroys the unused new root.
        """
        with self.store.transaction() as nodes:
            head = self.initialise(nodes)
            wanted = [key for key in dict.fromkeys(leaves) if tree_of(key[1]) == self.tree]
            present = nodes.find_leaves(wanted)
            if not present:
                return None
            new_root = self.backend.create_root_key(self.tree)
            self._rekey(nodes, head, {leaf.slot for leaf in present}, new_root)
            destroy_after = self._clock() + self.destruction_window
            entry = JournalEntry(
                batch_id=str(uuid6.uuid7()),
                tree=self.tree,
                state="intent",
                old_generation=head.generation,
                old_root=head.root_ref,
                new_root=new_root,
                leaves=tuple((leaf.artifact_id, leaf.capability) for leaf in present),
                created_at=format_time(self._clock()),
                destroy_after=format_time(destroy_after),
            )
            nodes.save_journal(entry)
        if destroy_after > self._clock():
            return None
        return self._destroy(entry)

    def _rekey(
        self, nodes: KeyTreeNodes, head: TreeHead, forgotten: set[int], new_root: str
    ) -> None:
        """Drop the leaf keys of ``forgotten`` slots; give every node above them a new key and
        re-wrap their remaining children; the root becomes ``new_root``. One row per changed
        node is written: a batch costs one row write per node it touches."""
        b = self.fanout
        path = self._path(nodes, head, forgotten, create=False)
        old = path.keys
        new = {
            position: _Key(key.version + 1, self._random(KEY_SIZE))
            for position, key in old.items()
            if position[0] < head.height
        }
        new[(head.height, 0)] = _Key(head.generation + 1, None)
        for slot in forgotten:
            path.children[(1, slot // b)].pop(slot % b, None)
        prefix = KEY_TREE_CONTEXT + self.tree.encode()
        pack = _POSITION.pack
        for (level, index), new_key in new.items():
            old_key = old[(level, index)]
            entries = path.children[(level, index)]
            child, base = level - 1, index * b
            if level == 1:  # leaf keys: never re-keyed themselves, only re-wrapped
                kept, fresh = list(entries), []
            else:
                fresh = [o for o in entries if (child, base + o) in new]
                kept = [o for o in entries if (child, base + o) not in new]
            plain = self._unwrap(
                head.root_ref,
                old_key,
                [(entries[o], prefix + pack(child, base + o, old_key.version)) for o in kept],
            )
            plain += [_clear(new[(child, base + o)]) for o in fresh]
            offsets = kept + fresh
            wrapped = self._wrap(
                new_root,
                new_key,
                [
                    (k, prefix + pack(child, base + o, new_key.version))
                    for k, o in zip(plain, offsets, strict=True)
                ],
            )
            path.children[(level, index)] = dict(zip(offsets, wrapped, strict=True))
            path.versions[(level, index)] = new_key.version
        self._save(nodes, path, new)
        nodes.delete_leaves(self.tree, sorted(forgotten))
        nodes.save_head(replace(head, generation=head.generation + 1, root_ref=new_root))

    def _destroy(self, entry: JournalEntry) -> DestructionReceipt:
        """Destroy the batch's old root, confirm it, and record the signed receipt (TX 3)."""
        evidence = self.backend.destroy_root_key(entry.old_root)
        receipt = DestructionReceipt(
            backend=evidence.backend,
            key_ref=dict(evidence.key_ref) | {"tree": self.tree},
            epoch=entry.old_generation,
            destroyed_at=format_time(self._clock()),
            evidence=dict(evidence.evidence) | {"forgotten_keys": len(entry.leaves)},
        ).signed_by(self.signer)
        with self.store.transaction() as nodes:
            done = replace(entry, state="destroyed", receipt_hash=receipt.digest().hex())
            nodes.save_receipt(done, receipt)
            nodes.save_journal(done)
        return receipt

    # -- recovery ----------------------------------------------------------------------------

    def destroy_due(self) -> list[DestructionReceipt]:
        """Destroy the old roots of committed batches whose destruction window has elapsed."""
        now = self._clock()
        with self.store.transaction(write=False) as nodes:
            due = [
                e
                for e in nodes.journal(["intent"])
                if e.tree == self.tree
                and (e.destroy_after is None or parse_time(e.destroy_after) <= now)
            ]
        return [self._destroy(entry) for entry in due]

    def pending_roots(self, nodes: KeyTreeNodes) -> set[str]:
        """Roots this tree still needs: its head's, and old roots kept alive by the destruction
        window until their batch's destruction."""
        head = nodes.head(self.tree)
        needed = {head.root_ref} if head is not None else set()
        for entry in nodes.journal(["intent"]):
            if entry.tree == self.tree:
                needed.add(entry.old_root)
        return needed
