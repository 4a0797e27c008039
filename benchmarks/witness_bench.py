"""Witnesses (DESIGN.md §17): what a witness sustains, and how long a checkpoint waits for two
cosignatures. Figures, one JSON object per line (then a short summary on stderr):

- ``witness_cosign``: add-checkpoint requests per second one witness handles in sequence
  (``node/witness.py`` on SQLite: parse, the log's note signature, the RFC 6962 consistency
  proof from the size it cosigned last, the Ed25519 cosignature, and the durable state update),
  and the same checks and signature without the database (``core``). Peer in the same run: the
  raw Ed25519 verify + sign rate of pyca ``cryptography`` over a message of the same length,
  the floor of any witness that checks one signature and makes one.
- ``epoch_to_cosigned``: on loopback, three ``oblivio serve`` processes (log A, witnesses B and
  C); each sample forgets one artifact on A (one epoch) and waits for both cosignatures. The
  delay is measured inside A from its database: from the epoch's checkpoint time to the later
  of the two cosignatures' arrival (milliseconds), p50 and p99.

Usage::

    .venv/bin/python benchmarks/witness_bench.py [--requests 2000] [--entries-per-step 3]
        [--samples 100] [--skip cosign,delay]

Never gated: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oblivio.core.encoding import b64url_encode
from oblivio.core.note import NoteSigner, open_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.core.witness import AddCheckpointRequest, check_extension, parse_add_checkpoint
from oblivio.node.checkpoints import CheckpointService
from oblivio.node.compliance import open_compliance
from oblivio.node.node import init_node, open_node
from oblivio.node.witness import WitnessService, witness_signer
from oblivio.store.database import open_database
from oblivio.store.migrations import migrate

LOG_NAME = "bench-log.example"


def _requests(workdir: Path, count: int, per_step: int) -> list[bytes]:
    """``count`` add-checkpoint bodies of a growing log, each extending the one before."""
    db = open_database("sqlite:///" + str(workdir / "log.db").lstrip("/"))
    migrate(db)
    service = CheckpointService(db, LOG_NAME, SigningKey(b"\x42" * 32))
    bodies = []
    old = 0
    for i in range(count):
        commit = service.commit_epoch(
            entries=[b'{"n":%d,"k":%d}' % (i, k) for k in range(per_step - 1)]
        )
        size = commit.checkpoint.size
        proof = service.log.consistency_proof(old, size).path if 0 < old < size else ()
        bodies.append(
            AddCheckpointRequest(old, tuple(proof), commit.checkpoint.note.encode()).to_bytes()
        )
        old = size
    db.close()
    return bodies


def witness_cosign(workdir: Path, count: int, per_step: int) -> dict[str, Any]:
    bodies = _requests(workdir, count, per_step)
    log_key = NoteSigner(LOG_NAME, SigningKey(b"\x42" * 32))
    home = workdir / "witness"
    init_node(home, name="bench-witness.example").close()
    with open_node(home) as node:
        witness = WitnessService(node.db, node.config.name, node.signing_key)
        witness.add_log(LOG_NAME, log_key.verifier_key)
        start = time.perf_counter()
        for body in bodies:
            witness.add_checkpoint(body)
        durable = count / (time.perf_counter() - start)
        signer = witness_signer("bench-witness.example", node.signing_key)
    # The same checks and signature, no database (core only).
    verifier = log_key.verifier()
    latest_size, latest_root = 0, None
    start = time.perf_counter()
    for body in bodies:
        request = parse_add_checkpoint(body)
        checkpoint = open_checkpoint(request.note, verifier)
        check_extension(request, checkpoint, latest_size, latest_root, None)
        signer.cosign(checkpoint.to_text(), 1_800_000_000)
        latest_size, latest_root = checkpoint.size, checkpoint.root
    pure = count / (time.perf_counter() - start)
    # Peer: raw Ed25519 verify + sign with pyca/cryptography, same message length.
    private = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    public = private.public_key()
    message = b"cosignature/v1\ntime 1800000000\n" + checkpoint.to_text().encode()
    signature = private.sign(message)
    start = time.perf_counter()
    for _ in range(count):
        public.verify(signature, message)
        private.sign(message)
    peer = count / (time.perf_counter() - start)
    return {
        "figure": "witness_cosign",
        "requests": count,
        "entries_per_step": per_step,
        "final_log_size": latest_size,
        "oblivio_witness_sqlite_per_s": round(durable, 1),
        "oblivio_core_checks_and_cosign_per_s": round(pure, 1),
        "peer": "cryptography Ed25519 verify+sign",
        "peer_per_s": round(peer, 1),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _oblivio(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "oblivio", *args, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def _serve(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "oblivio", "serve", "--home", str(home), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oblivio serve exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("oblivio serve did not answer within 120 s")


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def epoch_to_cosigned(workdir: Path, samples: int) -> dict[str, Any]:
    homes = {n: workdir / n for n in ("a", "b", "c")}
    ports = {n: _free_port() for n in homes}
    for name, home in homes.items():
        init_node(home, name=f"{name}.bench.example").close()
        config = json.loads((home / "config.json").read_text())
        # Epochs only from the sampled forgets (wait: true), none from the timer.
        config["forgetting"] = {"epoch_interval_seconds": 3600, "heartbeat_seconds": 3600}
        (home / "config.json").write_text(json.dumps(config))
    a_key = _oblivio("key", "--home", str(homes["a"]))["verifier_key"]
    for name in ("b", "c"):
        wkey = _oblivio("witness", "key", "--home", str(homes[name]))["verifier_key"]
        _oblivio("witness", "add-log", "a.bench.example", a_key, "--home", str(homes[name]))
        _oblivio(
            *("witness", "use", f"{name}.bench.example", "--home", str(homes["a"])),
            *("--url", f"http://127.0.0.1:{ports[name]}/v1/witness", "--key", wkey),
        )
    with open_node(homes["a"]) as node:
        _, token = open_compliance(node).api_keys.create("bench", "admin")
    processes = []
    try:
        for name in ("b", "c", "a"):
            processes.append(_serve(homes[name], ports[name], workdir / f"{name}.log"))
        base = f"http://127.0.0.1:{ports['a']}"
        headers = {"Authorization": f"Bearer {token}"}
        epochs = []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for i in range(samples):
                put = client.post(
                    "/v1/artifacts", json={"plaintext_b64url": b64url_encode(b"x%d" % i)}
                )
                artifact = put.json()["artifact_id"]
                client.post(f"/v1/artifacts/{artifact}/forget", json={"level": 2})
                epoch = client.get("/v1/checkpoint").json()["epoch"]
                deadline = time.monotonic() + 60
                while client.get("/v1/checkpoint").json()["checkpoint"].count("\u2014 ") < 3:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"epoch {epoch}: no two cosignatures within 60 s")
                    time.sleep(0.002)
                epochs.append(epoch)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    with open_node(homes["a"], recover=False) as node, node.db.transaction(write=False) as tx:
        delays = []
        for epoch in epochs:
            created = tx.fetchone("SELECT created_at FROM checkpoints WHERE epoch = ?", (epoch,))
            received = tx.fetchall(
                "SELECT received_at FROM checkpoint_cosignatures WHERE epoch = ?", (epoch,)
            )
            if created is None or len(received) != 2:
                raise RuntimeError(f"epoch {epoch}: checkpoint or cosignatures missing")
            last = max(_parse(str(r[0])) for r in received)
            delays.append((last - _parse(str(created[0]))).total_seconds() * 1000)
    delays.sort()
    return {
        "figure": "epoch_to_cosigned",
        "samples": samples,
        "witnesses": 2,
        "p50_ms": round(statistics.median(delays), 1),
        "min_ms": round(delays[0], 1),
        "p99_ms": round(delays[math.ceil(len(delays) * 0.99) - 1], 1),
        "max_ms": round(delays[-1], 1),
        "resolution_ms": 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--entries-per-step", type=int, default=3)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--skip", default="", help="comma-separated: cosign, delay")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    results = []
    with tempfile.TemporaryDirectory(prefix="oblivio-bench-") as tmp:
        workdir = Path(tmp)
        if "cosign" not in skip:
            (workdir / "cosign").mkdir()
            results.append(witness_cosign(workdir / "cosign", args.requests, args.entries_per_step))
            print(json.dumps(results[-1]), flush=True)
        if "delay" not in skip:
            (workdir / "delay").mkdir()
            results.append(epoch_to_cosigned(workdir / "delay", args.samples))
            print(json.dumps(results[-1]), flush=True)
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs", file=sys.stderr)
    for result in results:
        if result["figure"] == "witness_cosign":
            print(
                f"# witness: {result['oblivio_witness_sqlite_per_s']}/s durable, "
                f"{result['oblivio_core_checks_and_cosign_per_s']}/s checks+cosign in memory; "
                f"{result['peer']}: {result['peer_per_s']}/s",
                file=sys.stderr,
            )
        else:
            print(
                f"# epoch commit to 2 cosignatures: p50 {result['p50_ms']} ms, "
                f"p99 {result['p99_ms']} ms over {result['samples']} epochs",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
