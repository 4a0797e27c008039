"""The memory store as a node service (DESIGN.md §11): writes, recall, and derived-data erasure.

Every recall path (``recall``, ``instruction``, ``events_after`` for subscriptions) runs the
same pipeline, in this order:

1. candidates: the entity's facts and cards, k-hop traversal over ``ref`` edges, full-text
   matches for ``q`` (SQLite FTS5 / PostgreSQL full-text search);
2. scope filter (the scopes the caller asked for, within those its key may read);
3. tombstone filter (``filter.py``, seed 002 §23.3.1-§23.3.2);
4. rank (BM25 over the filtered set), token-budget packing, pagination.

Facts and cards whose artifact is revoked, suppressed or forgotten are never candidates, and
their full-text entries are deleted in the epoch that executes a level >= 1 forget
(``erase_derived``). No result cache exists: only the active tombstones are cached.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.errors import ArtifactForgottenError, NotFoundError
from oblivio.core.identifiers import ArtifactId, format_time
from oblivio.core.tombstones import TombstoneRecord
from oblivio.node.api_keys import ApiKey
from oblivio.node.home import write_private_file
from oblivio.node.ids import new_uuid7
from oblivio.node.recall.filter import TombstoneCache, TombstoneView, alias_token_hashes
from oblivio.node.recall.model import (
    ALIAS_ATTRIBUTES,
    MAX_FACTS_PER_BATCH,
    CardInput,
    FactInput,
    FactTooLargeError,
    RecordKind,
    ScopeNotPermittedError,
    literal_text,
    word_tokens,
)
from oblivio.node.recall.packing import (
    TokenCounter,
    approximate_tokens,
    pack_instruction,
    pack_page,
)
from oblivio.node.recall.query import RecallQuery, bm25_scores, cursor_offset, encode_cursor
from oblivio.node.vault import ArtifactInput, ArtifactVault
from oblivio.store.database import Database, Transaction

ALIAS_KEY_FILE: Final = "recall-alias.key"
"""HOME file holding the node's secret for alias-token hashes (32 random bytes, mode 0600)."""
FACT_METADATA: Final[dict[str, JsonValue]] = {"type": "oblivio.fact.v1"}
CARD_METADATA: Final[dict[str, JsonValue]] = {"type": "oblivio.card.v1"}

_DECRYPT_WINDOW: Final = 50
"""The instruction reads values this many at a time, in rank order, while it packs them."""

_UNREADABLE = (
    "EXISTS (SELECT 1 FROM artifact_states s WHERE s.artifact_id = {column} "
    "AND s.capabilities LIKE '%decrypt%')"
)


def load_alias_key(home: Path) -> bytes:
    """The node's alias-token key, made on first use. Kept in the home, not the database, so
    that a copy of the database alone cannot test names against the hashes."""
    path = home / ALIAS_KEY_FILE
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            write_private_file(path, secrets.token_bytes(32))
    return path.read_bytes()


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" for _ in values) or "NULL"


@dataclass
class _Fact:
    id: str
    entity_uri: str
    attribute: str
    artifact_id: str
    ref: str | None
    scope: str
    derived_from: list[str]
    valid_from: str
    created_at: str
    fact_hash: str
    hop: int | None = None
    score: float | None = None
    value: JsonValue = None

    kind: RecordKind = "fact"


@dataclass
class _Card:
    id: str
    about_entity: str
    artifact_id: str
    scope: str
    created_at: str
    related: list[str] = field(default_factory=list)
    hop: int | None = None
    score: float | None = None
    text: str | None = None

    kind: RecordKind = "card"


_Item = _Fact | _Card

_FACT_COLUMNS = (
    "f.id, f.entity_uri, f.attribute, f.value_artifact_id, f.ref_entity_uri, f.scope, "
    "f.derived_from, COALESCE(f.valid_from, f.created_at), f.created_at, f.fact_hash"
)
_CARD_COLUMNS = "c.id, c.about_entity, c.text_artifact_id, c.scope, c.created_at"


def _fact(row: Sequence[Any]) -> _Fact:
    derived = [] if row[6] == "[]" else parse_json(row[6])
    return _Fact(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        [str(h) for h in derived] if isinstance(derived, list) else [],
        row[7],
        row[8],
        row[9],
    )


@dataclass(frozen=True)
class RecallResult:
    """One page of a recall: ranked items (JSON), the filtered total, the next cursor."""

    items: list[dict[str, JsonValue]]
    total: int
    next_cursor: str | None
    omitted_over_budget: int
    tokens: int

    def to_dict(self) -> dict[str, JsonValue]:
        """``facts``, ``cards`` and ``edges`` in rank order, with the page's bookkeeping."""
        facts = [i for i in self.items if i["kind"] == "fact"]
        edges: list[JsonValue] = [
            {
                "fact_id": f["id"],
                "from": f["entity_uri"],
                "attribute": f["attribute"],
                "to": value["ref"],
            }
            for f in facts
            if isinstance(value := f["value"], dict) and "ref" in value
        ]
        return {
            "facts": list(facts),
            "cards": [i for i in self.items if i["kind"] == "card"],
            "edges": edges,
            "total": self.total,
            "next_cursor": self.next_cursor,
            "omitted_over_budget": self.omitted_over_budget,
            "tokens": self.tokens,
        }


