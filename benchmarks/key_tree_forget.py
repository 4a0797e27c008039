"""Key-tree forgetting cost (DESIGN.md §5): wraps and microseconds per forget at 10^6 keys.

For each fan-out (16, 64, 256) a tree of N leaves (default 10^6) is built in a SQLite store, then
leaves are forgotten one at a time and in batches of 1,000 (three by default: the mean takes in
the WAL checkpoints SQLite runs every few batches). The peer, in the same run, is a
flat epoch of the same size (seed 000's epoch rotation): the same code with fan-out >= N, i.e.
depth 1, where every forget re-wraps every remaining key under a new root. Each forget is the
whole journalled batch: intent, re-key, old root destroyed (and the next standby root made in
the same backend step, docs/adr/0008), receipt signed and stored: two SQLite commits with
synchronous=FULL and, on the software backend, one key-file fsync (two for the first forget,
which finds no standby root).

``wraps`` counts keys sealed (each key of a re-keyed node once: the per-key wrap count of the
old layout), ``seals`` the AEAD operations that sealed them (one per node; opening costs as
many). The table shows the mean and the median (of the forgets, or of the batches). The first
forget after each build is measured apart (``first_forget_us``): it pays one-off costs of the
build, not of forgetting.

Prints one JSON object per line, then a summary table. Usage:

    .venv/bin/python benchmarks/key_tree_forget.py [--keys N] [--fanouts 16,64,256]
        [--singles 20] [--batch 1000] [--batches 3] [--backends software,pkcs11] [--no-flat]
        [--dir DIR]

``pkcs11`` runs against a SoftHSM2 token made for the run (needs softhsm2-util).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import oblivio.keys.key_tree as key_tree_module
from oblivio.core.envelope import KEY_SIZE
from oblivio.core.identifiers import ArtifactId, Capability
from oblivio.core.signing import SigningKey
from oblivio.keys.backend import WrappingKeyBackend, open_key_backend
from oblivio.keys.custody import KeyTreeCustody
from oblivio.keys.key_tree import KeyTree
from oblivio.store.database import Database, open_database
from oblivio.store.key_tree_nodes import SqlKeyTreeNodes, SqlKeyTreeStore
from oblivio.store.migrations import migrate

BUILD_CHUNK = 50_000


class WrapCounter:
    """Counts AEAD seals and the keys they seal, in core (a node's children under its key) and
    in the backend (the root node's children under the root key). A forget seals each key of
    the nodes it re-keys once: ``keys`` is the old per-key wrap count (docs/adr/0008)."""

    def __init__(self) -> None:
        self.seals = 0
        self.keys = 0
        original = key_tree_module.wrap_key

        def counting(key: bytes, nonce: bytes, material: bytes, context: bytes) -> bytes:
            self._count([(material, context)])
            return original(key, nonce, material, context)

        key_tree_module.wrap_key = counting

    def _count(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.seals += len(items)
        self.keys += sum(len(plain) for plain, _ in items) // KEY_SIZE

    def reset(self) -> None:
        self.seals = self.keys = 0

    def watch(self, backend: WrappingKeyBackend) -> None:
        original = backend.wrap_many

        def counting(key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
            self._count(items)
            return original(key_ref, items)

        backend.wrap_many = counting  # type: ignore[method-assign]


def artifact_id(i: int) -> ArtifactId:
    return ArtifactId(hashlib.sha256(b"bench %d" % i).hexdigest())


def build(db: Database, tree: KeyTree, keys: int) -> float:
    """Insert ``keys`` bare artifacts with one decrypt key each; returns seconds."""
    start = time.perf_counter()
    for first in range(0, keys, BUILD_CHUNK):
        ids = [artifact_id(i) for i in range(first, min(keys, first + BUILD_CHUNK))]
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO artifacts (artifact_id, blob_id, metadata, nonce, plaintext_size, "
                "ciphertext_size, chunk_count, entity_uri, scope, created_at) "
                "VALUES (?, ?, ?, ?, 0, 0, 0, NULL, NULL, '2026-11-22T10:00:00.000Z')",
                [(aid, aid, b"{}", bytes(12)) for aid in ids],
            )
            decrypt: Capability = "decrypt"
            tree.add_leaves(SqlKeyTreeNodes(tx), [(aid, decrypt, os.urandom(32)) for aid in ids])
    return time.perf_counter() - start


def fsync_us(directory: Path, samples: int = 20) -> float:
    """Median microseconds of a 4 KiB write + fsync in ``directory``: the I/O floor of a forget
    (each batch makes two SQLite commits and one key-file fsync)."""
    path = directory / "fsync-probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(samples):
            f.write(os.urandom(4096))
            f.flush()
            start = time.perf_counter()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - start)
    path.unlink()
    return round(sorted(times)[samples // 2] * 1e6, 1)


def softhsm_token(directory: Path) -> str:
    """A fresh SoftHSM2 token for the run (SOFTHSM2_CONF set before the module loads)."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise SystemExit("pkcs11 figures need SoftHSM2: apt-get install softhsm2")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            util,
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "12345678",
            "--pin",
            "1234",
        ],
        check=True,
        capture_output=True,
    )
    return "pkcs11:token=bench?pin-value=1234"


@dataclass(frozen=True)
class Run:
    """What to measure: tree size, forgets one at a time, batch size and count, scratch
    directory."""

    keys: int
    singles: int
    batch: int
    batches: int
    work: Path


