"""The key tree (DESIGN.md §5): scalable cryptographic erasure with one root key in the backend.

Leaves are capability keys; every inner node of fan-out ``b`` has a 256-bit key that wraps its
children's keys, and the root key lives only in the wrapping-key backend (Reardon, Ritzdorf,
Basin and Čapkun, "Secure Data Deletion from Persistent Media", CCS 2013). Positions::

    level 0            leaves, slot s = 0, 1, 2, …   (slots are never reused)
    level l (1 … h-1)  node index s // b**l, key held by its parent
    level h            the root: a key of the backend, version = the tree's generation

A node's children's keys are sealed together, in one AEAD operation under the node's key, bound
to the node's position, its key's version and the offsets of the children it lists
(docs/adr/0008; ``TreeNode`` has the layout)::

    context = "oblivio/key-tree/node/v1" | tree | level (1) | index (8) | version (8) | offsets

A capability key is wrapped under its leaf key with ``"oblivio/key-tree/v1" | tree | slot (8) |
artifact id (32) | capability``.

Forgetting a set of leaves (one batch, one epoch) drops their keys, gives every node on their
paths a new key, re-seals those nodes' remaining children under it, and moves the tree to a new
root key in the backend, destroying the old one: about ``b · depth`` keys re-sealed per forget
in ``2 · depth`` AEAD operations, shared by a batch. Once the old root is destroyed, no copy of
the old nodes, in any backup, can be opened: the old path keys exist only under it.

Crash safety is a journal in the same database as the tree, written first and read by recovery.
Every root key is named in the database (``RootPlan``, committed) before the backend makes it
(docs/adr/0016)::

    standby    a tree without a standby root names one (committed), makes it, records it
    intent     the re-keyed tree under the standby, the new head, the batch's journal entry
               and the name of the next standby commit in one transaction (the old root is
               still alive)
    destroy    old root destroyed in the backend and confirmed by a failed lookup; the same
               backend step makes the next standby root (software: one write, one fsync)
    commit     the journal entry marked ``destroyed`` with the signed receipt, the standby
               recorded in the head: in the destroy step's own transaction, or in one the
               caller commits next (the node's epoch; docs/adr/0012)

A forgotten leaf's wrapped key stays in its row: its leaf key is in no live node, and every
older node that held it is sealed under a destroyed root (docs/adr/0014). The live tree, not the
row, says whether a leaf is forgotten.

A crash before the intent commits leaves the old state (nothing was acknowledged); after it, the
new state, and ``recover`` finishes the destruction (destroying a root already gone is
harmless; a new receipt is recorded). Recovery destroys only roots this database named and no
tree adopted, and destroyed roots that came back (SoftHSMv2 issue 903); a root it knows nothing
of is kept and reported. So a live leaf's key is never lost, a forgotten one never stays
recoverable, and no key is destroyed to resolve what the node cannot explain.
"""

from __future__ import annotations

import functools
import operator
import secrets
import struct
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple, Protocol

import uuid6

from oblivio.core.canonical import JsonValue
from oblivio.core.envelope import (
    KEY_SIZE,
    NONCE_SIZE,
    unwrap_key,
    wrap_key,
    wrap_keys_each,
)
from oblivio.core.errors import IntegrityError, KeyBackendError
from oblivio.core.identifiers import ArtifactId, Capability, format_time, parse_time
from oblivio.core.receipts import DestructionReceipt
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import (
    DestructionEvidence,
    KeyStoreBinding,
    RootKeyPurpose,
    WrappingKeyBackend,
)

KEY_TREE_CONTEXT: Final = b"oblivio/key-tree/v1"
"""Capability keys under their leaf keys."""
NODE_CONTEXT: Final = b"oblivio/key-tree/node/v1"
"""A node's children's keys sealed under the node's key (docs/adr/0008)."""
DEFAULT_FANOUT: Final = 64
"""At 10^6 keys: single forgets as fast as at 16, batches of 10^3 and 10^4 faster (fewer nodes
to open and re-seal), puts and reads faster (one level less); docs/adr/0013."""
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
    """The state of one tree: shape, root generation and root key, next free slot, and the
    standby root the next forget will use (docs/adr/0008), if any."""

    tree: RootKeyPurpose
    fanout: int
    height: int
    generation: int
    root_ref: str
    next_slot: int
    standby_root: str | None = None


