"""Tombstone propagation across real ``oblivio serve`` processes on loopback (issue 12).

A line of N nodes (node-0 … node-{N-1}); node-0 issues tombstones, the last node is N-1 hops
away. Prints one JSON object per figure, then a summary:

- latency from issue (201 at node-0) to stored-and-suppressing at the last node, p50/p99 over
  ``--tombstones`` issued one after another;
- a partition: node-1 is SIGKILLed, node-0 issues ``--bulk`` tombstones, node-1 comes back after
  ``--partition-seconds``; convergence time from its restart until the last node holds all of
  them, with the count lost (not there when ``--converge-timeout`` passes) and duplicated
  (stored or audited twice).

The peer measured in the same run is push alone: the same nodes, whose tokens grant no
``tombstone:read``, so that nothing is pulled or announced and only the outbox's pushes
(exponential backoff with full jitter, capped at 5 minutes) carry tombstones — the delivery a
Mastodon-like fediverse server relies on (its retry schedule is a fixed one; ours is the
backoff, so the comparison isolates what pull and announce add).

Usage: .venv/bin/python benchmarks/federation_bench.py [--peers 4] [--tombstones 200]
       [--bulk 1000] [--partition-seconds 60] [--modes full,push-only]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from oblivio.node.compliance import open_compliance
from oblivio.node.node import init_node, open_node

VERBS = {
    "full": "tombstone:read,tombstone:write,ack:write",
    "push-only": "tombstone:write,ack:write",
}


SERVE = (sys.executable, "-m", "oblivio", "serve")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cli(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "oblivio", "--home", str(home), *args],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return done.stdout.decode().strip()


def _wait(what: str, probe: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            emit({"warning": f"{what}: not within {timeout:.0f} s"})
            return False
        time.sleep(0.05)
    return True


@dataclass
class Served:
    name: str
    home: Path
    port: int
    admin: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--home", str(self.home), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=(self.home.parent / f"{self.name}.log").open("ab"),
        )

        def up() -> bool:
            try:
                return httpx.get(self.url + "/v1/health", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        _wait(f"{self.name} up", up, 120)

    def kill(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def held(self, ids: list[str]) -> int:
        with open_node(self.home, recover=False) as node, node.db.transaction(write=False) as tx:
            rows = tx.fetchall("SELECT id FROM tombstones")
        wanted = set(ids)
        return sum(1 for (i,) in rows if i in wanted)

    def holds(self, tombstone_id: str) -> bool:
        return self.held([tombstone_id]) == 1

    def received_twice(self, ids: list[str]) -> int:
        with open_node(self.home, recover=False) as node, node.db.transaction(write=False) as tx:
            rows = tx.fetchall(
                "SELECT subject, COUNT(*) FROM audit_log WHERE event = 'tombstone_received' "
                "GROUP BY subject HAVING COUNT(*) > 1"
            )
        wanted = set(ids)
        return sum(1 for (s, _) in rows if s in wanted)


def build_line(root: Path, count: int, verbs: str) -> list[Served]:
    nodes: list[Served] = []
    for i in range(count):
        home = root / f"node-{i}"
        init_node(home, name=f"node-{i}.bench").close()
        config = json.loads((home / "config.json").read_text())
        config["forgetting"] = {"epoch_interval_seconds": 1}
        (home / "config.json").write_text(json.dumps(config))
        with open_node(home) as opened:
            _, token = open_compliance(opened).api_keys.create("bench", "admin")
        nodes.append(
            Served(f"node-{i}.bench", home, _free_port(), {"Authorization": f"Bearer {token}"})
        )
    for served in nodes:
        served.start()
    keys = [_cli(n.home, "key") for n in nodes]
    for i in range(count - 1):
        for here, there in ((i, i + 1), (i + 1, i)):
            _cli(
                nodes[here].home,
                "peer",
                "add",
                nodes[there].name,
                "--url",
                nodes[there].url,
                "--key",
                keys[there],
            )
    for i in range(count - 1):
        for issuer, holder in ((i, i + 1), (i + 1, i)):
            token = _cli(nodes[issuer].home, "peer", "token", nodes[holder].name, "--verbs", verbs)
            _cli(
                nodes[holder].home,
                "peer",
                "add",
                nodes[issuer].name,
                "--url",
                nodes[issuer].url,
                "--key",
                keys[issuer],
                "--token",
                token,
            )
    return nodes


def issue(client: httpx.Client, entity: str) -> str:
    response = client.post("/v1/tombstones", json={"entity_uri": entity, "scope": "*"})
    response.raise_for_status()
    tombstone_id: str = response.json()["id"]
    return tombstone_id


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"oblivio-fed-{mode}-") as tmp:
        nodes = build_line(Path(tmp), args.peers, VERBS[mode])
        first, last = nodes[0], nodes[-1]
        try:
            time.sleep(3)  # subscriptions open
            latencies: list[float] = []
            with httpx.Client(base_url=first.url, headers=first.admin, timeout=60) as client:
                for i in range(args.tombstones):
                    start = time.perf_counter()
                    tombstone_id = issue(client, f"user:latency-{i}")
                    if _wait("applied at the last node", partial(last.holds, tombstone_id), 600):
                        latencies.append(time.perf_counter() - start)
            figure = {
                "mode": mode,
                "figure": "issue_to_applied_seconds",
                "hops": args.peers - 1,
                "count": len(latencies),
                "p50": round(percentile(latencies, 0.5), 4) if latencies else None,
                "p99": round(percentile(latencies, 0.99), 4) if latencies else None,
                "mean": round(statistics.fmean(latencies), 4) if latencies else None,
                "lost": args.tombstones - len(latencies),
            }
            emit(figure)

            nodes[1].kill()
            ids: list[str] = []
            partition_start = time.monotonic()
            with httpx.Client(base_url=first.url, headers=first.admin, timeout=60) as client:
                ids = [issue(client, f"user:partition-{i}") for i in range(args.bulk)]
            time.sleep(max(0.0, args.partition_seconds - (time.monotonic() - partition_start)))
            nodes[1].start()
            healed = time.perf_counter()
            converged = _wait(
                "convergence", lambda: last.held(ids) == len(ids), args.converge_timeout
            )
            convergence = time.perf_counter() - healed
            partition = {
                "mode": mode,
                "figure": "partition_convergence",
                "partition_seconds": args.partition_seconds,
                "tombstones": len(ids),
                "converged": converged,
                "convergence_seconds_after_heal": round(convergence, 2),
                "lost": len(ids) - last.held(ids),
                "duplicated": sum(n.received_twice(ids) for n in nodes),
            }
            emit(partition)
            return {"latency": figure, "partition": partition}
        finally:
            for node in nodes:
                node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--tombstones", type=int, default=200)
    parser.add_argument("--bulk", type=int, default=1000)
    parser.add_argument("--partition-seconds", type=float, default=60.0)
    parser.add_argument("--converge-timeout", type=float, default=900.0)
    parser.add_argument("--modes", default="full,push-only")
    args = parser.parse_args()
    results = {mode: run_mode(mode, args) for mode in args.modes.split(",")}
    emit({"summary": results, "peer": "push-only (no pull, no announce)"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