def measure(run: Run, backend_uri: str, fanout: int, rng: random.Random) -> list[dict[str, object]]:
    keys, singles, batch, batches = run.keys, run.singles, run.batch, run.batches
    home = run.work / f"{backend_uri.split(':', 1)[0]}-{fanout}"
    home.mkdir()
    counter = WrapCounter()
    db = open_database("sqlite:///" + str(home / "bench.db").lstrip("/"))
    migrate(db)
    uri = (
        backend_uri
        if not backend_uri.startswith("pkcs11")
        else backend_uri.replace("token=bench", f"token=bench;object=f{fanout}")
    )
    backend = open_key_backend(uri, home, create=True)
    counter.watch(backend)
    signer = SigningKey(bytes(32))
    custody = KeyTreeCustody(backend, SqlKeyTreeStore(db), signer, fanout=fanout)
    custody.bind_new(signer.key_id)  # a new database and key store (docs/adr/0016)
    custody.initialise()
    tree = custody.trees["wrap"]
    seconds = build(db, tree, keys)
    with db.transaction(write=False) as tx:
        row = tx.fetchone("SELECT height FROM key_tree_heads WHERE tree = 'wrap'")
    depth = int(row[0]) if row else 0
    results: list[dict[str, object]] = []
    base = {
        "bench": "key_tree_forget",
        "backend": backend.scheme,
        "keys": keys,
        "fanout": fanout if fanout < keys else "flat",
        "depth": depth,
        "build_s": round(seconds, 2),
        "fsync_us": fsync_us(home),
    }
    victims = rng.sample(range(keys), 1 + singles + batch * batches)
    # The first forget after the build is reported on its own: it makes its tree's first root
    # (there is no standby yet) and truncates the WAL that the bulk build grew beyond SQLite's
    # journal_size_limit, a one-off cost of the build (about 20-30 ms on this disk).
    start = time.perf_counter()
    tree.forget_leaves([(artifact_id(victims.pop()), "decrypt")])
    base["first_forget_us"] = round((time.perf_counter() - start) * 1e6, 1)
    if singles:
        counter.reset()
        times = []
        for i in victims[:singles]:
            start = time.perf_counter()
            tree.forget_leaves([(artifact_id(i), "decrypt")])
            times.append(time.perf_counter() - start)
        times.sort()
        results.append(
            base
            | {
                "mode": "one at a time",
                "forgets": singles,
                "wraps_per_forget": round(counter.keys / singles, 1),
                "seals_per_forget": round(counter.seals / singles, 1),
                "us_per_forget": round(sum(times) / singles * 1e6, 1),
                "us_per_forget_median": round(times[len(times) // 2] * 1e6, 1),
                "us_per_forget_p10": round(times[len(times) // 10] * 1e6, 1),
                "us_per_forget_p90": round(times[len(times) * 9 // 10] * 1e6, 1),
            }
        )
    if batch and batches:
        counter.reset()
        per_forget = []
        for n in range(batches):
            first = singles + n * batch
            start = time.perf_counter()
            tree.forget_leaves(
                [(artifact_id(i), "decrypt") for i in victims[first : first + batch]]
            )
            per_forget.append((time.perf_counter() - start) / batch * 1e6)
        results.append(
            base
            | {
                "mode": f"batch of {batch}",
                "forgets": batch * batches,
                "wraps_per_forget": round(counter.keys / (batch * batches), 1),
                "seals_per_forget": round(counter.seals / (batch * batches), 2),
                "us_per_forget": round(sum(per_forget) / batches, 1),
                "us_per_forget_median": round(sorted(per_forget)[batches // 2], 1),
                "us_per_forget_by_batch": [round(t, 1) for t in per_forget],
            }
        )
    backend.close()
    db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--fanouts", default="16,64,256")
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--backends", default="software")
    parser.add_argument("--flat-singles", type=int, default=2)
    parser.add_argument("--no-flat", action="store_true")
    parser.add_argument(
        "--dir", default=None, help="where the stores live (e.g. /dev/shm to leave out the disk)"
    )
    args = parser.parse_args()
    rng = random.Random(4)  # noqa: S311 - which leaves to forget, not cryptography
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="oblivio-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            if name == "software":
                uri = "software:"
            elif name == "pkcs11":
                hsm = work / "softhsm"
                hsm.mkdir()
                uri = softhsm_token(hsm)
            else:
                raise SystemExit(f"unknown backend {name!r}")
            fanouts = [int(f) for f in args.fanouts.split(",")]
            run = Run(args.keys, args.singles, args.batch, args.batches, work)
            for fanout in fanouts:
                for row in measure(run, uri, fanout, rng):
                    print(json.dumps(row), flush=True)
                    rows.append(row)
            if not args.no_flat:
                # The peer: a flat epoch of the same size (depth 1), one forget at a time.
                flat = Run(args.keys, args.flat_singles, 0, 0, work)
                for row in measure(flat, uri, args.keys, rng):
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    print(file=sys.stderr)
    header = f"{'backend':9} {'fanout':>6} {'depth':>5} {'mode':>14} {'wraps/forget':>13} "
    header += f"{'seals/forget':>13} {'us/forget':>11} {'median us':>10} {'first us':>9} "
    header += f"{'fsync us':>9}"
    print(header, file=sys.stderr)
    for row in rows:
        print(
            f"{row['backend']!s:9} {row['fanout']!s:>6} {row['depth']!s:>5} {row['mode']!s:>14} "
            f"{row['wraps_per_forget']!s:>13} {row['seals_per_forget']!s:>13} "
            f"{row['us_per_forget']!s:>11} {row.get('us_per_forget_median', '-')!s:>10} "
            f"{row['first_forget_us']!s:>9} {row['fsync_us']!s:>9}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