@dataclass(frozen=True)
class TreeNode:
    """A node (level 1 … height; the root is ``(height, 0)``): its key's version and its
    children's keys sealed under its key, as stored::

        children = b""                                        (no children)
                 | count (4) | offsets (4 each, ascending) | seal
        seal     = nonce (12) | AES-256-GCM(node key, child keys (32 each, in offset order),
                   aad = node_context) | tag (16)   (the root node: the backend's wrap of the
                   same bytes under the root key, bound to the same context)

    An offset is the child's index minus the node's index times the fan-out."""

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
    next_root: str | None = None
    next_generation: int | None = None
    """The standby root the batch's destruction makes, planned by its intent (docs/adr/0016)."""


@dataclass(frozen=True)
class RootDestruction:
    """A batch's old root destroyed in the backend, not yet recorded: its journal entry, the
    signed receipt, and the standby root the same backend step made (if any)."""

    entry: JournalEntry
    receipt: DestructionReceipt
    standby: str | None


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

    def journal(self, states: Sequence[JournalState]) -> list[JournalEntry]:
        """Journal entries in the given states, oldest first."""

    def add_journal(self, entry: JournalEntry) -> None:
        """Record a new journal entry."""

    def record_destruction(self, entry: JournalEntry, receipt: DestructionReceipt) -> None:
        """Store a destruction receipt (as served) for a batch and mark its journal entry
        ``destroyed`` with the receipt's hash."""

    def drop_nodes(self, tree: RootKeyPurpose) -> None:
        """Delete every node of a tree (``oblivio restore-backup``, for a tree whose root key
        is gone: its nodes can never be opened again)."""

    def artifacts_with_leaves(self, trees: Sequence[RootKeyPurpose]) -> int:
        """How many artifacts hold a leaf in any of these trees."""

    def binding(self) -> KeyStoreBinding | None:
        """The key store this database belongs to, or None (a new or pre-binding database)."""

    def save_binding(self, binding: KeyStoreBinding) -> None:
        """Insert or replace the binding."""

    def plan_root(self, plan: RootPlan) -> None:
        """Name a root key before the backend makes it (write-ahead; docs/adr/0016)."""

    def planned_roots(self) -> list[RootPlan]:
        """Roots planned and neither adopted nor abandoned yet."""

    def settle_root(self, key_ref: str, state: RootPlanState) -> None:
        """Mark a planned root ``adopted`` (a head names it) or ``abandoned`` (destroyed or
        never made)."""


RootPlanState = Literal["planned", "adopted", "abandoned"]


@dataclass(frozen=True)
class RootPlan:
    """A root key named in the database before the backend makes it."""

    key_ref: str
    tree: RootKeyPurpose
    generation: int
    planned_at: str
    state: RootPlanState = "planned"


class KeyTreeStore(Protocol):
    """Opens transactions over the key tree's persistence."""

    def transaction(self, *, write: bool = True) -> AbstractContextManager[KeyTreeNodes]:
        """A transaction; write transactions serialise key-tree writers between processes."""


_TREE_PREFIXES = {tree: KEY_TREE_CONTEXT + tree.encode() for tree in ("wrap", "escrow")}
_NODE_PREFIXES = {tree: NODE_CONTEXT + tree.encode() for tree in ("wrap", "escrow")}
_POSITION = struct.Struct(">BQQ")
_OFFSET_SIZE: Final = 4


def node_context(tree: str, level: int, index: int, version: int, offsets: bytes) -> bytes:
    """The seal context of the children of node ``(level, index)`` under its key of
    ``version``: the position, the version and the packed offsets of the children it lists."""
    prefix = _NODE_PREFIXES.get(tree) or NODE_CONTEXT + tree.encode()
    return b"".join((prefix, _POSITION.pack(level, index, version), offsets))