class RecallService:
    """Facts, cards and recall over one node's database and vault; thread-safe."""

    def __init__(
        self,
        db: Database,
        vault: ArtifactVault,
        alias_key: bytes,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        token_counter: TokenCounter = approximate_tokens,
    ) -> None:
        self.db = db
        self.vault = vault
        self._alias_key = alias_key
        self._clock = clock
        self.count_tokens = token_counter
        self.tombstones = TombstoneCache(db, clock)
        self._changed = threading.Condition()

    # -- writes ---------------------------------------------------------------------------------

    def _now(self) -> str:
        return format_time(self._clock())

    def add_facts(self, key: ApiKey, facts: Sequence[FactInput]) -> list[dict[str, JsonValue]]:
        """Store facts (one transaction: all or none). Each value becomes an artifact about
        the fact's entity in the fact's scope. Raises ScopeNotPermittedError if the key may not
        write a scope, FactTooLargeError for a batch over ``MAX_FACTS_PER_BATCH``."""
        if not facts:
            return []
        if len(facts) > MAX_FACTS_PER_BATCH:
            raise FactTooLargeError(f"facts: expected at most {MAX_FACTS_PER_BATCH} per batch")
        for fact in facts:
            self._may_write(key, fact.scope)
        created_at = self._now()
        ids = [new_uuid7() for _ in facts]
        out: list[dict[str, JsonValue]] = []

        def rows(tx: Transaction, artifact_ids: list[ArtifactId]) -> None:
            for fact_id, fact, artifact_id in zip(ids, facts, artifact_ids, strict=True):
                tx.execute(
                    "INSERT INTO facts (id, entity_uri, attribute, value_artifact_id, "
                    "ref_entity_uri, scope, derived_from, created_at, valid_from, fact_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        fact_id,
                        fact.entity_uri,
                        fact.attribute,
                        artifact_id,
                        fact.ref,
                        fact.scope,
                        canonical_json(list(fact.derived_from)).decode("utf-8"),
                        created_at,
                        fact.valid_from or created_at,
                        fact.fact_hash(),
                    ),
                )
                if fact.ref is None:
                    text = fact.attribute + " " + literal_text(fact.value["literal"])
                    _index(tx, "fact", fact_id, artifact_id, word_tokens(text))
                out.append(
                    {
                        "id": fact_id,
                        "fact_hash": fact.fact_hash(),
                        "created_at": created_at,
                        "valid_from": fact.valid_from or created_at,
                    }
                )

        late_aliases = False

        def rows_and_aliases(tx: Transaction, artifact_ids: list[ArtifactId]) -> None:
            nonlocal late_aliases
            rows(tx, artifact_ids)
            late_aliases = self._hash_late_aliases(tx, facts)

        self.vault.put_many(
            [ArtifactInput(f.value_bytes(), FACT_METADATA, f.entity_uri, f.scope) for f in facts],
            within=rows_and_aliases,
        )
        if late_aliases:
            self.tombstones.invalidate()
        self._notify()
        return out

    def add_card(self, key: ApiKey, card: CardInput) -> dict[str, JsonValue]:
        """Store a memory card; its text becomes an artifact about ``about_entity``."""
        self._may_write(key, card.scope)
        card_id, created_at = new_uuid7(), self._now()

        def rows(tx: Transaction, artifact_ids: list[ArtifactId]) -> None:
            tx.execute(
                "INSERT INTO memory_cards (id, about_entity, text_artifact_id, scope, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (card_id, card.about_entity, artifact_ids[0], card.scope, created_at),
            )
            tx.executemany(
                "INSERT INTO memory_card_entities (card_id, position, entity_uri) VALUES (?, ?, ?)",
                [(card_id, i, uri) for i, uri in enumerate(card.related_entities)],
            )
            _index(tx, "card", card_id, artifact_ids[0], word_tokens(card.text))

        self.vault.put_many(
            [
                ArtifactInput(
                    card.text.encode("utf-8"), CARD_METADATA, card.about_entity, card.scope
                )
            ],
            within=rows,
        )
        self._notify()
        return {"id": card_id, "created_at": created_at}

    def retract_fact(self, key: ApiKey, fact_id: str) -> dict[str, JsonValue]:
        """Append a retraction (ids and times only, never the value) for a fact the caller
        can see and may write. Idempotent: a retracted fact answers its first retraction.
        Raises NotFoundError for a fact that is absent, unreadable to the key, suppressed or
        forgotten (all alike), ScopeNotPermittedError if the key may not write its scope."""
        with self.db.transaction() as tx:
            row = tx.fetchone(
                f"SELECT {_FACT_COLUMNS} FROM facts f WHERE f.id = ? AND NOT "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                + _UNREADABLE.format(column="f.value_artifact_id"),
                (fact_id,),
            )
            if row is None:
                raise NotFoundError(f"fact {fact_id} not found")
            fact = _fact(row)
            view = self.tombstones.view(tx)
            if fact.scope not in key.read_scopes or view.fact_suppressed(
                fact.entity_uri, fact.ref, fact.scope
            ):
                raise NotFoundError(f"fact {fact_id} not found")
            self._may_write(key, fact.scope)
            existing = tx.fetchone(
                "SELECT id, retracted_at FROM fact_retractions WHERE fact_id = ? "
                "ORDER BY retracted_at, id LIMIT 1",
                (fact_id,),
            )
            if existing is not None:
                return {"id": existing[0], "fact_id": fact_id, "retracted_at": existing[1]}
            retraction = {"id": new_uuid7(), "fact_id": fact_id, "retracted_at": self._now()}
            tx.execute(
                "INSERT INTO fact_retractions (id, fact_id, retracted_at, retracted_by) "
                "VALUES (?, ?, ?, ?)",
                (retraction["id"], fact_id, retraction["retracted_at"], key.name),
            )
        return dict(retraction)

    @staticmethod
    def _may_write(key: ApiKey, scope: str) -> None:
        if scope not in key.write_scopes:
            raise ScopeNotPermittedError(f"this API key may not write scope {scope!r}")

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_change(self, timeout: float) -> None:
        """Block until a fact or card is written in this process, or ``timeout`` seconds."""
        with self._changed:
            self._changed.wait(timeout)

    # -- tombstones -----------------------------------------------------------------------------

    def capture_aliases(self, record: TombstoneRecord) -> None:
        """Keep keyed hashes of the word tokens of ``record``'s entity's aliases (its ``name``
        and ``alias`` facts) beside the tombstone, then apply it at once. Runs when a tombstone
        is issued or received, before the entity's artifacts are forgotten."""
        with self.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT f.value_artifact_id FROM facts f WHERE f.entity_uri = ? "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                f"AND f.attribute IN ({_marks(ALIAS_ATTRIBUTES)}) AND f.ref_entity_uri IS NULL "
                "AND NOT "
                + _UNREADABLE.format(column="f.value_artifact_id")
                + " ORDER BY f.created_at, f.id",
                (record.entity_uri, *ALIAS_ATTRIBUTES),
            )
        groups: list[list[str]] = []
        for (artifact_id,) in rows:
            try:
                value = parse_json(self.vault.get(artifact_id))
            except ArtifactForgottenError:
                continue
            literal = value.get("literal") if isinstance(value, dict) else None
            hashes = sorted(alias_token_hashes(self._alias_key, literal_text(literal)))
            if hashes and hashes not in groups:
                groups.append(hashes)
        if groups:
            with self.db.transaction() as tx:
                _keep_alias_hashes(tx, record.id, groups)
        self.tombstones.invalidate()

    def _hash_late_aliases(self, tx: Transaction, facts: Sequence[FactInput]) -> bool:
        """In a write's transaction: an alias (``name`` / ``alias`` fact) written for an entity
        that already has active tombstones gets its word hashes kept beside each of them, as
        ``capture_aliases`` keeps the aliases known at tombstone time (§23.3.2 rule 3). Its
        value itself is forgotten by the placement rule when a tombstone covers its scope.
        Returns whether any were kept."""
        kept = False
        for fact in facts:
            if fact.attribute not in ALIAS_ATTRIBUTES or fact.ref is not None:
                continue
            hashes = sorted(
                alias_token_hashes(self._alias_key, literal_text(fact.value["literal"]))
            )
            if not hashes:
                continue
            for (tombstone_id,) in tx.fetchall(
                "SELECT t.id FROM tombstones t WHERE t.entity_uri = ? AND NOT EXISTS "
                "(SELECT 1 FROM tombstone_revocations r WHERE r.tombstone_id = t.id)",
                (fact.entity_uri,),
            ):
                kept = _keep_alias_hashes(tx, tombstone_id, [hashes]) or kept
        return kept

    # -- derived data ---------------------------------------------------------------------------

    def erase_derived(
        self, tx: Transaction, artifact_ids: Iterable[str]
    ) -> Callable[[], None] | None:
        """Inside an epoch's transaction: delete the full-text entries of facts and cards whose
        artifact that epoch forgot at level >= 1. On SQLite the FTS5 index is then merged
        (``optimize``) so that no segment keeps the deleted terms, and ``secure_delete``
        zeroes what was freed. On PostgreSQL, when entries were deleted (or dead ones remain),
        returns the plain ``VACUUM`` of their table for after the commit (docs/adr/0029), which
        prunes the dead rows instead of leaving them until autovacuum's threshold."""
        wanted = sorted(set(artifact_ids))
        deleted = 0
        for at in range(0, len(wanted), 500):
            chunk = wanted[at : at + 500]
            docs = [
                int(r[0])
                for r in tx.fetchall(
                    f"SELECT doc_id FROM recall_documents WHERE artifact_id IN ({_marks(chunk)})",  # noqa: S608 - only fixed SQL and placeholders are interpolated
                    chunk,
                )
            ]
            if not docs:
                continue
            if tx.dialect == "sqlite":
                tx.execute(f"DELETE FROM recall_fts WHERE rowid IN ({_marks(docs)})", docs)  # noqa: S608 - only fixed SQL and placeholders are interpolated
            tx.execute(f"DELETE FROM recall_documents WHERE doc_id IN ({_marks(docs)})", docs)  # noqa: S608 - only fixed SQL and placeholders are interpolated
            deleted += len(docs)
        if tx.dialect == "sqlite":
            if deleted:
                tx.execute("INSERT INTO recall_fts (recall_fts) VALUES ('optimize')")
            return None
        # A VACUUM cannot prune rows that a transaction older than their deletion may still
        # see; those stay counted as dead, and the next epoch's VACUUM prunes them.
        dead = tx.fetchone(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'recall_documents'::regclass"
        )
        if deleted or (dead is not None and int(dead[0] or 0) > 0):
            return lambda: self.db.vacuum("recall_documents")
        return None

    # -- recall ---------------------------------------------------------------------------------

    def _scopes(self, key: ApiKey, query: RecallQuery) -> tuple[str, ...]:
        return self.readable_scopes(key, query.scopes)

    @staticmethod
    def readable_scopes(key: ApiKey, scopes: Sequence[str] | None) -> tuple[str, ...]:
        """The scopes a recall by ``key`` reads: those asked for (default: all the key may
        read). Raises ScopeNotPermittedError for one the key may not read."""
        wanted = tuple(scopes) if scopes is not None else key.read_scopes
        refused = [s for s in wanted if s not in key.read_scopes]
        if refused:
            raise ScopeNotPermittedError(f"this API key may not read scope {refused[0]!r}")
        return tuple(wanted)

    def recall(self, key: ApiKey, query: RecallQuery) -> RecallResult:
        """One page of a recall (steps 1-4). Raises ScopeNotPermittedError for a scope the key
        may not read, CursorInvalidError for a cursor of another query."""
        offset = cursor_offset(query)
        ranked, view, moment = self._ranked(key, query)

        def rendered(at: int) -> str:
            # The page's values are read together: a window of ``limit`` items at a time.
            self._decrypt_many(ranked[at : at + query.limit])
            return self._line(ranked[at])

        page = pack_page(
            rendered,
            len(ranked),
            offset=offset,
            limit=query.limit,
            budget=query.token_budget,
            count=self.count_tokens,
        )
        chosen = [ranked[i] for i in page.taken]
        self._decrypt_many(chosen)
        for item in chosen:
            self._decrypt(item)
        exists = self._existing_hashes(key, query, chosen, view, moment)
        items = [
            _item_json(item, rank, exists) for rank, item in zip(page.taken, chosen, strict=True)
        ]
        next_cursor = None if page.next_offset is None else encode_cursor(query, page.next_offset)
        return RecallResult(items, len(ranked), next_cursor, len(page.skipped), page.tokens)

    def instruction(self, key: ApiKey, query: RecallQuery) -> dict[str, JsonValue]:
        """One packed text block for a prompt within ``query.token_budget`` (steps 1-4)."""
        ranked, _, _ = self._ranked(key, query)
        budget = query.token_budget or 0

        def lines() -> Iterator[str]:
            for at, item in enumerate(ranked):
                self._decrypt_many(ranked[at : at + _DECRYPT_WINDOW])
                yield self._line(item)

        text, included = pack_instruction(lines(), budget, self.count_tokens)
        return {
            "text": text,
            "tokens": self.count_tokens(text) if text else 0,
            "included": included,
            "total": len(ranked),
        }

    def events_after(
        self,
        key: ApiKey,
        scopes: Sequence[str] | None,
        entity: str | None,
        after: str,
        batch: int = 200,
    ) -> tuple[list[dict[str, JsonValue]], str]:
        """Facts and cards written after ``after`` (a ``created_at|id`` mark), at most
        ``batch`` of each kind, filtered now, at send time, by the same scope and tombstone
        filter as recall. Returns them (oldest first) and the mark to continue from; nothing
        written before that mark is left for a later call."""
        readable = self.readable_scopes(key, scopes)
        moment = self._now()
        since, _, since_id = after.partition("|")
        found: list[_Item] = []
        mark = after
        with self._read() as tx:
            fact_rows = tx.fetchall(
                f"SELECT {_FACT_COLUMNS} FROM facts f WHERE (f.created_at > ? OR "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                "(f.created_at = ? AND f.id > ?)) ORDER BY f.created_at, f.id LIMIT ?",
                (since, since, since_id, batch),
            )
            card_rows = tx.fetchall(
                f"SELECT {_CARD_COLUMNS} FROM memory_cards c WHERE (c.created_at > ? OR "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                "(c.created_at = ? AND c.id > ?)) ORDER BY c.created_at, c.id LIMIT ?",
                (since, since, since_id, batch),
            )
            facts = [_fact(r) for r in fact_rows]
            cards = [_Card(r[0], r[1], r[2], r[3], r[4]) for r in card_rows]
            # A kind that filled its batch may have more after its last row: the other kind's
            # rows beyond that point wait for the next call, so that none is skipped.
            bounds = [
                (rows[-1].created_at, rows[-1].id)
                for rows in (facts, cards)
                if len(rows) == batch and rows
            ]
            bound = min(bounds) if bounds else None
            candidates: list[_Item] = [*facts, *cards]
            candidates = [i for i in candidates if bound is None or (i.created_at, i.id) <= bound]
            candidates.sort(key=lambda i: (i.created_at, i.id))
            for item in candidates:
                mark = f"{item.created_at}|{item.id}"
            ids = {i.id for i in candidates}
            visible_facts = self._visible_fact_ids(tx, ids, readable, moment)
            visible_cards = self._visible_card_ids(tx, ids, readable, moment)
            self._load_related(tx, [c for c in candidates if isinstance(c, _Card)])
            view = self.tombstones.view(tx)
        for item in candidates:
            if item.id not in (visible_facts if isinstance(item, _Fact) else visible_cards):
                continue
            if entity is not None and not _touches(item, entity):
                continue
            if isinstance(item, _Fact):
                if view.fact_suppressed(item.entity_uri, item.ref, item.scope):
                    continue
            elif not self._card_passes(item, view):
                continue
            found.append(item)
        events: list[dict[str, JsonValue]] = []
        self._decrypt_many(found)
        for item in found:
            try:
                self._decrypt(item)
            except ArtifactForgottenError:
                continue
            events.append(_item_json(item, None, {}))
        return events, mark

    def deliverable(self, event: dict[str, JsonValue]) -> dict[str, JsonValue] | None:
        """An event of ``events_after`` as it may be sent now: None if an active tombstone
        (own and received ones apply at once) now suppresses it, else with tombstoned
        ``related_entities`` omitted. The subscription calls it just before each send."""
        view = self.tombstones.view()
        scope = str(event["scope"])
        if event["kind"] == "fact":
            value = event["value"]
            ref = value.get("ref") if isinstance(value, dict) else None
            suppressed = view.fact_suppressed(
                str(event["entity_uri"]), None if ref is None else str(ref), scope
            )
            return None if suppressed else event
        related = event["related_entities"]
        kept = view.filter_card(
            str(event["about_entity"]),
            [str(u) for u in related] if isinstance(related, list) else [],
            scope,
            lambda: alias_token_hashes(self._alias_key, str(event["text"] or "")),
        )
        return None if kept is None else {**event, "related_entities": list(kept)}

    # -- the pipeline ---------------------------------------------------------------------------

    def _read(self) -> Any:
        # Seed 002 §23.3.3: SQLite reads take BEGIN IMMEDIATE; PostgreSQL runs at READ
        # COMMITTED, its tombstones read after the candidate queries.
        return self.db.transaction(write=self.db.dialect == "sqlite")

    def _ranked(self, key: ApiKey, query: RecallQuery) -> tuple[list[_Item], TombstoneView, str]:
        scopes = self._scopes(key, query)
        moment = query.as_of or self._now()
        hops: dict[str, int] = {}
        with self._read() as tx:
            facts: dict[str, _Fact] = {}
            cards: dict[str, _Card] = {}
            matched: dict[str, list[str]] | None = None
            if query.q is not None:
                matched, fact_ids, card_ids = self._text_matches(tx, query.terms)
                if query.entity is None:  # else the entity's candidates are intersected below
                    facts.update(
                        (f.id, f) for f in self._facts_where(tx, "f.id", fact_ids, scopes, moment)
                    )
                    cards.update(
                        (c.id, c) for c in self._cards_where(tx, "c.id", card_ids, scopes, moment)
                    )
            # Step 3's tombstones, read after the first candidate query (§23.3.3).
            view = self.tombstones.view(tx)
            if query.entity is not None:
                hops = self._traverse(
                    tx,
                    start=query.entity,
                    hops=query.hops,
                    scopes=scopes,
                    moment=moment,
                    view=view,
                )
                reached = list(hops)
                near_facts = {
                    f.id: f for f in self._facts_where(tx, "f.entity_uri", reached, scopes, moment)
                }
                near_cards = {
                    c.id: c
                    for c in self._cards_where(tx, "c.about_entity", reached, scopes, moment)
                }
                near_cards.update(
                    (c.id, c) for c in self._cards_related_to(tx, reached, scopes, moment)
                )
                if matched is not None:
                    near_facts = {i: f for i, f in near_facts.items() if i in matched}
                    near_cards = {i: c for i, c in near_cards.items() if i in matched}
                facts, cards = near_facts, near_cards
                for f in facts.values():
                    f.hop = hops[f.entity_uri]
            self._load_related(tx, list(cards.values()))
        # Step 3: the tombstone filter, rule by rule.
        kept: list[_Item] = [
            f for f in facts.values() if not view.fact_suppressed(f.entity_uri, f.ref, f.scope)
        ]
        for card in cards.values():
            if self._card_passes(card, view):
                if query.entity is not None:
                    near = [
                        hops[u]
                        for u in [card.about_entity, *card.related]
                        if u in hops and not view.covers(u, card.scope)
                    ]
                    if not near:
                        continue
                    card.hop = min(near)
                kept.append(card)
        # Step 4: rank over the filtered set only.
        if matched is not None:
            scores = bm25_scores(query.terms, {i.id: matched[i.id] for i in kept})
            for item in kept:
                item.score = scores.get(item.id, 0.0)
        kept.sort(
            key=lambda i: (
                -(i.score or 0.0),
                i.hop if i.hop is not None else 0,
                0 if isinstance(i, _Fact) else 1,
                i.created_at,
                i.id,
            )
        )
        return kept, view, moment

    def _card_passes(self, card: _Card, view: TombstoneView) -> bool:
        """§23.3.1 rule 3, §23.3.2 rule 3: drop or trim the card (decrypting its text only if
        an alias of a tombstoned entity could match it)."""

        def text_hashes() -> frozenset[str]:
            self._decrypt(card)
            return alias_token_hashes(self._alias_key, card.text or "")

        try:
            related = view.filter_card(card.about_entity, card.related, card.scope, text_hashes)
        except ArtifactForgottenError:
            return False
        if related is None:
            return False
        card.related = related
        return True

    def _traverse(
        self,
        tx: Transaction,
        *,
        start: str,
        hops: int,
        scopes: Sequence[str],
        moment: str,
        view: TombstoneView,
    ) -> dict[str, int]:
        """Breadth-first over visible ``ref`` edges (both directions), never through an edge
        the tombstone filter drops or into a tombstoned node (§23.3.2 rule 1)."""
        distance = {start: 0}
        frontier = [start]
        for hop in range(1, hops + 1):
            if not frontier:
                break
            edges = self._facts_where(
                tx, "f.entity_uri", frontier, scopes, moment, refs_only=True
            ) + self._facts_where(tx, "f.ref_entity_uri", frontier, scopes, moment)
            following: list[str] = []
            for edge in sorted(edges, key=lambda e: (e.created_at, e.id)):
                if edge.ref is None or view.fact_suppressed(edge.entity_uri, edge.ref, edge.scope):
                    continue
                for node in (edge.entity_uri, edge.ref):
                    if node not in distance and view.traversable(node, edge.scope):
                        distance[node] = hop
                        following.append(node)
            frontier = following
        return distance

    def _visible(self, alias: str, moment: str, scopes: Sequence[str]) -> tuple[str, list[str]]:
        column = "value_artifact_id" if alias == "f" else "text_artifact_id"
        sql = (
            f"{alias}.scope IN ({_marks(scopes)}) AND {alias}.created_at <= ? AND NOT "
            + _UNREADABLE.format(column=f"{alias}.{column}")
        )
        return sql, [*scopes, moment]

    def _facts_where(
        self,
        tx: Transaction,
        column: str,
        values: Sequence[str],
        scopes: Sequence[str],
        moment: str,
        *,
        refs_only: bool = False,
    ) -> list[_Fact]:
        """Visible facts (scope filter, valid and not retracted at ``moment``, artifact
        readable) whose ``column`` is one of ``values``."""
        found: list[_Fact] = []
        visible, params = self._visible("f", moment, scopes)
        for at in range(0, len(values), 500):
            chunk = list(values[at : at + 500])
            found += [
                _fact(r)
                for r in tx.fetchall(
                    f"SELECT {_FACT_COLUMNS} FROM facts f WHERE {column} IN ({_marks(chunk)}) "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                    f"AND {visible} AND COALESCE(f.valid_from, f.created_at) <= ? "
                    + ("AND f.ref_entity_uri IS NOT NULL " if refs_only else "")
                    + "AND NOT EXISTS (SELECT 1 FROM fact_retractions r WHERE r.fact_id = f.id "
                    "AND r.retracted_at <= ?)",
                    [*chunk, *params, moment, moment],
                )
            ]
        return found

    def _cards_where(
        self,
        tx: Transaction,
        column: str,
        values: Sequence[str],
        scopes: Sequence[str],
        moment: str,
    ) -> list[_Card]:
        found: list[_Card] = []
        visible, params = self._visible("c", moment, scopes)
        for at in range(0, len(values), 500):
            chunk = list(values[at : at + 500])
            found += [
                _Card(r[0], r[1], r[2], r[3], r[4])
                for r in tx.fetchall(
                    f"SELECT {_CARD_COLUMNS} FROM memory_cards c "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                    f"WHERE {column} IN ({_marks(chunk)}) AND {visible}",
                    [*chunk, *params],
                )
            ]
        return found

    def _cards_related_to(
        self, tx: Transaction, entities: Sequence[str], scopes: Sequence[str], moment: str
    ) -> list[_Card]:
        ids: list[str] = []
        for at in range(0, len(entities), 500):
            chunk = list(entities[at : at + 500])
            ids += [
                r[0]
                for r in tx.fetchall(
                    "SELECT DISTINCT card_id FROM memory_card_entities "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                    f"WHERE entity_uri IN ({_marks(chunk)})",
                    chunk,
                )
            ]
        return self._cards_where(tx, "c.id", sorted(set(ids)), scopes, moment)

    def _visible_fact_ids(
        self, tx: Transaction, ids: Iterable[str], scopes: Sequence[str], moment: str
    ) -> set[str]:
        return {f.id for f in self._facts_where(tx, "f.id", sorted(ids), scopes, moment)}

    def _visible_card_ids(
        self, tx: Transaction, ids: Iterable[str], scopes: Sequence[str], moment: str
    ) -> set[str]:
        return {c.id for c in self._cards_where(tx, "c.id", sorted(ids), scopes, moment)}

    @staticmethod
    def _load_related(tx: Transaction, cards: Sequence[_Card]) -> None:
        by_id = {c.id: c for c in cards}
        ids = sorted(by_id)
        for at in range(0, len(ids), 500):
            chunk = ids[at : at + 500]
            for card_id, uri in tx.fetchall(
                "SELECT card_id, entity_uri FROM memory_card_entities "  # noqa: S608 - only fixed SQL and placeholders are interpolated
                f"WHERE card_id IN ({_marks(chunk)}) ORDER BY card_id, position",
                chunk,
            ):
                by_id[card_id].related.append(uri)

    @staticmethod
    def _text_matches(
        tx: Transaction, terms: Sequence[str]
    ) -> tuple[dict[str, list[str]], list[str], list[str]]:
        """Record id -> indexed tokens of every document matching any of ``terms``, and the
        matching fact ids and card ids."""
        if not terms:
            return {}, [], []
        if tx.dialect == "sqlite":
            expression = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
            rows = tx.fetchall(
                "SELECT d.record_id, d.record_kind, x.body FROM recall_fts x "
                "JOIN recall_documents d ON d.doc_id = x.rowid WHERE recall_fts MATCH ?",
                (expression,),
            )
            tokens = {r[0]: str(r[2]).split(" ") for r in rows}
        else:
            expression = " | ".join(_ts_quote(t) for t in terms)
            rows = tx.fetchall(
                "SELECT record_id, record_kind, body::text FROM recall_documents "
                "WHERE body @@ ?::tsquery",
                (expression,),
            )
            tokens = {r[0]: _tsvector_tokens(r[2]) for r in rows}
        facts = [r[0] for r in rows if r[1] == "fact"]
        cards = [r[0] for r in rows if r[1] == "card"]
        return tokens, facts, cards

    def _existing_hashes(
        self,
        key: ApiKey,
        query: RecallQuery,
        items: Sequence[_Item],
        view: TombstoneView,
        moment: str,
    ) -> dict[str, bool]:
        """§23.3.2 rule 4: whether each ``derived_from`` hash names a fact this query could
        see (in scope, valid, readable, not suppressed by a tombstone)."""
        wanted = sorted({h for i in items if isinstance(i, _Fact) for h in i.derived_from})
        if not wanted:
            return {}
        scopes = self._scopes(key, query)
        with self.db.transaction(write=False) as tx:
            facts = self._facts_where(tx, "f.fact_hash", wanted, scopes, moment)
        seen = {
            f.fact_hash for f in facts if not view.fact_suppressed(f.entity_uri, f.ref, f.scope)
        }
        return {h: h in seen for h in wanted}

    def _decrypt_many(self, items: Sequence[_Item]) -> None:
        """Decrypt the values and texts of ``items`` not decrypted yet in one vault read
        (``ArtifactVault.get_many``); one forgotten meanwhile stays undecrypted, so that
        ``_decrypt`` reports it."""
        pending: dict[str, list[_Item]] = {}
        for item in items:
            if isinstance(item, _Fact) and item.value is None and item.ref is not None:
                item.value = {"ref": item.ref}
            elif (item.value if isinstance(item, _Fact) else item.text) is None:
                pending.setdefault(item.artifact_id, []).append(item)
        if not pending:
            return
        for artifact_id, plaintext in self.vault.get_many(list(pending)).items():
            for item in pending[artifact_id]:
                if isinstance(item, _Fact):
                    item.value = parse_json(plaintext)
                else:
                    item.text = plaintext.decode("utf-8")

    def _decrypt(self, item: _Item) -> None:
        if isinstance(item, _Fact):
            if item.value is None:
                item.value = (
                    {"ref": item.ref}
                    if item.ref is not None
                    else parse_json(self.vault.get(item.artifact_id))
                )
        elif item.text is None:
            item.text = self.vault.get(item.artifact_id).decode("utf-8")

    def _line(self, item: _Item) -> str:
        """An item as one line of text (what packing counts and the instruction holds)."""
        try:
            self._decrypt(item)
        except ArtifactForgottenError:
            return ""
        if isinstance(item, _Fact):
            value = item.value
            if isinstance(value, dict) and "ref" in value:
                return f"{item.entity_uri} {item.attribute} -> {value['ref']}"
            literal = value.get("literal") if isinstance(value, dict) else None
            shown = literal if isinstance(literal, str) else canonical_json(literal).decode()
            return f"{item.entity_uri} {item.attribute}: {shown}"
        return f"{item.about_entity}: {item.text}"


