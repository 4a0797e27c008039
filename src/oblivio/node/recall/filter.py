"""The recall-time tombstone filter (seed 002 §23.3) and its cache of active tombstones.

Rules, each applied by one function here and named by its test:

- §23.3.1 rule 2 / §23.3.2 rule 2: a fact is dropped when its entity or its ``ref`` target is
  covered by an active tombstone for the fact's scope (``fact_suppressed``);
- §23.3.2 rule 1: traversal never enters a tombstoned node (``traversable``);
- §23.3.1 rule 3 / §23.3.2 rule 3: a card about a tombstoned entity is dropped, a tombstoned
  entry of ``related_entities`` is omitted, and a card whose text names a tombstoned entity
  (keyed alias-token hashes) is dropped (``filter_card``);
- §23.3.2 rule 4: ``derived_from`` entries whose fact is not visible read
  ``{"hash": …, "exists": false}`` (in the pipeline, which knows the visible set).

Active tombstones are cached in process and reloaded at most every ``REFRESH`` (§23.3.3); a
node's own new tombstone, and one it receives, invalidates the cache so that it applies at once.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from oblivio.core.canonical import parse_json
from oblivio.core.identifiers import ScopePattern, scope_pattern_covers
from oblivio.core.tombstones import TombstoneRecord
from oblivio.node.recall.model import ALIAS_TOKEN_PREFIX, word_tokens
from oblivio.store.database import Database, Transaction

REFRESH: Final = timedelta(seconds=60)
"""Seed 002 §23.3.3: active tombstone ids are refreshed at most this often."""


def alias_token_hash(key: bytes, token: str) -> str:
    """The keyed hash (HMAC-SHA-256 under the node's alias key) of one word token."""
    return hmac.new(key, ALIAS_TOKEN_PREFIX + token.encode("utf-8"), hashlib.sha256).hexdigest()


def alias_token_hashes(key: bytes, text: str) -> frozenset[str]:
    """The keyed hashes of every word token of ``text``."""
    return frozenset(alias_token_hash(key, t) for t in word_tokens(text))


@dataclass(frozen=True)
class TombstoneView:
    """The active tombstones at one moment: what the filter needs, and nothing else."""

    ids: frozenset[str] = frozenset()
    patterns: Mapping[str, tuple[ScopePattern, ...]] = field(default_factory=dict)
    """Per tombstoned entity URI, the scope patterns of its active tombstones."""
    aliases: tuple[tuple[ScopePattern, frozenset[str]], ...] = ()
    """Per alias of a tombstoned entity: its tombstone's pattern and its token hashes."""

    def covers(self, entity_uri: str, scope: str) -> bool:
        """Whether an active tombstone covers ``entity_uri`` in fact scope ``scope``."""
        found = self.patterns.get(entity_uri)
        return found is not None and any(scope_pattern_covers(p, scope) for p in found)

    def fact_suppressed(self, entity_uri: str, ref: str | None, scope: str) -> bool:
        """§23.3.1 rule 2 and §23.3.2 rule 2: the fact's entity or its ref target is covered."""
        return self.covers(entity_uri, scope) or (ref is not None and self.covers(ref, scope))

    def traversable(self, entity_uri: str, scope: str) -> bool:
        """§23.3.2 rule 1: traversal may enter ``entity_uri`` over an edge of ``scope``."""
        return not self.covers(entity_uri, scope)

    def names_tombstoned(self, token_hashes: frozenset[str], scope: str) -> bool:
        """§23.3.2 rule 3: the text holds every word of an alias of a tombstoned entity whose
        tombstone covers ``scope``."""
        return any(
            tokens <= token_hashes and scope_pattern_covers(pattern, scope)
            for pattern, tokens in self.aliases
        )

    def filter_card(
        self,
        about_entity: str,
        related: Iterable[str],
        scope: str,
        text_hashes: Callable[[], frozenset[str]],
    ) -> list[str] | None:
        """§23.3.1 rule 3 and §23.3.2 rule 3: None when the card is suppressed, else its
        ``related_entities`` without the tombstoned ones. ``text_hashes`` (the card text's
        token hashes) is called only when an alias could match."""
        if self.covers(about_entity, scope):
            return None
        if self.aliases and self.names_tombstoned(text_hashes(), scope):
            return None
        return [uri for uri in related if not self.covers(uri, scope)]


def load_view(tx: Transaction) -> TombstoneView:
    """Read the active tombstones and their alias-token hashes (no revocation names them)."""
    active = "NOT EXISTS (SELECT 1 FROM tombstone_revocations r WHERE r.tombstone_id = t.id)"
    patterns: dict[str, list[ScopePattern]] = {}
    by_id: dict[str, ScopePattern] = {}
    for (record_json,) in tx.iterate(f"SELECT t.record_json FROM tombstones t WHERE {active}"):  # noqa: S608 - only fixed SQL and placeholders are interpolated
        record = TombstoneRecord.from_dict(parse_json(record_json))
        patterns.setdefault(record.entity_uri, []).append(record.scope)
        by_id[record.id] = record.scope
    aliases: list[tuple[ScopePattern, frozenset[str]]] = []
    for tombstone_id, hashes in tx.iterate(
        "SELECT a.tombstone_id, a.token_hashes FROM tombstone_alias_tokens a "  # noqa: S608 - only fixed SQL and placeholders are interpolated
        f"JOIN tombstones t ON t.id = a.tombstone_id WHERE {active} "
        "ORDER BY a.tombstone_id, a.alias_index"
    ):
        tokens = parse_json(hashes)
        if tombstone_id in by_id and isinstance(tokens, list) and tokens:
            aliases.append((by_id[tombstone_id], frozenset(str(t) for t in tokens)))
    return TombstoneView(
        frozenset(by_id), {u: tuple(p) for u, p in patterns.items()}, tuple(aliases)
    )


class TombstoneCache:
    """The active tombstones, reloaded when older than ``REFRESH`` or after ``invalidate``.

    Thread-safe; ``clock`` is injected so that tests control the refresh.
    """

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock
        self._lock = threading.Lock()
        self._view: TombstoneView | None = None
        self._loaded_at: datetime | None = None
        self._generation = 0

    def invalidate(self) -> None:
        """Reload at the next read: a tombstone was issued, received or revoked here."""
        with self._lock:
            self._view = None
            self._generation += 1

    def view(self, tx: Transaction | None = None) -> TombstoneView:
        """The cached view, reloaded (in ``tx`` when given) if stale or invalidated."""
        now = self._clock()
        with self._lock:
            view, loaded_at, generation = self._view, self._loaded_at, self._generation
        if view is not None and loaded_at is not None and now - loaded_at < REFRESH:
            return view
        if tx is not None:
            view = load_view(tx)
        else:
            with self._db.transaction(write=False) as own:
                view = load_view(own)
        with self._lock:
            # A load that raced an invalidation may predate the new tombstone: not kept.
            if generation == self._generation:
                self._view, self._loaded_at = view, now
        return view