_CAPABILITY_BYTES: Final = {c: c.encode("ascii") for c in ("decrypt", "prove", "recover")}


def capability_context(
    tree: str, slot: int, artifact_id: ArtifactId, capability: Capability
) -> bytes:
    """The wrap context of a capability key under its leaf key."""
    return (
        (_TREE_PREFIXES.get(tree) or KEY_TREE_CONTEXT + tree.encode())
        + slot.to_bytes(8, "big")
        + bytes.fromhex(artifact_id)
        + (_CAPABILITY_BYTES.get(capability) or capability.encode("ascii"))
    )


def node_offsets(blob: bytes) -> tuple[bytes, tuple[int, ...]]:
    """The packed and the decoded offsets of the children a stored node lists (ascending, so
    each once); IntegrityError if the bytes are not a node's children as stored."""
    if not blob:
        return b"", ()
    count = int.from_bytes(blob[:_OFFSET_SIZE], "big")
    end = _OFFSET_SIZE * (count + 1)
    if count < 1 or len(blob) <= end:
        raise IntegrityError()
    packed = blob[_OFFSET_SIZE:end]
    offsets = _offsets_struct(count).unpack(packed)
    if not all(map(operator.lt, offsets, offsets[1:])):
        raise IntegrityError()
    return packed, offsets


@functools.lru_cache(maxsize=4096)
def _offsets_struct(count: int) -> struct.Struct:
    """Packed offsets of a node with ``count`` children (big-endian uint32 each)."""
    return struct.Struct(f">{count}I")


class _Children:
    """A node's children's keys in the clear: the offsets it lists, ascending, and their keys
    concatenated in the same order, as the seal holds them. A batch changes a few children of
    each node it touches; the others stay in one buffer and are never split into objects."""

    __slots__ = ("keys", "offsets")

    def __init__(self, offsets: list[int], keys: bytearray) -> None:
        self.offsets = offsets
        self.keys = keys

    def _at(self, offset: int) -> int:
        """The position of ``offset`` in ``offsets``, or -1."""
        at = bisect_left(self.offsets, offset)
        return at if at < len(self.offsets) and self.offsets[at] == offset else -1

    def __contains__(self, offset: int) -> bool:
        return self._at(offset) >= 0

    def get(self, offset: int) -> bytes | None:
        at = self._at(offset)
        return None if at < 0 else bytes(self.keys[at * KEY_SIZE : (at + 1) * KEY_SIZE])

    def __setitem__(self, offset: int, key: bytes) -> None:
        at = bisect_left(self.offsets, offset)
        if at < len(self.offsets) and self.offsets[at] == offset:
            self.keys[at * KEY_SIZE : (at + 1) * KEY_SIZE] = key
        else:
            self.offsets.insert(at, offset)
            self.keys[at * KEY_SIZE : at * KEY_SIZE] = key

    def discard(self, offset: int) -> None:
        at = self._at(offset)
        if at >= 0:
            del self.offsets[at]
            del self.keys[at * KEY_SIZE : (at + 1) * KEY_SIZE]


class _Key(NamedTuple):
    """A node key in the clear while a batch is being computed (None: the backend root); a
    tuple, as a batch makes two per node it touches."""

    version: int
    key: bytes | None


@dataclass
class _Path:
    """Nodes loaded for one operation, top-down: their keys and their children's keys in the
    clear (mutable), and which positions changed and must be sealed and written back."""

    keys: dict[tuple[int, int], _Key] = field(default_factory=dict)
    children: dict[tuple[int, int], _Children] = field(default_factory=dict)
    changed: set[tuple[int, int]] = field(default_factory=set)