def _index(
    tx: Transaction, kind: RecordKind, record_id: str, artifact_id: str, tokens: list[str]
) -> None:
    """Add a record's full-text document (its word tokens)."""
    if not tokens:
        return
    if tx.dialect == "sqlite":
        row = tx.fetchone(
            "INSERT INTO recall_documents (record_id, record_kind, artifact_id, doc_length) "
            "VALUES (?, ?, ?, ?) RETURNING doc_id",
            (record_id, kind, artifact_id, len(tokens)),
        )
        assert row is not None  # noqa: S101 - RETURNING yields the inserted row
        tx.execute("INSERT INTO recall_fts (rowid, body) VALUES (?, ?)", (row[0], " ".join(tokens)))
        return
    positions: dict[str, list[int]] = {}
    for at, token in enumerate(tokens[:16383], start=1):
        positions.setdefault(token, []).append(at)
    literal = " ".join(
        _ts_quote(t) + ":" + ",".join(str(p) for p in ps) for t, ps in positions.items()
    )
    tx.execute(
        "INSERT INTO recall_documents (record_id, record_kind, artifact_id, doc_length, body) "
        "VALUES (?, ?, ?, ?, ?::tsvector)",
        (record_id, kind, artifact_id, len(tokens), literal),
    )


def _keep_alias_hashes(tx: Transaction, tombstone_id: str, groups: Sequence[list[str]]) -> bool:
    """Keep each alias's sorted token hashes beside a tombstone unless it holds them already,
    numbered after those it holds. Returns whether any were added."""
    held = tx.fetchall(
        "SELECT alias_index, token_hashes FROM tombstone_alias_tokens WHERE tombstone_id = ?",
        (tombstone_id,),
    )
    known = [parse_json(r[1]) for r in held]
    fresh = [g for g in groups if g not in known]
    start = 1 + max((int(r[0]) for r in held), default=-1)
    tx.executemany(
        "INSERT INTO tombstone_alias_tokens (tombstone_id, alias_index, token_hashes) "
        "VALUES (?, ?, ?)",
        [
            (tombstone_id, start + n, canonical_json(list(g)).decode("utf-8"))
            for n, g in enumerate(fresh)
        ],
    )
    return bool(fresh)


