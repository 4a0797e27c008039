"""Recall latency with and without active tombstones (issue 13's benchmark).

Fills a store with N facts (default 100,000: 10 per entity, two ``ref`` edges per entity, the
rest literals drawn from a 2,000-word vocabulary) and measures, over the same query lists:

- ``oblivio``: ``RecallService.recall`` (the whole pipeline: candidates, scope filter,
  tombstone filter, BM25, packing, pagination, decrypting the page), for entity + 2-hop and for
  one-word text queries, on two stores holding the same data (on SQLite a file copy): one with
  0 active tombstones, one with T (default 10,000) active tombstones on other entity URIs (so
  both return the same results and the difference is the filter's own cost), the queries
  interleaved between them;
- ``peer_plain_sql``: the same queries as plain SQL over the same tables without any filter
  (a recursive CTE over ``ref`` edges; an FTS5 ``MATCH`` ranked by FTS5's ``bm25()``), then the
  same page of values decrypted through the vault in one batch (``get_many``, as recall reads
  its page), so that both sides return the same data the same way.

Prints one JSON object per figure (p50 and p99 in milliseconds), then a summary with the
tombstone filter's overhead at p50. Targets (issue 13): overhead <= 5 % at p50, recall p50 <=
10 ms on SQLite. Never a pass/fail gate.

Usage: .venv/bin/python benchmarks/recall_bench.py [--facts 100000] [--tombstones 10000]
       [--queries 300] [--store URI]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oblivio.core.identifiers import format_time
from oblivio.core.manifest import signer_uri
from oblivio.core.tombstones import TOMBSTONE_PREFIX, sign_tombstone
from oblivio.interfaces.progress import progress_display
from oblivio.node.api_keys import ApiKey
from oblivio.node.ids import new_record_id
from oblivio.node.node import init_node, open_node
from oblivio.node.recall.model import FactInput
from oblivio.node.recall.query import make_query
from oblivio.node.services import NodeServices, open_services
from oblivio.store.tombstones import TombstoneStore

KEY = ApiKey("bench", "bench", "admin")
FACTS_PER_ENTITY = 10
LIMIT = 50


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def fill(services: NodeServices, facts: int, rng: random.Random) -> tuple[list[str], list[str]]:
    entities = [f"user:u{n}" for n in range(max(1, facts // FACTS_PER_ENTITY))]
    vocabulary = [f"w{n}" for n in range(2000)]
    weights = [1 / (n + 1) for n in range(len(vocabulary))]  # Zipf-like
    batch: list[FactInput] = []
    start = time.perf_counter()
    for entity in entities:
        for n in range(FACTS_PER_ENTITY):
            if n < 2:
                value: dict[str, Any] = {"ref": rng.choice(entities)}
            else:
                words = rng.choices(vocabulary, weights, k=4)
                value = {"literal": " ".join(words)}
            batch.append(FactInput(entity, f"a{n}", value, "local", (), None))
            if len(batch) == 500:
                services.recall.add_facts(KEY, batch)
                batch = []
    if batch:
        services.recall.add_facts(KEY, batch)
    emit(
        {
            "figure": "fill",
            "facts": len(entities) * FACTS_PER_ENTITY,
            "entities": len(entities),
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    return entities, vocabulary


def add_tombstones(services: NodeServices, count: int) -> None:
    """``count`` active, signed tombstones on entity URIs the store holds nothing about."""
    store = TombstoneStore(services.node.db)
    key = services.node.signing_key
    org = services.compliance.org
    services.compliance.own_manifest()
    now = format_time(datetime.now(UTC))
    for n in range(count):
        record = sign_tombstone(
            key,
            record_id=new_record_id(TOMBSTONE_PREFIX),
            entity_uri=f"user:gone{n}",
            scope="*",
            reason=None,
            signed_by=signer_uri(org, "bench"),
            created_at=now,
            legal_hold=False,
        )
        store.tombstone(record)
    services.recall.tombstones.invalidate()
    start = time.perf_counter()
    view = services.recall.tombstones.view()
    emit(
        {
            "figure": "tombstone_cache_reload",
            "active_tombstones": len(view.ids),
            "ms": round((time.perf_counter() - start) * 1000, 2),
        }
    )


def timed(
    runs: dict[str, Callable[[str], object]], inputs: list[str], stage: str
) -> dict[str, dict[str, float]]:
    """p50/p99 of each run over ``inputs``, the runs interleaved query by query (in rotating
    order) so that the machine's drift (other processes, cache warmth) weighs on all alike.
    Progress on standard error when it is a terminal (``stage`` names the bar)."""
    for run in runs.values():
        for value in inputs[:10]:
            run(value)  # warm caches
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs.items())
    with progress_display() as progress:
        for n, value in enumerate(inputs):
            # Each query starts with the next run in turn: no run always goes first.
            for name, run in order[n % len(order) :] + order[: n % len(order)]:
                start = time.perf_counter()
                run(value)
                samples[name].append((time.perf_counter() - start) * 1000)
            if progress is not None:
                progress(stage, n + 1, len(inputs))
    figures = {}
    for name, values in samples.items():
        values.sort()
        figures[name] = {
            "p50_ms": round(statistics.median(values), 3),
            "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))], 3),
        }
    return figures


def oblivio_entity(services: NodeServices) -> Callable[[str], object]:
    return lambda entity: services.recall.recall(
        KEY, make_query(entity=entity, hops=2, limit=LIMIT)
    )


def oblivio_text(services: NodeServices) -> Callable[[str], object]:
    return lambda word: services.recall.recall(KEY, make_query(q=word, limit=LIMIT))


def peer_entity(services: NodeServices) -> Callable[[str], object]:
    """Plain SQL: entities within 2 ref hops (both directions), their facts, a page, decrypted
    in one batch."""
    db, vault = services.node.db, services.node.vault
    sql = (
        "WITH RECURSIVE reach(uri, hop) AS (SELECT ?, 0 UNION "
        "SELECT CASE WHEN f.entity_uri = r.uri THEN f.ref_entity_uri ELSE f.entity_uri END, "
        "r.hop + 1 FROM facts f JOIN reach r ON (f.entity_uri = r.uri OR f.ref_entity_uri = r.uri) "
        "WHERE f.ref_entity_uri IS NOT NULL AND r.hop < 2), "
        "near(uri, hop) AS (SELECT uri, MIN(hop) FROM reach GROUP BY uri) "
        "SELECT f.id, f.value_artifact_id, f.ref_entity_uri FROM facts f JOIN near n "
        "ON n.uri = f.entity_uri ORDER BY n.hop, f.created_at, f.id LIMIT ?"
    )

    def run(entity: str) -> object:
        with db.transaction(write=False) as tx:
            rows = tx.fetchall(sql, (entity, LIMIT))
        values = vault.get_many([r[1] for r in rows if r[2] is None])
        return [values[r[1]] if r[2] is None else r[2] for r in rows]

    return run


def peer_text(services: NodeServices) -> Callable[[str], object]:
    """Plain SQL: FTS5 MATCH ranked by bm25(), a page, decrypted in one batch."""
    db, vault = services.node.db, services.node.vault

    def run(word: str) -> object:
        with db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT d.artifact_id FROM recall_fts x JOIN recall_documents d "
                "ON d.doc_id = x.rowid WHERE recall_fts MATCH ? ORDER BY bm25(recall_fts) "
                "LIMIT ?",
                (f'"{word}"', LIMIT),
            )
        values = vault.get_many([r[0] for r in rows])
        return [values[r[0]] for r in rows]

    return run


def two_stores(
    tmp: Path, args: argparse.Namespace
) -> tuple[NodeServices, NodeServices, list[str], list[str], random.Random]:
    """The store that keeps 0 tombstones and the one that gets T, holding the same data. On
    SQLite the second is a file copy of the first, page for page, so that the only difference
    is the active tombstones (two stores filled from the same seed differ in their random ids,
    keys and page layout: two runs measured them 10 % apart at p50, most of it layout, not the
    filter). On PostgreSQL both are
    filled from the same seed."""
    rng = random.Random(13)  # noqa: S311 - reproducible benchmark data, not secrets
    homes = [tmp / "clear", tmp / "tombstoned"]
    if args.store is None:
        clear = open_services(init_node(homes[0], name="bench"))
        entities, vocabulary = fill(clear, args.facts, rng)
        clear.close()
        shutil.copytree(homes[0], homes[1])
        clear, tombstoned = (open_services(open_node(home)) for home in homes)
        return clear, tombstoned, entities, vocabulary, rng
    clear, tombstoned = (
        open_services(
            init_node(home, name=f"bench-{home.name}", store_uri=f"{args.store}_{home.name}")
        )
        for home in homes
    )
    entities, vocabulary = fill(clear, args.facts, rng)
    fill(tombstoned, args.facts, random.Random(13))  # noqa: S311 - the same data
    return clear, tombstoned, entities, vocabulary, rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--tombstones", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--store", help="PostgreSQL URI prefix: _clear and _tombstoned databases (default SQLite)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clear, tombstoned, entities, vocabulary, rng = two_stores(Path(tmp), args)
        stores = [clear, tombstoned]
        try:
            add_tombstones(tombstoned, args.tombstones)
            entity_queries = [rng.choice(entities) for _ in range(args.queries)]
            # Words of middling frequency: each matches tens to a few thousand facts.
            text_queries = [rng.choice(vocabulary[20:400]) for _ in range(args.queries)]
            dialect = clear.node.db.dialect
            tombs = f"{args.tombstones}_tombstones"
            results: dict[str, dict[str, float]] = {}
            for kind, queries, ours, peer in (
                ("entity_2hop", entity_queries, oblivio_entity, peer_entity),
                ("text", text_queries, oblivio_text, peer_text),
            ):
                runs = {
                    f"oblivio/{kind}/0_tombstones": ours(clear),
                    f"oblivio/{kind}/{tombs}": ours(tombstoned),
                }
                if dialect == "sqlite":
                    runs[f"peer_plain_sql/{kind}"] = peer(clear)
                results |= timed(runs, queries, f"{kind} queries")
            for name, figures in results.items():
                emit({"figure": name, "store": dialect, "queries": args.queries, **figures})
            summary: dict[str, Any] = {"figure": "summary", "store": dialect}
            for kind in ("entity_2hop", "text"):
                base = results[f"oblivio/{kind}/0_tombstones"]["p50_ms"]
                loaded = results[f"oblivio/{kind}/{tombs}"]["p50_ms"]
                summary[f"{kind}_filter_overhead_p50_percent"] = round(
                    100 * (loaded - base) / base, 1
                )
                summary[f"{kind}_p50_ms"] = loaded
                peer_figures = results.get(f"peer_plain_sql/{kind}")
                if peer_figures is not None:
                    summary[f"{kind}_vs_peer_p50"] = round(loaded / peer_figures["p50_ms"], 2)
            emit(summary)
        finally:
            for services in stores:
                services.close()


if __name__ == "__main__":
    main()