class StandbyMissingError(KeyBackendError):
    """A forget found its tree without a standby root (another process used it meanwhile):
    the caller makes one (``KeyTreeCustody.ensure_standbys``) and tries again."""

    def __init__(self, tree: str) -> None:
        super().__init__(f"key tree {tree}: no standby root")


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

    def initialise(self, nodes: KeyTreeNodes, root: str | None = None) -> TreeHead:
        """Return the tree's head, creating the tree if new under ``root``: a root key planned
        (``plan_root``, committed) and made (``make_root``) beforehand. Raises KeyBackendError
        if the tree is new and no root is given."""
        head = nodes.head(self.tree)
        if head is None:
            if root is None:
                raise KeyBackendError(f"key tree {self.tree}: not initialised")
            head = TreeHead(self.tree, self.fanout, 1, 0, root, 0)
            nodes.save_nodes(self.tree, [TreeNode(1, 0, 0, b"")])
            nodes.save_head(head)
            nodes.settle_root(root, "adopted")
        return self._adopt(head)

    def plan_root(self, nodes: KeyTreeNodes) -> RootPlan:
        """Name a new root key of this tree in the caller's transaction, at the database's
        next generation (write-ahead, docs/adr/0016): the backend makes it only once this is
        committed, so recovery can tell a root made and never used from one it knows nothing
        of. Raises KeyBackendError if the database has no key-store binding."""
        binding = nodes.binding()
        if binding is None:
            raise KeyBackendError("key tree: the database has no key-store binding")
        binding = binding.advanced(binding.generation + 1)
        nodes.save_binding(binding)
        plan = RootPlan(
            self.backend.new_root_reference(),
            self.tree,
            binding.generation,
            format_time(self._clock()),
        )
        nodes.plan_root(plan)
        return plan

    def make_root(self, plan: RootPlan) -> str:
        """Make a planned root key in the backend (after the plan committed); idempotent."""
        return self.backend.create_root_key(self.tree, plan.key_ref, generation=plan.generation)

    def needs_standby(self, nodes: KeyTreeNodes) -> bool:
        """Whether the tree has no usable standby root for its next forget."""
        head = nodes.head(self.tree)
        return head is not None and (
            head.standby_root is None or not self.backend.has_root_key(head.standby_root)
        )

    def ensure_standby(self) -> None:
        """Give the tree a standby root if it has no usable one: planned and committed, made
        in the backend, then recorded (three steps, so a crash leaves at most a planned root,
        which recovery destroys). Raises KeyBackendError."""
        with self.store.transaction(write=False) as nodes:
            if not self.needs_standby(nodes):
                return
        with self.store.transaction() as nodes:
            if not self.needs_standby(nodes):
                return
            plan = self.plan_root(nodes)
        self.make_root(plan)
        with self.store.transaction() as nodes:
            self.adopt_standby(nodes, plan)

    def adopt_standby(self, nodes: KeyTreeNodes, plan: RootPlan) -> None:
        """Record a made root as the tree's standby (in the caller's transaction), unless the
        tree got a usable one meanwhile; then the plan stays for recovery to destroy."""
        head = nodes.head(self.tree)
        if head is None:
            return
        if head.standby_root is not None and self.backend.has_root_key(head.standby_root):
            return
        nodes.save_head(replace(head, standby_root=plan.key_ref))
        nodes.settle_root(plan.key_ref, "adopted")

    def _adopt(self, head: TreeHead) -> TreeHead:
        """A tree keeps the fan-out it was made with; the configured one applies to new trees."""
        if head.fanout < MIN_FANOUT:
            raise IntegrityError()
        self.fanout = head.fanout
        return head

    # -- sealing nodes -----------------------------------------------------------------------

    def _open(self, root_ref: str, position: tuple[int, int], key: _Key, blob: bytes) -> _Children:
        """A node's children's keys in the clear, by offset: one AEAD operation (in the backend
        for the root node). IntegrityError if the bytes or their position do not match."""
        packed, offsets = node_offsets(blob)
        if not offsets:
            return _Children([], bytearray())
        seal = blob[_OFFSET_SIZE + len(packed) :]
        context = node_context(self.tree, *position, key.version, packed)
        if key.key is None:
            [plain] = self.backend.unwrap_many(root_ref, [(seal, context)])
        else:
            plain = unwrap_key(key.key, seal, context)
        if len(plain) != KEY_SIZE * len(offsets):
            raise IntegrityError()
        return _Children(list(offsets), bytearray(plain))

    def _seal(
        self,
        root_ref: str,
        position: tuple[int, int],
        key: _Key,
        children: _Children,
        nonce: bytes | None = None,
    ) -> TreeNode:
        """The node as stored: its children's keys sealed under its key in one AEAD operation
        (in the backend for the root node), bound to its position, version and offsets.
        ``nonce``: a fresh one the caller drew with others (one random call for a batch)."""
        offsets = children.offsets
        if not offsets:
            return TreeNode(*position, key.version, b"")
        count = len(offsets)
        packed = _offsets_struct(count).pack(*offsets)
        keys = bytes(children.keys)
        context = node_context(self.tree, *position, key.version, packed)
        if key.key is None:
            [sealed] = self.backend.wrap_many(root_ref, [(keys, context)])
        else:
            sealed = wrap_key(key.key, nonce or self._random(NONCE_SIZE), keys, context)
        return TreeNode(
            *position, key.version, b"".join((count.to_bytes(_OFFSET_SIZE, "big"), packed, sealed))
        )

    def _path(
        self, nodes: KeyTreeNodes, head: TreeHead, slots: Iterable[int], *, create: bool
    ) -> _Path:
        """The nodes above ``slots``, opened top-down from the root: one AEAD operation each.

        With ``create``, missing nodes are made (fresh keys added to their parents, which are
        then marked changed); without, a missing node is an IntegrityError."""
        b = self.fanout
        slots = set(slots)
        levels = []
        for level in range(head.height, 0, -1):
            span = self._span(level)
            levels.append((level, sorted({slot // span for slot in slots})))
        rows = {
            (n.level, n.index): n
            for n in nodes.nodes_at(self.tree, [(lvl, i) for lvl, ids in levels for i in ids])
        }
        root = rows.get((head.height, 0))
        if root is None or root.version != head.generation:
            raise IntegrityError()
        path = _Path()
        for level, indices in levels:
            for index in indices:
                position = (level, index)
                row = rows.get(position)
                if row is not None and level == head.height:
                    key = _Key(head.generation, None)
                else:
                    parent = (level + 1, index // b)
                    clear = path.children[parent].get(index % b)
                    if clear is None:
                        # A node row its parent does not list was tampered with: never
                        # overwrite it.
                        if not create or row is not None:
                            raise IntegrityError()
                        clear = self._random(KEY_SIZE)
                        path.children[parent][index % b] = clear
                        path.changed |= {parent, position}
                        row = TreeNode(level, index, 0, b"")
                    elif row is None:
                        raise IntegrityError()
                    key = _Key(row.version, clear)
                path.keys[position] = key
                path.children[position] = self._open(head.root_ref, position, key, row.children)
        return path

    def _grow(self, nodes: KeyTreeNodes, head: TreeHead) -> TreeHead:
        """Add a level on top: the old root node gets a key of its own, under a new root."""
        level = head.height
        found = nodes.nodes_at(self.tree, [(level, 0)])
        if len(found) != 1 or found[0].version != head.generation:
            raise IntegrityError()
        root = _Key(head.generation, None)
        children = self._open(head.root_ref, (level, 0), root, found[0].children)
        fresh = self._random(KEY_SIZE)
        nodes.save_nodes(
            self.tree,
            [
                self._seal(head.root_ref, (level, 0), _Key(0, fresh), children),
                self._seal(head.root_ref, (level + 1, 0), root, _Children([0], bytearray(fresh))),
            ],
        )
        grown = replace(head, height=head.height + 1)
        nodes.save_head(grown)
        return grown

    # -- adding and reading leaves -----------------------------------------------------------

    def add_leaves(
        self,
        nodes: KeyTreeNodes,
        items: Sequence[tuple[ArtifactId, Capability, bytes]],
        *,
        record: bool = True,
    ) -> list[TreeLeaf]:
        """Wrap capability keys into new leaves of this tree inside the caller's transaction.

        Each capability key is wrapped under a fresh leaf key; the leaf key goes into its
        level-1 node, so forgetting re-seals leaf keys there and never touches leaf rows.
        Without ``record`` the leaves are returned, not recorded: the caller records them in
        the same transaction (with the rows of their artifacts)."""
        if not items:
            return []
        head = self.initialise(nodes)
        end = head.next_slot + len(items)
        while self._span(head.height) < end:
            head = self._grow(nodes, head)
        slots = range(head.next_slot, end)
        path = self._path(nodes, head, slots, create=True)
        b = self.fanout
        leaf_keys = self._random(KEY_SIZE * len(items))
        contexts = [
            capability_context(self.tree, slot, aid, capability)
            for slot, (aid, capability, _) in zip(slots, items, strict=True)
        ]
        wrapped_keys = wrap_keys_each(
            leaf_keys,
            self._random(NONCE_SIZE * len(items)),
            [(key, context) for (_, _, key), context in zip(items, contexts, strict=True)],
        )
        leaves = [
            TreeLeaf(slot, aid, capability, wrapped)
            for slot, (aid, capability, _), wrapped in zip(slots, items, wrapped_keys, strict=True)
        ]
        children = path.children
        for n, slot in enumerate(slots):
            children[(1, slot // b)][slot % b] = leaf_keys[n * KEY_SIZE : (n + 1) * KEY_SIZE]
        path.changed.update((1, index) for index in range(slots[0] // b, slots[-1] // b + 1))
        nodes.save_nodes(
            self.tree,
            [
                self._seal(head.root_ref, position, path.keys[position], path.children[position])
                for position in sorted(path.changed)
            ],
        )
        if record:
            nodes.insert_leaves(self.tree, leaves)
        nodes.save_head(replace(head, next_slot=end))
        return leaves

    def unwrap_leaf(self, nodes: KeyTreeNodes, leaf: TreeLeaf) -> bytes:
        """The capability key of ``leaf`` in the clear; IntegrityError if any seal on its path
        fails (altered bytes, a forgotten key, a destroyed root)."""
        [key] = self.unwrap_leaves(nodes, [leaf])
        return key

    def unwrap_leaves(self, nodes: KeyTreeNodes, leaves: Sequence[TreeLeaf]) -> list[bytes]:
        """The capability keys of ``leaves`` (of this tree) in the clear, in their order: one
        pass down the tree for all of them, each node on their paths read and opened once (the
        root once in the backend). The opened node keys live only for this call. IntegrityError
        if any seal on any path fails."""
        if not leaves:
            return []
        head = nodes.head(self.tree)
        if head is None or not all(0 <= leaf.slot < head.next_slot for leaf in leaves):
            raise IntegrityError()
        head = self._adopt(head)
        path = self._path(nodes, head, [leaf.slot for leaf in leaves], create=False)
        keys: list[bytes] = []
        for leaf in leaves:
            leaf_key = path.children[(1, leaf.slot // self.fanout)].get(leaf.slot % self.fanout)
            if leaf_key is None:
                raise IntegrityError()
            keys.append(
                unwrap_key(
                    leaf_key,
                    leaf.wrapped,
                    capability_context(self.tree, leaf.slot, leaf.artifact_id, leaf.capability),
                )
            )
        return keys

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
        self.ensure_standby()
        with self.store.transaction() as nodes:
            wanted = [key for key in dict.fromkeys(leaves) if tree_of(key[1]) == self.tree]
            entry = self.rekey_forgotten(nodes, nodes.find_leaves(wanted))
        if entry is None or not self.due(entry):
            return None
        return self._destroy(entry)

    def rekey_forgotten(
        self, nodes: KeyTreeNodes, found: Sequence[TreeLeaf]
    ) -> JournalEntry | None:
        """The intent step of a forget batch, in the caller's transaction: drop the leaf keys
        of these leaves (as ``find_leaves`` found them; those of this tree that the live tree
        still holds) from their level-1 nodes, re-key every node above them under a new root
        (the standby root, or one made now) and journal the batch as ``intent``. The old root
        stays alive until ``destroy_root``; None when no leaf was live (nothing changes then).

        A leaf is live when its level-1 node still lists its key: the tree is the authority,
        so a batch whose destruction is not recorded yet (its wrapped keys still in their rows)
        is never forgotten twice."""
        head = self.initialise(nodes)
        found = [leaf for leaf in found if tree_of(leaf.capability) == self.tree]
        if not found:
            return None
        b = self.fanout
        path = self._path(nodes, head, {leaf.slot for leaf in found}, create=False)
        present = [leaf for leaf in found if leaf.slot % b in path.children[(1, leaf.slot // b)]]
        if not present:
            return None
        # The standby root, made and recorded before (``KeyTreeCustody.ensure_standbys``);
        # the batch plans the next one, which its destruction makes.
        new_root = head.standby_root
        if new_root is None:
            raise StandbyMissingError(self.tree)
        next_plan = self.plan_root(nodes)
        self._rekey(nodes, head, path, {leaf.slot for leaf in present}, new_root)
        entry = JournalEntry(
            batch_id=str(uuid6.uuid7()),
            tree=self.tree,
            state="intent",
            old_generation=head.generation,
            old_root=head.root_ref,
            new_root=new_root,
            leaves=tuple((leaf.artifact_id, leaf.capability) for leaf in present),
            created_at=format_time(self._clock()),
            destroy_after=format_time(self._clock() + self.destruction_window),
            next_root=next_plan.key_ref,
            next_generation=next_plan.generation,
        )
        nodes.add_journal(entry)
        return entry

    def due(self, entry: JournalEntry) -> bool:
        """Whether the destruction window of a journalled batch has elapsed."""
        return entry.destroy_after is None or parse_time(entry.destroy_after) <= self._clock()

    def _rekey(
        self,
        nodes: KeyTreeNodes,
        head: TreeHead,
        path: _Path,
        forgotten: set[int],
        new_root: str,
    ) -> None:
        """Drop the leaf keys of ``forgotten`` slots from ``path`` (the nodes above them, as
        opened); give every node on it a new key and re-seal its remaining children under it;
        the root becomes ``new_root``. Each node on the paths is opened and sealed once (two
        AEAD operations) and written as one row."""
        b = self.fanout
        for slot in forgotten:
            path.children[(1, slot // b)].discard(slot % b)
        fresh = self._random(KEY_SIZE * (len(path.keys) - 1))
        new: dict[tuple[int, int], _Key] = {}
        for n, ((level, index), old) in enumerate(path.keys.items()):
            if level == head.height:
                new[(level, index)] = _Key(head.generation + 1, None)
                continue
            key = fresh[(n - 1) * KEY_SIZE : n * KEY_SIZE]
            new[(level, index)] = _Key(old.version + 1, key)
            path.children[(level + 1, index // b)][index % b] = key
        nonces = self._random(NONCE_SIZE * len(path.keys))
        nodes.save_nodes(
            self.tree,
            [
                self._seal(
                    new_root,
                    pos,
                    new[pos],
                    path.children[pos],
                    nonces[n * NONCE_SIZE : (n + 1) * NONCE_SIZE],
                )
                for n, pos in enumerate(path.keys)
            ],
        )
        nodes.save_head(
            replace(head, generation=head.generation + 1, root_ref=new_root, standby_root=None)
        )

    def destroy_root(self, entry: JournalEntry, *, make_standby: bool) -> RootDestruction:
        """Destroy a journalled batch's old root in the backend, confirm it, and sign the
        receipt; nothing is recorded (``record_destruction`` does, in a later transaction).
        With ``make_standby`` the same backend step makes the tree's next root (software: the
        same write and fsync; docs/adr/0008). Raises KeyBackendError if destruction cannot be
        confirmed; repeating it is harmless."""
        evidence, standby = None, None
        if make_standby and entry.next_root is not None:
            try:
                evidence, standby = self.backend.rotate_root_key(
                    entry.old_root,
                    self.tree,
                    entry.next_root,
                    generation=entry.next_generation or 0,
                )
            except KeyBackendError:
                # A standby only saves the next forget a step: a backend that can destroy but
                # not create (a custodian offline) still destroys.
                evidence = None
        if evidence is None:
            evidence = self.backend.destroy_root_key(entry.old_root)
        return RootDestruction(entry, self.sign_receipt(entry, evidence), standby)

    def sign_receipt(
        self, entry: JournalEntry, evidence: DestructionEvidence, *, destroyed_again: bool = False
    ) -> DestructionReceipt:
        """The signed receipt (``oblivio.destruction.v1``) of a batch's old root, from the
        backend's evidence; ``destroyed_again`` marks a root that came back and was destroyed
        anew by recovery."""
        facts: dict[str, JsonValue] = {"forgotten_keys": len(entry.leaves)}
        if destroyed_again:
            facts["destroyed_again"] = True
        return DestructionReceipt(
            backend=evidence.backend,
            key_ref=dict(evidence.key_ref) | {"tree": self.tree},
            epoch=entry.old_generation,
            destroyed_at=format_time(self._clock()),
            evidence=dict(evidence.evidence) | facts,
        ).signed_by(self.signer)

    def record_destruction(self, nodes: KeyTreeNodes, destruction: RootDestruction) -> None:
        """In the caller's transaction: the receipt, the journal entry ``destroyed``, and the
        standby root in the head (destroyed at once if the head has one already)."""
        if destruction.standby is not None:
            head = nodes.head(self.tree)
            if head is not None and head.standby_root is None:
                nodes.save_head(replace(head, standby_root=destruction.standby))
                nodes.settle_root(destruction.standby, "adopted")
            else:
                # Made by this batch's plan and never used: destroying it is on purpose.
                self.backend.destroy_root_key(destruction.standby)
                nodes.settle_root(destruction.standby, "abandoned")
        elif (planned := destruction.entry.next_root) is not None:
            # This destruction made no standby, but an earlier attempt at it may have (a
            # crash before its record): the batch planned that root, so it is ours to destroy.
            head = nodes.head(self.tree)
            if head is None or planned not in (head.root_ref, head.standby_root):
                self.backend.destroy_root_key(planned)
                nodes.settle_root(planned, "abandoned")
        nodes.record_destruction(destruction.entry, destruction.receipt)

    def _destroy(self, entry: JournalEntry) -> DestructionReceipt:
        """Destroy the batch's old root and record it in one transaction (a standby root is
        made unless the tree has one)."""
        with self.store.transaction() as nodes:
            head = nodes.head(self.tree)
            destruction = self.destroy_root(
                entry, make_standby=head is not None and head.standby_root is None
            )
            self.record_destruction(nodes, destruction)
        return destruction.receipt

    # -- recovery ----------------------------------------------------------------------------

    def destroy_due(self) -> list[DestructionReceipt]:
        """Destroy the old roots of committed batches whose destruction window has elapsed."""
        with self.store.transaction(write=False) as nodes:
            due = [e for e in nodes.journal(["intent"]) if e.tree == self.tree and self.due(e)]
        return [self._destroy(entry) for entry in due]

    def pending_roots(self, nodes: KeyTreeNodes) -> set[str]:
        """Roots this tree names: its head's root and standby, the old roots of batches not
        destroyed yet (the destruction window) and the standbys those batches will make."""
        head = nodes.head(self.tree)
        needed = set()
        if head is not None:
            needed.add(head.root_ref)
            if head.standby_root is not None:
                needed.add(head.standby_root)
        for entry in nodes.journal(["intent"]):
            if entry.tree == self.tree:
                needed.add(entry.old_root)
                if entry.next_root is not None:
                    needed.add(entry.next_root)
        return needed
