"""Verifiable structures (DESIGN.md §6, §7): SMT batch updates, SMT proofs, log appends and proofs.

Figures, each printed as one JSON object per line (then a short summary):

- ``smt_updates``: batched updates per second into an ``oblivio-smt-v1`` tree of N leaves
  (10^4, 10^5, 10^6), half new keys and half changed values, in memory (``core/smt.py``) and
  committed to a SQLite store (``store/smt_nodes.py``, synchronous=FULL), and the time a fresh
  process takes to open that store (lazily) and to load all of it. Peer in the same run:
  py-trie's ``trie.smt.SparseMerkleTree`` (keccak, 256 levels, one ``set`` per update, in
  memory). py-trie's cost per update does not depend on N (every ``set`` hashes 256 levels), and
  filling it with 10^6 keys would take the better part of an hour, so it is filled with at most
  ``--peer-fill`` keys; the figure says how many.
- ``smt_proofs``: at the largest N, the JCS size of inclusion and non-inclusion proofs and the
  time to parse and verify one; py-trie's branch (256 hashes) and its ``calc_root`` check as peer.
- ``log``: durable appends per second (``store/event_log.py`` on SQLite, in batches) against
  pymerkle's in-memory ``InmemoryTree.append_entry``, and inclusion/consistency proof generation
  per second for both at the same size.

Usage::

    .venv/bin/python benchmarks/verifiable_structures.py [--sizes 10000,100000,1000000]
        [--batch N/10] [--batches 2] [--peer-fill 10000] [--log-entries 100000]

An epoch commits one batch; the default batch is a tenth of the tree (100,000 at 10^6).

Needs the ``bench`` extra (``trie``, ``eth-hash[pycryptodome]``, ``pymerkle``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oblivio.core.canonical import canonical_json, parse_json
from oblivio.core.merkle_log import leaf_hash
from oblivio.core.smt import (
    SmtProof,
    SparseMerkleTree,
    verify_inclusion,
    verify_non_inclusion,
)
from oblivio.store.database import open_database
from oblivio.store.event_log import EventLog
from oblivio.store.migrations import migrate
from oblivio.store.smt_nodes import SmtNodeStore


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - benchmark data, not secrets


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _batches(
    rng: random.Random, keys: list[bytes], updates: int, batch: int
) -> list[dict[bytes, bytes | None]]:
    """``updates`` updates in batches: half new keys, half new values for existing keys."""
    out = []
    for start in range(0, updates, batch):
        size = min(batch, updates - start)
        b: dict[bytes, bytes | None] = {
            rng.randbytes(32): rng.randbytes(32) for _ in range(size // 2)
        }
        for key in rng.sample(keys, size - len(b)):
            b[key] = rng.randbytes(32)
        out.append(b)
    return out


def _sqlite_uri(directory: str, name: str) -> str:
    return "sqlite:///" + str(Path(directory) / name).lstrip("/")


def _stored_rate(
    uri: str, initial: dict[bytes, bytes], batches: list[dict[bytes, bytes | None]], root: bytes
) -> dict[str, float]:
    """Commit the batches to the store at ``uri``, each batch one durable transaction; then
    open the store afresh. Returns the initial fill seconds, the updates per second, and the
    open figures: the latest root (``open_s``), a first proof, and every group loaded."""
    with open_database(uri) as db:
        migrate(db)
        store = SmtNodeStore(db)
        fill_s = _timed(lambda: store.commit_batch(initial))
        stored_s = 0.0
        for b in batches:
            start = time.perf_counter()
            store.commit_batch(b)
            stored_s += time.perf_counter() - start
        if store.tree().root != root:
            raise AssertionError("store and memory disagree")
        fresh = SmtNodeStore(db)
        open_s = _timed(fresh.root)
        key = next(iter(initial))
        proof_s = _timed(lambda: fresh.prove(key))
        # Every group read, rebuilt and checked: what opening cost before loading was lazy.
        load_all_s = _timed(lambda: sum(1 for _ in SmtNodeStore(db).tree().leaves()))
    return {
        "fill_s": fill_s,
        "per_s": sum(len(b) for b in batches) / stored_s,
        "open_s": open_s,
        "first_proof_s": proof_s,
        "load_all_s": load_all_s,
    }


def _fresh_postgres_schema(url: str) -> str:
    """A URI of a new, empty schema on the server at ``url`` (dropped by ``_drop_schema``)."""
    import psycopg

    schema = f"oblivio_bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-c%20search_path%3D{schema}"


def _drop_schema(url: str, uri: str) -> None:
    import psycopg

    schema = uri.rsplit("%3D", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def smt_updates(
    n: int, batch: int, updates: int, peer_fill: int, workdir: str, *, postgres: str | None
) -> dict[str, Any]:
    rng = _rng(n)
    initial = {rng.randbytes(32): rng.randbytes(32) for _ in range(n)}
    keys = list(initial)
    batches = _batches(rng, keys, updates, batch)

    # In memory: the core algorithm.
    tree, _ = SparseMerkleTree().apply(initial, 1)
    version = 1
    memory_s = memory_cpu_s = 0.0
    for b in batches:
        version += 1
        start, start_cpu = time.perf_counter(), time.process_time()
        tree, _ = tree.apply(b, version)
        memory_s += time.perf_counter() - start
        memory_cpu_s += time.process_time() - start_cpu

    # Committed to SQLite (synchronous=FULL): the same batches, each one durable transaction.
    sqlite = _stored_rate(_sqlite_uri(workdir, f"smt-{n}.db"), initial, batches, tree.root)
    sqlite_rate = sqlite["per_s"]
    db_bytes = sum(p.stat().st_size for p in Path(workdir).glob(f"smt-{n}.db*") if p.is_file())
    postgres_rate = None
    if postgres:
        uri = _fresh_postgres_schema(postgres)
        try:
            postgres_rate = _stored_rate(uri, initial, batches, tree.root)["per_s"]
        finally:
            _drop_schema(postgres, uri)

    peer = pytrie_updates(rng, min(n, peer_fill), min(updates, 2000))
    ours = updates / memory_s
    return {
        "figure": "smt_updates",
        "leaves": n,
        "batch": batch,
        "updates": updates,
        "memory_updates_per_s": round(ours),
        # The same, per second of this process's CPU: steadier on a shared machine.
        "memory_updates_per_cpu_s": round(updates / memory_cpu_s),
        "sqlite_updates_per_s": round(sqlite_rate),
        "postgresql_updates_per_s": None if postgres_rate is None else round(postgres_rate),
        "sqlite_initial_fill_s": round(sqlite["fill_s"], 2),
        "sqlite_bytes": db_bytes,
        # A fresh process opening the store: the latest root (groups load lazily), the first
        # proof (one group read), and every group loaded and checked.
        "sqlite_open_s": round(sqlite["open_s"], 3),
        "sqlite_first_proof_ms": round(sqlite["first_proof_s"] * 1e3, 1),
        "sqlite_load_all_groups_s": round(sqlite["load_all_s"], 2),
        "peer": "py-trie trie.smt.SparseMerkleTree (in memory)",
        "peer_filled_with": peer["filled"],
        "peer_updates_per_s": round(peer["per_s"]),
        "ratio_memory_vs_peer": round(ours / peer["per_s"], 1),
        "ratio_sqlite_vs_peer": round(sqlite_rate / peer["per_s"], 1),
    }


def pytrie_updates(rng: random.Random, fill: int, updates: int) -> dict[str, float]:
    from trie.smt import SparseMerkleTree as PyTrieSMT

    smt = PyTrieSMT(key_size=32)
    keys = [rng.randbytes(32) for _ in range(fill)]
    for key in keys:
        smt.set(key, rng.randbytes(32))
    pairs = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(updates)]

    def run() -> None:
        for key, value in pairs:
            smt.set(key, value)

    return {"filled": fill, "per_s": updates / _timed(run)}


def smt_proofs(n: int, samples: int) -> dict[str, Any]:
    rng = _rng(n + 1)
    leaves = {rng.randbytes(32): rng.randbytes(32) for _ in range(n)}
    tree, _ = SparseMerkleTree().apply(leaves, 1)
    root = tree.root
    present = rng.sample(list(leaves), samples)
    absent = [rng.randbytes(32) for _ in range(samples)]
    inclusion = [canonical_json(tree.prove(k).to_dict()) for k in present]
    exclusion = [canonical_json(tree.prove(k).to_dict()) for k in absent]

    def verify_all() -> None:
        for key, text in zip(present, inclusion, strict=True):
            verify_inclusion(root, key, leaves[key], SmtProof.from_dict(parse_json(text)))

    def verify_absent() -> None:
        for key, text in zip(absent, exclusion, strict=True):
            verify_non_inclusion(root, key, SmtProof.from_dict(parse_json(text)))

    verify_s = min(_timed(verify_all) for _ in range(3))
    absent_s = min(_timed(verify_absent) for _ in range(3))
    peer = pytrie_proofs(rng, min(samples, 500))
    sizes = [len(t) for t in inclusion]
    return {
        "figure": "smt_proofs",
        "leaves": n,
        "inclusion_json_bytes_mean": round(statistics.mean(sizes)),
        "inclusion_json_bytes_p50": sorted(sizes)[len(sizes) // 2],
        "inclusion_json_bytes_p99": sorted(sizes)[int(len(sizes) * 0.99)],
        "inclusion_json_bytes_max": max(sizes),
        "non_inclusion_json_bytes_mean": round(statistics.mean(len(t) for t in exclusion)),
        "siblings_mean": round(statistics.mean(len(tree.prove(k).siblings) for k in present), 2),
        "verify_us": round(verify_s / samples * 1e6, 1),
        "verify_non_inclusion_us": round(absent_s / samples * 1e6, 1),
        "peer": "py-trie branch (256 x 32-byte hashes) and trie.smt.calc_root",
        "peer_proof_bytes": peer["bytes"],
        "peer_verify_us": round(peer["verify_us"], 1),
    }


def pytrie_proofs(rng: random.Random, samples: int) -> dict[str, float]:
    from trie.smt import SparseMerkleTree as PyTrieSMT
    from trie.smt import calc_root

    smt = PyTrieSMT(key_size=32)
    pairs = [(rng.randbytes(32), rng.randbytes(32)) for _ in range(samples)]
    for key, value in pairs:
        smt.set(key, value)
    branches = [smt.branch(key) for key, _ in pairs]

    def run() -> None:
        for (key, value), branch in zip(pairs, branches, strict=True):
            if calc_root(key, value, branch) != smt.root_hash:
                raise AssertionError("py-trie proof failed")

    return {
        "bytes": sum(len(h) for h in branches[0]),
        "verify_us": _timed(run) / samples * 1e6,
    }


def log_figures(entries: int, batch: int, proofs: int, workdir: str) -> dict[str, Any]:
    from pymerkle import InmemoryTree

    data = [canonical_json({"type": "forget", "n": i}) for i in range(entries)]
    with open_database(_sqlite_uri(workdir, "log.db")) as db:
        migrate(db)
        log = EventLog(db)

        def append_ours() -> None:
            for start in range(0, entries, batch):
                log.append(data[start : start + batch])

        ours_s = _timed(append_ours)
        # Other batch sizes, each into a log of its own (an epoch may log fewer or more).
        other_batches = {}
        for size in (100, 10_000):
            with open_database(_sqlite_uri(workdir, f"log-{size}.db")) as other_db:
                migrate(other_db)
                other = EventLog(other_db)
                other_s = _timed(
                    lambda other=other, size=size: [
                        other.append(data[i : i + size]) for i in range(0, entries, size)
                    ]
                )
                other_batches[str(size)] = round(entries / other_s)
        peer = InmemoryTree(algorithm="sha256")

        def append_peer() -> None:
            for item in data:
                peer.append_entry(item)

        peer_s = _timed(append_peer)
        if peer.get_root() != log.root():
            raise AssertionError("pymerkle and oblivio disagree on the root")
        rng = _rng(entries)
        indices = [rng.randrange(entries) for _ in range(proofs)]
        firsts = [rng.randrange(1, entries) for _ in range(proofs)]
        leaf = leaf_hash(data[indices[0]])
        log.inclusion_proof(indices[0], entries).verify(leaf, log.root())
        ours_inc = _timed(lambda: [log.inclusion_proof(i, entries) for i in indices])
        ours_con = _timed(lambda: [log.consistency_proof(m, entries) for m in firsts])
        # pymerkle numbers leaves from 1.
        peer_inc = _timed(lambda: [peer.prove_inclusion(i + 1, entries) for i in indices])
        peer_con = _timed(lambda: [peer.prove_consistency(m, entries) for m in firsts])
    ours_rate = entries / ours_s
    peer_rate = entries / peer_s
    return {
        "figure": "log",
        "entries": entries,
        "batch": batch,
        "durable_appends_per_s": round(ours_rate),
        "peer": "pymerkle InmemoryTree (sha256, in memory)",
        "peer_appends_per_s": round(peer_rate),
        "ratio_appends_vs_peer": round(ours_rate / peer_rate, 2),
        "durable_appends_per_s_by_batch": other_batches,
        "inclusion_proofs_per_s": round(proofs / ours_inc),
        "peer_inclusion_proofs_per_s": round(proofs / peer_inc),
        "consistency_proofs_per_s": round(proofs / ours_con),
        "peer_consistency_proofs_per_s": round(proofs / peer_con),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument(
        "--batch", type=int, default=0, help="updates per batch (default: N/10, at least 1,000)"
    )
    parser.add_argument("--batches", type=int, default=2, help="batches timed per size")
    parser.add_argument("--peer-fill", type=int, default=10_000)
    parser.add_argument("--proof-samples", type=int, default=2_000)
    parser.add_argument("--log-entries", type=int, default=100_000)
    parser.add_argument("--log-batch", type=int, default=1_000)
    parser.add_argument("--log-proofs", type=int, default=2_000)
    parser.add_argument("--skip", default="", help="comma-separated: smt, proofs, log")
    parser.add_argument(
        "--postgres", help="also commit the SMT batches to this PostgreSQL server (a new schema)"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(s) for s in args.sizes.split(",")]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="oblivio-bench-") as workdir:
        if "smt" not in skip:
            for n in sizes:
                batch = args.batch or max(1_000, n // 10)
                results.append(
                    smt_updates(
                        n,
                        batch,
                        batch * args.batches,
                        args.peer_fill,
                        workdir,
                        postgres=args.postgres,
                    )
                )
                print(json.dumps(results[-1]), flush=True)
        if "proofs" not in skip:
            results.append(smt_proofs(max(sizes), args.proof_samples))
            print(json.dumps(results[-1]), flush=True)
        if "log" not in skip:
            results.append(log_figures(args.log_entries, args.log_batch, args.log_proofs, workdir))
            print(json.dumps(results[-1]), flush=True)
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