def _ts_quote(token: str) -> str:
    # Word tokens hold letters and digits only, so quoting needs no escapes.
    return "'" + token + "'"


def _tsvector_tokens(text: str) -> list[str]:
    """The token list a tsvector's text form encodes: ``'a':1,3 'b':2`` -> [a, b, a]."""
    placed: list[tuple[int, str]] = []
    for entry in text.split(" "):
        if not entry:
            continue
        lexeme, _, positions = entry.rpartition(":")
        token = lexeme.strip("'")
        placed += [(int(p.rstrip("ABCD")), token) for p in positions.split(",")]
    return [t for _, t in sorted(placed)]


def _touches(item: _Item, entity: str) -> bool:
    if isinstance(item, _Fact):
        return entity in (item.entity_uri, item.ref)
    return entity == item.about_entity or entity in item.related


def _item_json(item: _Item, rank: int | None, exists: dict[str, bool]) -> dict[str, JsonValue]:
    if isinstance(item, _Fact):
        return {
            "kind": "fact",
            "rank": rank,
            "id": item.id,
            "entity_uri": item.entity_uri,
            "attribute": item.attribute,
            "value": item.value,
            "scope": item.scope,
            "derived_from": [
                {"hash": h, "exists": exists.get(h, False)} for h in item.derived_from
            ],
            "valid_from": item.valid_from,
            "created_at": item.created_at,
            "fact_hash": item.fact_hash,
            "hop": item.hop,
            "score": item.score,
        }
    return {
        "kind": "card",
        "rank": rank,
        "id": item.id,
        "about_entity": item.about_entity,
        "related_entities": list(item.related),
        "text": item.text,
        "scope": item.scope,
        "created_at": item.created_at,
        "hop": item.hop,
        "score": item.score,
    }
