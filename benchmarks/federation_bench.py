"""Tombstone propagation across real ``oblivio serve`` processes on loopback (issue 12).

A line of N nodes (node-0 … node-{N-1}, default 4: three hops); node-0 issues tombstones. For
each mode, one JSON object per figure, then a summary:

- ``issue_to_applied_seconds``: from issue (201 at node-0) to stored-and-suppressing at the last
  node, p50/p99 over ``--tombstones`` issued one after another;
- ``partition_convergence``: node-1 is SIGKILLed, node-0 issues ``--bulk`` tombstones, node-1
  comes back ``--partition-seconds`` after the kill; seconds from its restart until the last node
  holds them all;
- ``volume`` (first mode only): ``--volume`` tombstones (10^4 by default) issued by
  ``--clients`` concurrent clients with every node up; seconds until the last node holds all.

Every figure counts, on every node but node-0, the tombstones *lost* (issued, not stored when
the wait ends) and *duplicated*: stored twice (impossible by the primary key, counted anyway),
audited ``tombstone_received`` more than once, or applied twice (more than one forget request
made from the same tombstone).

Modes (``--modes``):

- ``full``: push + pull + announcements, oblivio's default schedule (exponential backoff with
  full jitter, 1 s doubling to a 5 min cap, no retry limit).
- ``push-fixed``: the peer measured beside it — what a Mastodon-like fediverse server does.
  Tokens grant no ``tombstone:read`` (nothing is pulled, no announcements) and the pusher runs
  ``federation.push_schedule = "fixed"`` (a real mode of the node, not the default): Sidekiq's
  default retry delay ``count**4 + 15`` s for retries 0-15 and a limit of 16 retries, after
  which the delivery is dropped. That is Mastodon's ``ActivityPub::DeliveryWorker``
  (``sidekiq_options queue: 'push', retry: 16, dead: false`` and ``sidekiq_retry_in`` =
  ``(count**4) + 15`` plus a jitter of ``rand(0.5 * count**4)``, which is left out here so the
  schedule is fixed; mastodon/mastodon ``app/workers/activitypub/delivery_worker.rb``). Mastodon
  has no pull of deletions: a Delete not delivered within its retries is never delivered.
- ``push-backoff``: push alone with oblivio's own backoff (no pull, no announce).
- ``full-pg``: ``full`` with the middle nodes (node-1 … node-{N-2}) on PostgreSQL
  (``--postgres-url``), the others on SQLite.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.federation_bench [--peers 4] [--tombstones 200]
        [--bulk 1000] [--partition-seconds 60] [--volume 10000]
        [--modes full,push-fixed,full-pg] [--postgres-url postgresql://…/test]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from tests.processes import Served, cli, free_port, wait_until

from oblivio.interfaces.progress import progress_display
from oblivio.node.compliance import open_compliance
from oblivio.node.node import init_node, open_node

VERBS = {
    "full": "tombstone:read,tombstone:write,ack:write",
    "full-pg": "tombstone:read,tombstone:write,ack:write",
    "push-fixed": "tombstone:write,ack:write",
    "push-backoff": "tombstone:write,ack:write",
}
FEDERATION = {
    "full": {},
    "full-pg": {},
    "push-fixed": {"push_schedule": "fixed"},
    "push-backoff": {},
}


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


@dataclass
class Node(Served):
    """A served node and what the benchmark reads from its database."""

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        with open_node(self.home, recover=False) as node, node.db.transaction(write=False) as tx:
            return [tuple(r) for r in tx.fetchall(sql)]

    def held(self, ids: set[str]) -> int:
        return sum(1 for (i,) in self._rows("SELECT id FROM tombstones") if i in ids)

    def holds(self, tombstone_id: str) -> bool:
        return self.held({tombstone_id}) == 1

    def duplicated(self, ids: set[str]) -> dict[str, int]:
        """Per way a tombstone can be had twice, how many of ``ids`` were."""
        stored = self._rows("SELECT id, COUNT(*) FROM tombstones GROUP BY id HAVING COUNT(*) > 1")
        audited = self._rows(
            "SELECT subject, COUNT(*) FROM audit_log WHERE event = 'tombstone_received' "
            "GROUP BY subject HAVING COUNT(*) > 1"
        )
        applied = self._rows(
            "SELECT source, COUNT(*) FROM forget_requests GROUP BY source HAVING COUNT(*) > 1"
        )
        return {
            "stored": sum(1 for i, _ in stored if i in ids),
            "received": sum(1 for i, _ in audited if i in ids),
            "applied": sum(1 for i, _ in applied if i in ids),
        }


def count(nodes: list[Node], ids: list[str]) -> dict[str, Any]:
    """Lost and duplicated, per receiving node and in all."""
    wanted = set(ids)
    per_node = {}
    for node in nodes[1:]:
        twice = node.duplicated(wanted)
        per_node[node.name] = {"lost": len(wanted) - node.held(wanted), "duplicated": twice}
    return {
        "lost": sum(n["lost"] for n in per_node.values()),
        "duplicated": sum(sum(n["duplicated"].values()) for n in per_node.values()),
        "per_node": per_node,
    }


@contextmanager
def postgres_schemas(url: str, count: int) -> Iterator[list[str]]:
    """``count`` fresh schemas on the server at ``url`` (store URIs), dropped afterwards."""
    import psycopg
    from tests.conftest import _with_schema

    names = [f"oblivio_fedbench_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield [_with_schema(url, name) for name in names]
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in names:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


def build_line(root: Path, mode: str, size: int, stores: dict[int, str]) -> list[Node]:
    nodes: list[Node] = []
    for i in range(size):
        home = root / f"node-{i}"
        init_node(home, name=f"node-{i}.bench", store_uri=stores.get(i)).close()
        config = json.loads((home / "config.json").read_text())
        config["forgetting"] = {"epoch_interval_seconds": 1}
        config["federation"] = FEDERATION[mode]
        (home / "config.json").write_text(json.dumps(config))
        with open_node(home) as opened:
            _, token = open_compliance(opened).api_keys.create("bench", "admin")
        admin = {"Authorization": f"Bearer {token}"}
        nodes.append(Node(f"node-{i}.bench", home, free_port(), admin, root / f"node-{i}.log"))
    for node in nodes:
        node.start()
    keys = [cli(n.home, "key") for n in nodes]
    for i in range(size - 1):
        for here, there in ((i, i + 1), (i + 1, i)):
            peer = nodes[there]
            cli(nodes[here].home, "peer", "add", peer.name, "--url", peer.url, "--key", keys[there])
    for i in range(size - 1):
        for issuer, holder in ((i, i + 1), (i + 1, i)):
            token = cli(
                nodes[issuer].home, "peer", "token", nodes[holder].name, "--verbs", VERBS[mode]
            )
            peer = nodes[issuer]
            cli(
                nodes[holder].home,
                *("peer", "add", peer.name, "--url", peer.url, "--key", keys[issuer]),
                *("--token", token),
            )
    return nodes


def issue(client: httpx.Client, entity: str) -> str:
    response = client.post("/v1/tombstones", json={"entity_uri": entity, "scope": "*"})
    response.raise_for_status()
    tombstone_id: str = response.json()["id"]
    return tombstone_id


def issue_many(node: Node, prefix: str, total: int, clients: int) -> list[str]:
    """``total`` tombstones issued at ``node`` by ``clients`` concurrent clients (progress on
    standard error when it is a terminal)."""
    issued: list[str] = []
    lock = threading.Lock()

    with progress_display() as progress:

        def batch(start: int) -> None:
            with httpx.Client(base_url=node.url, headers=node.admin, timeout=120) as client:
                for i in range(start, total, clients):
                    tombstone_id = issue(client, f"user:{prefix}-{i}")
                    with lock:
                        issued.append(tombstone_id)
                        if progress is not None:
                            progress(f"issuing {prefix}", len(issued), total)

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(batch, range(clients)))
    return issued


def all_held(node: Node, ids: list[str], deadline: float) -> bool:
    """Wait until ``node`` holds every one of ``ids``; False if ``deadline`` passes first."""
    wanted = set(ids)
    return wait_until(
        f"{len(ids)} at {node.name}",
        lambda: node.held(wanted) == len(wanted),
        deadline=deadline,
        every=0.5,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(mode: str, nodes: list[Node], args: argparse.Namespace) -> dict[str, Any]:
    first, last = nodes[0], nodes[-1]
    times: list[float] = []
    ids: list[str] = []
    with (
        httpx.Client(base_url=first.url, headers=first.admin, timeout=60) as client,
        progress_display() as progress,
    ):
        for i in range(args.tombstones):
            start = time.perf_counter()
            tombstone_id = issue(client, f"user:latency-{i}")
            ids.append(tombstone_id)
            if wait_until("applied", partial(last.holds, tombstone_id), deadline=600, every=0.02):
                times.append(time.perf_counter() - start)
            if progress is not None:
                progress(f"{mode}: issued and applied", i + 1, args.tombstones)
    return {
        "mode": mode,
        "figure": "issue_to_applied_seconds",
        "hops": len(nodes) - 1,
        "count": len(times),
        "p50": round(percentile(times, 0.5), 4) if times else None,
        "p99": round(percentile(times, 0.99), 4) if times else None,
        "mean": round(statistics.fmean(times), 4) if times else None,
        **count(nodes, ids),
    }


def partition(mode: str, nodes: list[Node], args: argparse.Namespace) -> dict[str, Any]:
    last = nodes[-1]
    nodes[1].kill()
    cut = time.monotonic()
    ids = issue_many(nodes[0], "partition", args.bulk, args.clients)
    issued_in = time.monotonic() - cut
    time.sleep(max(0.0, args.partition_seconds - (time.monotonic() - cut)))
    parted = time.monotonic() - cut
    nodes[1].start()
    healed = time.perf_counter()
    converged = all_held(last, ids, args.converge_timeout)
    return {
        "mode": mode,
        "figure": "partition_convergence",
        "partition_seconds": round(parted, 1),
        "issued_in_seconds": round(issued_in, 1),
        "tombstones": len(ids),
        "converged": converged,
        "convergence_seconds_after_heal": round(time.perf_counter() - healed, 2),
        **count(nodes, ids),
    }


def volume(mode: str, nodes: list[Node], args: argparse.Namespace) -> dict[str, Any]:
    last = nodes[-1]
    start = time.perf_counter()
    ids = issue_many(nodes[0], "volume", args.volume, args.clients)
    issued = time.perf_counter() - start
    converged = all_held(last, ids, args.converge_timeout)
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "figure": "volume",
        "tombstones": len(ids),
        "clients": args.clients,
        "issued_in_seconds": round(issued, 1),
        "converged": converged,
        "all_at_last_node_seconds": round(elapsed, 1),
        "per_second_end_to_end": round(len(ids) / elapsed, 1),
        **count(nodes, ids),
    }


def run_mode(mode: str, args: argparse.Namespace, with_volume: bool) -> dict[str, Any]:
    middle = range(1, args.peers - 1) if mode == "full-pg" else range(0)
    with (
        tempfile.TemporaryDirectory(prefix=f"oblivio-fed-{mode}-") as tmp,
        postgres_schemas(args.postgres_url, len(middle)) as uris,
    ):
        nodes = build_line(Path(tmp), mode, args.peers, dict(zip(middle, uris, strict=True)))
        try:
            time.sleep(3)  # subscriptions open
            results = {"latency": latency(mode, nodes, args)}
            emit(results["latency"])
            if with_volume:
                results["volume"] = volume(mode, nodes, args)
                emit(results["volume"])
            results["partition"] = partition(mode, nodes, args)
            emit(results["partition"])
            return results
        finally:
            for node in nodes:
                node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--tombstones", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--partition-seconds", type=float, default=60.0)
    parser.add_argument("--volume", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--converge-timeout", type=float, default=1800.0)
    parser.add_argument("--modes", default="full,push-fixed,full-pg")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "OBLIVIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs", file=sys.stderr)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in VERBS]
    if unknown:
        parser.error(f"--modes: unknown {unknown}; expected some of {sorted(VERBS)}")
    results = {mode: run_mode(mode, args, with_volume=i == 0) for i, mode in enumerate(modes)}
    emit(
        {
            "summary": results,
            "peer": "push-fixed: Mastodon-like fixed retries, no pull, no announce",
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
