"""Forward-only, versioned schema migrations, recorded in ``schema_migrations``.

Each migration is applied once, in order, inside one write transaction together with its record.
A database whose recorded version is newer than this build knows is refused, never downgraded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from oblivio.core.errors import SchemaVersionError
from oblivio.core.identifiers import format_time
from oblivio.store.database import Database, Transaction

# Any constant works: it only has to be the same for every oblivio process on a database.
_PG_MIGRATION_LOCK = 0x0B11_710


@dataclass(frozen=True)
class Migration:
    """One schema step: a version, a name, portable DDL statements, and statements run after
    them on one dialect only (a full-text index is an FTS5 table on SQLite, a tsvector column
    on PostgreSQL)."""

    version: int
    name: str
    statements: tuple[str, ...]
    by_dialect: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "artifact_vault",
        (
            """CREATE TABLE artifacts (
                artifact_id TEXT PRIMARY KEY,
                blob_id TEXT NOT NULL,
                metadata {blob} NOT NULL,
                nonce {blob} NOT NULL,
                plaintext_size {bigint} NOT NULL,
                ciphertext_size {bigint} NOT NULL,
                chunk_count {bigint} NOT NULL,
                entity_uri TEXT,
                scope TEXT,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_artifacts_entity_uri ON artifacts(entity_uri)",
            """CREATE TABLE artifact_chunks (
                blob_id TEXT NOT NULL,
                seq {bigint} NOT NULL,
                data {blob} NOT NULL,
                PRIMARY KEY (blob_id, seq)
            )""",
            """CREATE TABLE artifact_keys (
                artifact_id TEXT NOT NULL REFERENCES artifacts(artifact_id),
                capability TEXT NOT NULL,
                key_ref TEXT NOT NULL,
                wrapped {blob} NOT NULL,
                PRIMARY KEY (artifact_id, capability)
            )""",
        ),
    ),
    Migration(
        4,
        "facts",
        (
            # Facts of seed 002 §23.3 / DESIGN.md §11: the value lives in an artifact, so it is
            # encrypted and forgettable; a ref value names another entity instead.
            """CREATE TABLE facts (
                id TEXT PRIMARY KEY,
                entity_uri TEXT NOT NULL,
                attribute TEXT NOT NULL,
                value_artifact_id TEXT REFERENCES artifacts(artifact_id),
                ref_entity_uri TEXT,
                scope TEXT NOT NULL,
                derived_from TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_facts_entity_uri ON facts(entity_uri)",
            "CREATE INDEX idx_facts_ref_entity_uri ON facts(ref_entity_uri)",
        ),
    ),
    Migration(
        5,
        "013a_rtbf_tombstones",
        (
            # Seed 002 §23.5.3 migration 013a, plus: key_id (signed, §23.2.4) and record_json (the
            # record exactly as issued or received, relayed unchanged), received_from (the peer
            # that delivered an inbound record), scope_text (the pattern in canonical text form).
            """CREATE TABLE tombstones (
                id TEXT PRIMARY KEY,
                entity_uri TEXT NOT NULL,
                scope TEXT NOT NULL,
                reason TEXT,
                signed_by TEXT NOT NULL,
                signature TEXT NOT NULL,
                created_at TEXT NOT NULL,
                legal_hold INTEGER NOT NULL DEFAULT 0,
                key_id TEXT NOT NULL,
                record_json TEXT NOT NULL,
                received_from TEXT,
                stored_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_tombstones_entity_uri ON tombstones(entity_uri)",
            """CREATE TABLE tombstone_revocations (
                id TEXT PRIMARY KEY,
                tombstone_id TEXT NOT NULL REFERENCES tombstones(id),
                reason TEXT NOT NULL,
                signed_by TEXT NOT NULL,
                signature TEXT NOT NULL,
                created_at TEXT NOT NULL,
                key_id TEXT NOT NULL,
                record_json TEXT NOT NULL,
                stored_at TEXT NOT NULL
            )""",
            # One revocation per tombstone, enforced by the database (tombstone_already_revoked).
            """CREATE UNIQUE INDEX idx_tombstone_revocations_tombstone_id
                ON tombstone_revocations(tombstone_id)""",
        ),
    ),
    Migration(
        6,
        "013c_fact_retractions",
        (
            # Seed 002 §23.5.3 migration 013c: the append-only retraction log (§24.2.1 c.3).
            """CREATE TABLE fact_retractions (
                id TEXT PRIMARY KEY,
                fact_id TEXT NOT NULL REFERENCES facts(id),
                retracted_at TEXT NOT NULL,
                retracted_by TEXT
            )""",
            "CREATE INDEX idx_fact_retractions_fact_id ON fact_retractions(fact_id)",
            "CREATE INDEX idx_fact_retractions_retracted_at ON fact_retractions(retracted_at)",
        ),
    ),
    Migration(
        7,
        "api_keys_manifests_audit",
        (
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                role TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'peer')),
                key_hash TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            """CREATE TABLE org_manifests (
                org TEXT PRIMARY KEY,
                manifest_json TEXT NOT NULL,
                anchor_key_id TEXT NOT NULL,
                own INTEGER NOT NULL DEFAULT 0,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE audit_log (
                seq {bigint} PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                at TEXT NOT NULL,
                event TEXT NOT NULL,
                actor TEXT,
                subject TEXT,
                details TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        3,
        "key_tree",
        (
            # DESIGN.md §5: the key tree (docs/adr/0005). Leaves stay in artifact_keys (one row
            # per artifact and capability), placed by key_tree and tree_slot; each node row holds
            # its children's keys wrapped under its own; the root key lives only in the backend.
            """CREATE TABLE key_tree_heads (
                tree TEXT PRIMARY KEY,
                fanout INTEGER NOT NULL,
                height INTEGER NOT NULL,
                generation {bigint} NOT NULL,
                root_ref TEXT NOT NULL,
                next_slot {bigint} NOT NULL
            )""",
            """CREATE TABLE key_tree_nodes (
                tree TEXT NOT NULL,
                tree_level INTEGER NOT NULL,
                idx {bigint} NOT NULL,
                version {bigint} NOT NULL,
                children {blob} NOT NULL,
                PRIMARY KEY (tree, tree_level, idx)
            )""",
            "ALTER TABLE artifact_keys ADD COLUMN key_tree TEXT",
            "ALTER TABLE artifact_keys ADD COLUMN tree_slot {bigint}",
            """CREATE UNIQUE INDEX idx_artifact_keys_tree_slot
                ON artifact_keys(key_tree, tree_slot)""",
            # Forget batches: intent -> applied -> destroyed (keys/key_tree.py).
            """CREATE TABLE key_tree_journal (
                batch_id TEXT PRIMARY KEY,
                tree TEXT NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('intent', 'applied', 'destroyed')),
                old_generation {bigint} NOT NULL,
                old_root TEXT NOT NULL,
                new_root TEXT NOT NULL,
                leaves {blob} NOT NULL,
                created_at TEXT NOT NULL,
                destroy_after TEXT,
                receipt_hash TEXT
            )""",
            "CREATE INDEX idx_key_tree_journal_state ON key_tree_journal(state)",
            """CREATE TABLE destruction_receipts (
                receipt_hash TEXT PRIMARY KEY,
                batch_id TEXT NOT NULL,
                tree TEXT NOT NULL,
                epoch {bigint} NOT NULL,
                receipt {blob} NOT NULL,
                destroyed_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_destruction_receipts_batch ON destruction_receipts(batch_id)",
        ),
    ),
    Migration(
        2,
        "verifiable_structures",
        (
            # DESIGN.md §6: SMT nodes, versioned. Each batch writes only the nodes it changed,
            # packed per group (the subtree under a depth-12 position; b"" for the top levels)
            # as one blob per (group, version); store/smt_nodes.py has the layout.
            """CREATE TABLE smt_nodes (
                group_key {blob} NOT NULL,
                version {bigint} NOT NULL,
                node_count {bigint} NOT NULL,
                stale_count {bigint} NOT NULL,
                nodes {blob} NOT NULL,
                PRIMARY KEY (group_key, version)
            )""",
            # One row per SMT version (= epoch): its root, the root node's version, and the
            # nodes it replaced (consumed by pruning).
            """CREATE TABLE smt_versions (
                version {bigint} PRIMARY KEY,
                root {blob} NOT NULL,
                root_version {bigint},
                changes {bigint} NOT NULL,
                stale {blob} NOT NULL,
                pruned INTEGER NOT NULL
            )""",
            # DESIGN.md §7: the Forget Event Log (RFC 9162) and its perfect-subtree hashes.
            """CREATE TABLE log_entries (
                idx {bigint} PRIMARY KEY,
                entry {blob} NOT NULL,
                leaf_hash {blob} NOT NULL
            )""",
            """CREATE TABLE log_nodes (
                node_level INTEGER NOT NULL,
                idx {bigint} NOT NULL,
                hash {blob} NOT NULL,
                PRIMARY KEY (node_level, idx)
            )""",
            # Signed checkpoints, one per epoch commit, kept as history.
            """CREATE TABLE checkpoints (
                epoch {bigint} PRIMARY KEY,
                tree_size {bigint} NOT NULL UNIQUE,
                root {blob} NOT NULL,
                note TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        8,
        "forgetting",
        (
            # Forget requests (DESIGN.md §8): acknowledged once their events are in the log.
            # ``opening`` is the requestor commitment's opening, handed to the requestor only.
            """CREATE TABLE forget_requests (
                id TEXT PRIMARY KEY,
                level INTEGER NOT NULL,
                capabilities TEXT NOT NULL,
                authority TEXT NOT NULL,
                requestor_commitment TEXT NOT NULL,
                opening TEXT NOT NULL,
                source TEXT,
                state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'cancelled')),
                requested_at TEXT NOT NULL,
                not_before TEXT NOT NULL,
                committed_epoch {bigint}
            )""",
            "CREATE INDEX idx_forget_requests_state ON forget_requests(state)",
            "CREATE INDEX idx_forget_requests_source ON forget_requests(source)",
            # One logged forget event per artifact, so that a proof carries one small event.
            """CREATE TABLE forget_events (
                event_id TEXT PRIMARY KEY,
                request_id TEXT NOT NULL REFERENCES forget_requests(id),
                artifact_id TEXT NOT NULL REFERENCES artifacts(artifact_id),
                log_index {bigint} NOT NULL,
                event_json TEXT NOT NULL,
                receipt_hash TEXT,
                epoch {bigint}
            )""",
            "CREATE INDEX idx_forget_events_artifact ON forget_events(artifact_id)",
            "CREATE INDEX idx_forget_events_request ON forget_events(request_id)",
            # What reads must honour: revoked (level 0), suppressed (requested, not yet
            # executed, or held), forgotten (executed at level 1 or 2).
            """CREATE TABLE artifact_states (
                artifact_id TEXT PRIMARY KEY REFERENCES artifacts(artifact_id),
                status TEXT NOT NULL CHECK (status IN ('revoked', 'suppressed', 'forgotten')),
                level INTEGER NOT NULL,
                capabilities TEXT NOT NULL,
                request_id TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            # The key store's leaf record of every artifact (DESIGN.md §6), and whether it
            # still has to enter the SMT at the next epoch commit.
            """CREATE TABLE smt_leaves (
                artifact_id TEXT PRIMARY KEY REFERENCES artifacts(artifact_id),
                record_json TEXT NOT NULL,
                pending INTEGER NOT NULL
            )""",
            "CREATE INDEX idx_smt_leaves_pending ON smt_leaves(pending)",
            """CREATE TABLE legal_holds (
                id TEXT PRIMARY KEY,
                authority TEXT NOT NULL,
                reason TEXT NOT NULL,
                source TEXT,
                placed_at TEXT NOT NULL,
                released_at TEXT
            )""",
            """CREATE TABLE legal_hold_artifacts (
                hold_id TEXT NOT NULL REFERENCES legal_holds(id),
                artifact_id TEXT NOT NULL REFERENCES artifacts(artifact_id),
                PRIMARY KEY (hold_id, artifact_id)
            )""",
            "CREATE INDEX idx_legal_hold_artifacts ON legal_hold_artifacts(artifact_id)",
            # Destruction receipts already appended to the log.
            """CREATE TABLE logged_receipts (
                receipt_hash TEXT PRIMARY KEY,
                log_index {bigint} NOT NULL
            )""",
        ),
    ),
    Migration(
        9,
        "smt_leaves_in_artifacts",
        (
            # Each artifact's SMT leaf record lives in its own row (docs/adr/0010): a put then
            # writes one randomly keyed index entry (the artifact id) instead of two, which
            # halves what a batch of puts dirties in the store. ``leaf_pending`` = the record
            # still has to enter the SMT at the next epoch commit (a partial index finds them).
            "ALTER TABLE artifacts ADD COLUMN leaf_record TEXT",
            "ALTER TABLE artifacts ADD COLUMN leaf_pending INTEGER NOT NULL DEFAULT 0",
            """UPDATE artifacts SET
                leaf_record = (SELECT s.record_json FROM smt_leaves s
                               WHERE s.artifact_id = artifacts.artifact_id),
                leaf_pending = COALESCE((SELECT s.pending FROM smt_leaves s
                                         WHERE s.artifact_id = artifacts.artifact_id), 0)""",
            "DROP TABLE smt_leaves",
            """CREATE INDEX idx_artifacts_leaf_pending ON artifacts(leaf_pending)
                WHERE leaf_pending = 1""",
        ),
    ),
    Migration(
        10,
        "key_tree_standby_roots",
        (
            # A root key made in the backend by the write that destroyed the previous root and
            # used by the tree's next forget (docs/adr/0008): a forget then makes no root key
            # of its own. NULL while there is none.
            "ALTER TABLE key_tree_heads ADD COLUMN standby_root TEXT",
        ),
    ),
    Migration(
        12,
        "key_tree_leaves_in_artifacts",
        (
            # An artifact's row holds its key-tree leaves: per capability, the slot in its tree
            # and the capability key wrapped under the leaf key (docs/adr/0010). A put writes no
            # row keyed by the random artifact id but its own (since docs/adr/0014 a forget
            # does not write the row at all).
            "ALTER TABLE artifacts ADD COLUMN decrypt_slot {bigint}",
            "ALTER TABLE artifacts ADD COLUMN decrypt_key {blob}",
            "ALTER TABLE artifacts ADD COLUMN prove_slot {bigint}",
            "ALTER TABLE artifacts ADD COLUMN prove_key {blob}",
            "ALTER TABLE artifacts ADD COLUMN recover_slot {bigint}",
            "ALTER TABLE artifacts ADD COLUMN recover_key {blob}",
            # Leaves erased in place (an empty wrapped key, migration 10) stay erased: NULL.
            """UPDATE artifacts SET
                decrypt_slot = (SELECT k.tree_slot FROM artifact_keys k
                    WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'decrypt' AND k.key_tree = 'wrap'),
                decrypt_key = (SELECT CASE WHEN length(k.wrapped) > 0 THEN k.wrapped END
                    FROM artifact_keys k WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'decrypt' AND k.key_tree = 'wrap'),
                prove_slot = (SELECT k.tree_slot FROM artifact_keys k
                    WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'prove' AND k.key_tree = 'wrap'),
                prove_key = (SELECT CASE WHEN length(k.wrapped) > 0 THEN k.wrapped END
                    FROM artifact_keys k WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'prove' AND k.key_tree = 'wrap'),
                recover_slot = (SELECT k.tree_slot FROM artifact_keys k
                    WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'recover' AND k.key_tree = 'escrow'),
                recover_key = (SELECT CASE WHEN length(k.wrapped) > 0 THEN k.wrapped END
                    FROM artifact_keys k WHERE k.artifact_id = artifacts.artifact_id
                    AND k.capability = 'recover' AND k.key_tree = 'escrow')""",
            "DROP TABLE artifact_keys",
        ),
    ),
    Migration(
        13,
        "pending_forget_events",
        (
            # The events no epoch has executed yet, in log order: each forget request counts
            # them and each epoch reads them, which scanned every event ever logged.
            """CREATE INDEX idx_forget_events_pending ON forget_events(log_index)
                WHERE epoch IS NULL""",
        ),
    ),
    Migration(
        14,
        "receipt_log_index",
        (
            # Where a destruction receipt was appended to the log, in its own row: the receipts
            # not logged yet are found through a partial index, where each epoch compared every
            # receipt ever recorded with the table of logged ones.
            "ALTER TABLE destruction_receipts ADD COLUMN log_index {bigint}",
            """UPDATE destruction_receipts SET log_index = (SELECT l.log_index
                FROM logged_receipts l WHERE l.receipt_hash = destruction_receipts.receipt_hash)""",
            """CREATE INDEX idx_destruction_receipts_unlogged
                ON destruction_receipts(destroyed_at, receipt_hash) WHERE log_index IS NULL""",
            "DROP TABLE logged_receipts",
        ),
    ),
    Migration(
        15,
        "key_store_binding",
        (
            # The key store this database belongs to and the generation both sides share
            # (docs/adr/0016): a database older than its key store is refused, not "repaired".
            """CREATE TABLE key_store_binding (
                singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
                store_id TEXT NOT NULL,
                node TEXT NOT NULL,
                generation {bigint} NOT NULL
            )""",
            # Every root key is named here, committed, before the backend makes it: recovery
            # destroys only roots planned here and never adopted, never "whatever is not named".
            """CREATE TABLE key_root_plans (
                key_ref TEXT PRIMARY KEY,
                tree TEXT NOT NULL,
                generation {bigint} NOT NULL,
                state TEXT NOT NULL,
                planned_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_key_root_plans_planned ON key_root_plans(state) "
            "WHERE state = 'planned'",
            # The standby root a forget batch's destruction makes, planned by its intent.
            "ALTER TABLE key_tree_journal ADD COLUMN next_root TEXT",
            "ALTER TABLE key_tree_journal ADD COLUMN next_generation {bigint}",
        ),
    ),
    Migration(
        17,
        "decrypt_forgotten_states",
        (
            # Reads of an artifact whose decrypt key an executed level-1 or level-2 forget
            # destroyed say "forgotten". Earlier builds left such rows naming another request
            # (a forget of other capabilities first, or a later revocation), and reads then
            # failed as if the stored data were altered (docs/adr/0019).
            """UPDATE artifact_states SET status = 'forgotten',
                level = (SELECT r.level FROM forget_events e JOIN forget_requests r
                    ON r.id = e.request_id WHERE e.artifact_id = artifact_states.artifact_id
                    AND e.epoch > 0 AND r.level >= 1 AND r.capabilities LIKE '%"decrypt"%'
                    ORDER BY e.log_index DESC LIMIT 1),
                capabilities = (SELECT r.capabilities FROM forget_events e JOIN forget_requests r
                    ON r.id = e.request_id WHERE e.artifact_id = artifact_states.artifact_id
                    AND e.epoch > 0 AND r.level >= 1 AND r.capabilities LIKE '%"decrypt"%'
                    ORDER BY e.log_index DESC LIMIT 1),
                request_id = (SELECT r.id FROM forget_events e JOIN forget_requests r
                    ON r.id = e.request_id WHERE e.artifact_id = artifact_states.artifact_id
                    AND e.epoch > 0 AND r.level >= 1 AND r.capabilities LIKE '%"decrypt"%'
                    ORDER BY e.log_index DESC LIMIT 1)
                WHERE NOT (status = 'forgotten' AND capabilities LIKE '%"decrypt"%')
                AND EXISTS (SELECT 1 FROM forget_events e JOIN forget_requests r
                    ON r.id = e.request_id WHERE e.artifact_id = artifact_states.artifact_id
                    AND e.epoch > 0 AND r.level >= 1 AND r.capabilities LIKE '%"decrypt"%')""",
            """INSERT INTO artifact_states (artifact_id, status, level, capabilities, request_id,
                updated_at)
                SELECT e.artifact_id, 'forgotten', r.level, r.capabilities, r.id, r.requested_at
                FROM forget_events e JOIN forget_requests r ON r.id = e.request_id
                WHERE e.epoch > 0 AND r.level >= 1 AND r.capabilities LIKE '%"decrypt"%'
                AND NOT EXISTS (SELECT 1 FROM artifact_states s
                    WHERE s.artifact_id = e.artifact_id)
                AND e.log_index = (SELECT MAX(e2.log_index) FROM forget_events e2
                    JOIN forget_requests r2 ON r2.id = e2.request_id
                    WHERE e2.artifact_id = e.artifact_id AND e2.epoch > 0 AND r2.level >= 1
                    AND r2.capabilities LIKE '%"decrypt"%')""",
        ),
    ),
    Migration(
        16,
        "legal_hold_openings",
        (
            # A hold's log entry carries a commitment to its authority and reason, not the
            # authority itself (ADR 0017); the node keeps each opening, as it keeps a forget
            # request's. Holds placed before carry their authority in clear: NULL.
            "ALTER TABLE legal_holds ADD COLUMN opening TEXT",
            "ALTER TABLE legal_holds ADD COLUMN release_opening TEXT",
        ),
    ),
    Migration(
        18,
        "witnesses",
        (
            # DESIGN.md §17, docs/adr/0021. As a witness: the logs this node witnesses, with the
            # latest checkpoint it cosigned for each (size 0 and no root before the first).
            """CREATE TABLE witnessed_logs (
                origin TEXT PRIMARY KEY,
                verifier_key TEXT NOT NULL,
                size {bigint} NOT NULL,
                root {blob},
                note TEXT,
                added_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            # Every checkpoint it cosigned, so a fork presented at any size it cosigned is
            # caught, not only at the latest one.
            """CREATE TABLE witness_cosigned (
                origin TEXT NOT NULL,
                size {bigint} NOT NULL,
                root {blob} NOT NULL,
                note TEXT NOT NULL,
                cosigned_at TEXT NOT NULL,
                PRIMARY KEY (origin, size)
            )""",
            # Equivocation evidence: the checkpoint it cosigned and the one presented after.
            """CREATE TABLE witness_equivocations (
                id TEXT PRIMARY KEY,
                origin TEXT NOT NULL,
                size {bigint} NOT NULL,
                first_note TEXT NOT NULL,
                second_note TEXT NOT NULL,
                second_root {blob} NOT NULL,
                detected_at TEXT NOT NULL,
                UNIQUE (origin, size, second_root)
            )""",
            # As a log: the witnesses it asks, and the size each last told it (tlog-witness's
            # "old size" of the next request).
            """CREATE TABLE log_witnesses (
                name TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                verifier_key TEXT NOT NULL,
                size {bigint} NOT NULL,
                added_at TEXT NOT NULL
            )""",
            # The cosignatures it got, per checkpoint (epoch): appended to the note it serves.
            """CREATE TABLE checkpoint_cosignatures (
                epoch {bigint} NOT NULL,
                witness TEXT NOT NULL,
                line TEXT NOT NULL,
                cosigned_at {bigint} NOT NULL,
                received_at TEXT NOT NULL,
                PRIMARY KEY (epoch, witness)
            )""",
        ),
    ),
    Migration(
        19,
        "recall_memory_store",
        (
            # DESIGN.md §11 (docs/adr/0025): facts get their validity time and content hash;
            # every fact's value, literal or ref, is an artifact (value_artifact_id), so that
            # forgetting an entity's artifacts forgets its facts and edges alike.
            "ALTER TABLE facts ADD COLUMN valid_from TEXT",
            "ALTER TABLE facts ADD COLUMN fact_hash TEXT",
            "CREATE INDEX idx_facts_fact_hash ON facts(fact_hash)",
            "CREATE INDEX idx_facts_value_artifact ON facts(value_artifact_id)",
            # Memory cards: the text is an artifact; related entities in a row each.
            """CREATE TABLE memory_cards (
                id TEXT PRIMARY KEY,
                about_entity TEXT NOT NULL,
                text_artifact_id TEXT NOT NULL REFERENCES artifacts(artifact_id),
                scope TEXT NOT NULL,
                created_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_memory_cards_about ON memory_cards(about_entity)",
            "CREATE INDEX idx_memory_cards_artifact ON memory_cards(text_artifact_id)",
            """CREATE TABLE memory_card_entities (
                card_id TEXT NOT NULL REFERENCES memory_cards(id),
                position INTEGER NOT NULL,
                entity_uri TEXT NOT NULL,
                PRIMARY KEY (card_id, position)
            )""",
            "CREATE INDEX idx_memory_card_entities_uri ON memory_card_entities(entity_uri)",
            # Keyed hashes of the word tokens of a tombstoned entity's aliases (its ``name``
            # and ``alias`` facts), one row per alias, taken when the tombstone is stored and
            # before the facts are forgotten (§23.3.2 rule 3): never the alias itself.
            """CREATE TABLE tombstone_alias_tokens (
                tombstone_id TEXT NOT NULL REFERENCES tombstones(id),
                alias_index INTEGER NOT NULL,
                token_hashes TEXT NOT NULL,
                PRIMARY KEY (tombstone_id, alias_index)
            )""",
            # The scopes an API key may read and write (JSON arrays); NULL = every scope.
            "ALTER TABLE api_keys ADD COLUMN read_scopes TEXT",
            "ALTER TABLE api_keys ADD COLUMN write_scopes TEXT",
        ),
        {
            # Full-text documents (a fact's literal value, a card's text): derived data,
            # deleted with their artifact at level >= 1 in the epoch that executes it.
            "sqlite": (
                """CREATE TABLE recall_documents (
                    doc_id INTEGER PRIMARY KEY,
                    record_id TEXT NOT NULL UNIQUE,
                    record_kind TEXT NOT NULL CHECK (record_kind IN ('fact', 'card')),
                    artifact_id TEXT NOT NULL,
                    doc_length INTEGER NOT NULL
                )""",
                "CREATE INDEX idx_recall_documents_artifact ON recall_documents(artifact_id)",
                "CREATE VIRTUAL TABLE recall_fts USING fts5(body, "
                "tokenize = 'unicode61 remove_diacritics 0')",
            ),
            "postgresql": (
                """CREATE TABLE recall_documents (
                    doc_id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                    record_id TEXT NOT NULL UNIQUE,
                    record_kind TEXT NOT NULL CHECK (record_kind IN ('fact', 'card')),
                    artifact_id TEXT NOT NULL,
                    doc_length INTEGER NOT NULL,
                    body TSVECTOR NOT NULL
                )""",
                "CREATE INDEX idx_recall_documents_artifact ON recall_documents(artifact_id)",
                "CREATE INDEX idx_recall_documents_body ON recall_documents USING GIN (body)",
            ),
        },
    ),
    Migration(
        20,
        "federation",
        (
            # Peers pinned by verifier key (DESIGN.md §12); ``token`` is the capability token
            # the peer issued us, presented on every request to it.
            """CREATE TABLE federation_peers (
                name TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                verifier_key TEXT NOT NULL,
                anchor_key_id TEXT NOT NULL,
                token TEXT,
                state TEXT NOT NULL,
                reputation TEXT NOT NULL,
                pull_cursor TEXT,
                added_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            # Capability tokens this node issued (PASETO v4.public); a jti not here is refused.
            """CREATE TABLE capability_tokens (
                jti TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                verbs TEXT NOT NULL,
                issued_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            # Every record this node holds, in the order it stored them: the pull route's
            # cursor is a position in this feed (seed 002 §23.4.3).
            """CREATE TABLE federation_feed (
                seq {bigint} PRIMARY KEY,
                record_id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL
            )""",
            """INSERT INTO federation_feed (seq, record_id, kind)
                SELECT ROW_NUMBER() OVER (ORDER BY stored_at, id), id, 'tombstone'
                FROM tombstones""",
            """INSERT INTO federation_feed (seq, record_id, kind)
                SELECT (SELECT COUNT(*) FROM tombstones)
                    + ROW_NUMBER() OVER (ORDER BY stored_at, id), id, 'revocation'
                FROM tombstone_revocations""",
            # The durable outbox: one row per record (or ack) and peer, written in the
            # transaction that stores the record.
            """CREATE TABLE federation_outbox (
                record_id TEXT NOT NULL,
                peer TEXT NOT NULL,
                kind TEXT NOT NULL,
                created_at TEXT NOT NULL,
                attempts {bigint} NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                delivered_at TEXT,
                last_error TEXT,
                PRIMARY KEY (record_id, peer, kind)
            )""",
            """CREATE INDEX idx_federation_outbox_due
                ON federation_outbox(delivered_at, next_attempt_at)""",
            # Signed acknowledgements received from peers, as received.
            """CREATE TABLE federation_acks (
                tombstone_id TEXT NOT NULL,
                peer TEXT NOT NULL,
                ack_json TEXT NOT NULL,
                status TEXT NOT NULL,
                detail TEXT NOT NULL,
                received_at TEXT NOT NULL,
                PRIMARY KEY (tombstone_id, peer)
            )""",
            # Inbound records whose signer's manifest could not be had yet: kept, retried,
            # shown to the operator, never dropped (§23.4.2).
            """CREATE TABLE federation_unverified (
                record_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                record_json TEXT NOT NULL,
                received_from TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts {bigint} NOT NULL DEFAULT 0,
                last_error TEXT NOT NULL,
                first_seen TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        23,
        "federation_relayed_acks",
        (
            # An ack signed by a node further away, relayed unchanged by the peer named here
            # (docs/adr/0028); NULL for an ack the acking peer sent itself.
            "ALTER TABLE federation_acks ADD COLUMN via TEXT",
        ),
    ),
    Migration(
        25,
        "erasure_requests",
        (
            # DESIGN.md §18 (docs/adr/0032): an erasure request from receipt to report. It
            # holds the entity URI (the request itself is personal data, admin keys only);
            # the audit log gets its commitment, whose opening is kept here.
            """CREATE TABLE erasure_requests (
                id TEXT PRIMARY KEY,
                entity_uri TEXT NOT NULL,
                scope TEXT NOT NULL,
                regime TEXT NOT NULL,
                requestor TEXT NOT NULL,
                commitment TEXT NOT NULL,
                opening TEXT NOT NULL,
                status TEXT NOT NULL,
                step TEXT,
                received_at TEXT NOT NULL,
                verified_at TEXT,
                completed_at TEXT,
                updated_at TEXT NOT NULL,
                tombstone_id TEXT,
                pause_reason TEXT,
                last_error TEXT,
                attempts {bigint} NOT NULL DEFAULT 0,
                next_attempt_at TEXT,
                checkpoint_epoch {bigint},
                pof_bundle TEXT
            )""",
            "CREATE INDEX idx_erasure_requests_status ON erasure_requests(status)",
            # Every extension of the due date, with its recorded reason (GDPR Art. 12(3)).
            """CREATE TABLE erasure_request_extensions (
                request_id TEXT NOT NULL REFERENCES erasure_requests(id),
                seq {bigint} NOT NULL,
                days {bigint} NOT NULL,
                reason TEXT NOT NULL,
                extended_at TEXT NOT NULL,
                actor TEXT,
                PRIMARY KEY (request_id, seq)
            )""",
            # Every status change, for the report's timeline (the audit log has them too).
            """CREATE TABLE erasure_request_transitions (
                request_id TEXT NOT NULL REFERENCES erasure_requests(id),
                seq {bigint} NOT NULL,
                from_status TEXT,
                to_status TEXT NOT NULL,
                step TEXT,
                at TEXT NOT NULL,
                actor TEXT,
                PRIMARY KEY (request_id, seq)
            )""",
        ),
    ),
    Migration(
        26,
        "console_sessions",
        (
            # Operator console sessions (DESIGN.md §18, docs/adr/0033): the cookie holds a
            # random token, the table only its hash, with the admin key that signed in and the
            # session's CSRF token. Rows are deleted at sign-out and when they expire.
            """CREATE TABLE console_sessions (
                token_hash TEXT PRIMARY KEY,
                api_key_id TEXT NOT NULL,
                csrf_token TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL
            )""",
            "CREATE INDEX idx_console_sessions_expiry ON console_sessions(expires_at)",
        ),
    ),
    Migration(
        21,
        "beliefs",
        (
            # Encrypted beliefs (DESIGN.md §12, seed 001), shared from here or received. The
            # belief key is never here: it is the plaintext of the artifact ``key_artifact_id``
            # (entity ``belief:<id>``), so forgetting that artifact forgets the belief
            # (docs/adr/0024). ``state``: pending_federation (nothing has left the node),
            # federated (a delivery has started), received, withdrawn (deleted in the grace
            # period: ciphertext dropped, key forgotten, no tombstone).
            """CREATE TABLE beliefs (
                id TEXT PRIMARY KEY,
                origin TEXT NOT NULL,
                envelope_json TEXT NOT NULL,
                ciphertext {blob},
                key_artifact_id TEXT NOT NULL,
                state TEXT NOT NULL,
                received_from TEXT,
                created_at TEXT NOT NULL,
                deliver_after TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        22,
        "federation non-compliance",
        (
            # Probes of the peers a belief tombstone went to, after its ack deadline
            # (DESIGN.md §12, docs/adr/0027): one row per tombstone and peer, so a restarted
            # node resumes them. ``belief_recipient``: the belief itself went to that peer, so
            # it is probed even when its ack proved the forgetting.
            """CREATE TABLE federation_probes (
                tombstone_id TEXT NOT NULL,
                peer TEXT NOT NULL,
                belief_id TEXT NOT NULL,
                belief_recipient INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL,
                attempts {bigint} NOT NULL DEFAULT 0,
                findings {bigint} NOT NULL DEFAULT 0,
                next_probe_at TEXT NOT NULL,
                last_probe_at TEXT,
                last_result TEXT,
                PRIMARY KEY (tombstone_id, peer)
            )""",
            "CREATE INDEX idx_federation_probes_due ON federation_probes(state, next_probe_at)",
            # Signed evidence of non-compliance (oblivio.noncompliance-evidence.v1), as kept.
            """CREATE TABLE federation_evidence (
                id TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                tombstone_id TEXT NOT NULL,
                finding TEXT NOT NULL,
                evidence_json TEXT NOT NULL,
                found_at TEXT NOT NULL
            )""",
            # What a peer's reputation is computed from: violations and reinstatements.
            """CREATE TABLE peer_reputation_events (
                id TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                kind TEXT NOT NULL,
                at TEXT NOT NULL,
                evidence_id TEXT
            )""",
            "CREATE INDEX idx_peer_reputation_events_peer ON peer_reputation_events(peer, at)",
        ),
    ),
)


def _ordered(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    ordered = tuple(sorted(migrations, key=lambda m: m.version))
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"schema migrations: duplicate versions in {versions}")
    return ordered


MIGRATIONS = _ordered(MIGRATIONS)
LATEST_VERSION = MIGRATIONS[-1].version


def _current_version(tx: Transaction) -> int:
    row = tx.fetchone("SELECT MAX(version) FROM schema_migrations")
    return int(row[0]) if row and row[0] is not None else 0


def migrate(db: Database, now: datetime | None = None) -> list[Migration]:
    """Bring ``db`` to the latest schema; return the migrations applied (empty if none).

    Safe to run from several processes at once. Raises SchemaVersionError if the database is
    newer than this build, StorageError if the database fails.
    """
    applied_at = format_time(now or datetime.now(UTC))
    with db.transaction() as tx:
        if tx.dialect == "postgresql":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        current = _current_version(tx)
        if current > LATEST_VERSION:
            raise SchemaVersionError(
                f"store: database schema is at version {current}, newer than this oblivio "
                f"knows ({LATEST_VERSION}); upgrade oblivio"
            )
        # Every known version not yet recorded, in order: a migration that landed after later
        # versions were applied somewhere is still applied there.
        applied = {int(r[0]) for r in tx.fetchall("SELECT version FROM schema_migrations")}
        pending = [m for m in MIGRATIONS if m.version not in applied]
        for migration in pending:
            for statement in migration.statements + migration.by_dialect.get(tx.dialect, ()):
                tx.execute(db.ddl(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, applied_at),
            )
    return pending


def schema_version(db: Database) -> int:
    """The version recorded in the database (0 for an empty one)."""
    with db.transaction(write=False) as tx:
        exists = tx.fetchone(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_migrations' "
            "AND table_schema = current_schema()"
            if tx.dialect == "postgresql"
            else "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        )
        return _current_version(tx) if exists else 0
