"""Forgetting end to end on a store of N artifacts (issue 5's benchmark).

Prints one JSON object per figure, then a summary:

- the first forget after the fill, apart (it also checkpoints the fill's WAL);
- level-2 forgets per second in batches of 1, 100 and 10,000 (one request naming the batch,
  then one epoch commit; the total over several batches of each size, with the fastest, median
  and slowest batch), and the same batch sizes as one request per artifact;
- forget-to-signed-checkpoint latency p50/p99 with the server's timer epoch running;
- Proof of Forgetting generation and offline verification time, and proof size (compact JSON).

The peer measured in the same run is the node's own level-1 path (the same key-tree erasure and
epoch commit without the TOMBSTONE leaf and without proofs), so the cost of verifiability shows.

Usage: .venv/bin/python benchmarks/forgetting_bench.py [--artifacts 1000000] [--store URI]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from oblivio.core.pof import verify_proof
from oblivio.node.forgetting import ForgetSettings, ForgettingService
from oblivio.node.node import init_node
from oblivio.node.services import NodeServices, open_services
from oblivio.node.vault import ArtifactInput


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def fill(services: NodeServices, count: int) -> list[str]:
    ids: list[str] = []
    start = time.perf_counter()
    for first in range(0, count, 1000):
        batch = [
            ArtifactInput(secrets.token_bytes(128), {"n": first + i})
            for i in range(min(1000, count - first))
        ]
        ids.extend(services.node.vault.put_many(batch))
        if first and first % 100_000 == 0:
            print(f"# stored {first} artifacts", file=sys.stderr, flush=True)
    stored = time.perf_counter() - start
    start = time.perf_counter()
    services.forgetting.commit_due()
    emit(
        {
            "figure": "store",
            "artifacts": count,
            "put_per_s": count / stored,
            "first_epoch_s": time.perf_counter() - start,
        }
    )
    return ids


def first_forget(services: NodeServices, ids: list[str]) -> None:
    """The first forget after the fill, reported on its own: it also checkpoints the WAL the
    fill grew and makes the key trees' first new roots, costs of the fill, not of forgetting."""
    start = time.perf_counter()
    services.forgetting.forget(artifact_id=ids.pop(), level=2, authority="bench")
    assert services.forgetting.commit_due() is not None
    emit({"figure": "first_forget_after_fill", "seconds": time.perf_counter() - start})


REPEATS = {1: 50, 100: 20, 10_000: 5}
"""Batches measured per size: one batch is one sample of a store whose WAL checkpoints (in the
background) land in some batches and not others, so each figure is the total over several."""
REPEATS_ONE_REQUEST_PER_ARTIFACT = {1: 50, 100: 5, 10_000: 1}
"""The same with one durable request per artifact (about 4 ms each): fewer big batches."""


def forget_batches(
    services: NodeServices, ids: list[str], level: int, one_request: bool
) -> dict[int, float]:
    rates = {}
    plan = REPEATS if one_request else REPEATS_ONE_REQUEST_PER_ARTIFACT
    for size, repeats in plan.items():
        seconds = []
        for _ in range(repeats):
            batch = [ids.pop() for _ in range(size)]
            start = time.perf_counter()
            if one_request:
                services.forgetting.forget(artifact_id=batch, level=level, authority="bench")
            else:
                for artifact_id in batch:
                    services.forgetting.forget(
                        artifact_id=artifact_id, level=level, authority="bench"
                    )
            commit = services.forgetting.commit_due()
            seconds.append(time.perf_counter() - start)
            assert commit is not None
        rates[size] = size * repeats / sum(seconds)
        emit(
            {
                "figure": "forgets_per_s",
                "level": level,
                "batch": size,
                "batches": repeats,
                "requests": "one per batch" if one_request else "one per artifact",
                "forgets_per_s": rates[size],
                "batch_seconds_min": min(seconds),
                "batch_seconds_median": statistics.median(seconds),
                "batch_seconds_max": max(seconds),
            }
        )
    return rates


def latency(services: NodeServices, ids: list[str], samples: int, interval: float) -> None:
    forgetting = ForgettingService(
        services.node,
        services.checkpoints,
        ForgetSettings(batch_size=10_000, epoch_interval=timedelta(seconds=interval)),
    )
    stop = threading.Event()
    timer = threading.Thread(target=forgetting.run_epochs, args=(stop,), daemon=True)
    timer.start()
    waits = []
    try:
        for _ in range(samples):
            start = time.perf_counter()
            receipt = forgetting.forget(artifact_id=ids.pop(), level=2, authority="bench")
            while forgetting.status(receipt.request_id)["state"] != "done":
                time.sleep(0.0005)
            waits.append(time.perf_counter() - start)
    finally:
        stop.set()
        timer.join()
    waits.sort()
    emit(
        {
            "figure": "forget_to_checkpoint_latency_ms",
            "epoch_interval_ms": interval * 1000,
            "samples": samples,
            "p50": 1000 * statistics.median(waits),
            "p99": 1000 * waits[min(len(waits) - 1, int(0.99 * len(waits)))],
            "max": 1000 * waits[-1],
        }
    )


def proofs(services: NodeServices, forgotten: list[str], samples: int) -> None:
    vkey = services.checkpoints.verifier_key
    made = []
    start = time.perf_counter()
    for artifact_id in forgotten[:samples]:
        made.append(services.forgetting.prove(artifact_id))
    generate = (time.perf_counter() - start) / len(made)
    start = time.perf_counter()
    for proof in made:
        verify_proof(proof, vkey)
    verify = (time.perf_counter() - start) / len(made)
    sizes = [len(json.dumps(p, separators=(",", ":"))) for p in made]
    emit(
        {
            "figure": "proof",
            "samples": len(made),
            "generate_ms": 1000 * generate,
            "verify_ms": 1000 * verify,
            "size_bytes_mean": statistics.mean(sizes),
            "size_bytes_max": max(sizes),
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--artifacts", type=int, default=1_000_000)
    parser.add_argument("--store", help="store URI (default: SQLite in a temporary home)")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--epoch-interval-ms", type=float, default=10)
    args = parser.parse_args()
    needed = (
        2 * sum(size * n for size, n in REPEATS.items())
        + sum(size * n for size, n in REPEATS_ONE_REQUEST_PER_ARTIFACT.items())
        + args.latency_samples
        + 501
    )
    if args.artifacts < needed:
        parser.error(f"--artifacts must be at least {needed}")
    with tempfile.TemporaryDirectory() as tmp:
        node = init_node(Path(tmp) / "node", name="bench.example", store_uri=args.store)
        with open_services(node) as services:
            services.forgetting.settings = ForgetSettings(batch_size=10**9)
            ids = fill(services, args.artifacts)
            secrets.SystemRandom().shuffle(ids)
            first_forget(services, ids)
            level2 = forget_batches(services, ids, level=2, one_request=True)
            level1 = forget_batches(services, ids, level=1, one_request=True)
            forget_batches(services, ids, level=2, one_request=False)
            with services.node.db.transaction(write=False) as tx:
                forgotten = [
                    r[0]
                    for r in tx.fetchall(
                        "SELECT e.artifact_id FROM forget_events e JOIN forget_requests r "
                        "ON r.id = e.request_id WHERE e.epoch > 0 AND r.level = 2 LIMIT 500"
                    )
                ]
            proofs(services, forgotten, 200)
            latency(services, ids, args.latency_samples, args.epoch_interval_ms / 1000)
    print("\n# summary: level-2 forgets/s by batch (level-1 peer in brackets)")
    for size, rate in level2.items():
        print(f"#   batch {size:>6}: {rate:>9.0f}/s  [{level1[size]:>9.0f}/s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
