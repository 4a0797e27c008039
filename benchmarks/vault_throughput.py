"""Vault throughput: put and get per second for 1 KiB and 1 MiB payloads on SQLite and PostgreSQL,
beside the raw AES-256-GCM speed of ``cryptography`` measured in the same run (the peer).

Prints one JSON object per line, then a summary table. Usage:

    .venv/bin/python benchmarks/vault_throughput.py [--postgres URL] [--quick]

PostgreSQL figures need a reachable server (default postgresql://postgres@127.0.0.1:5432/test);
each run uses a schema of its own and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from oblivio.node.node import Node, init_node
from oblivio.node.vault import ArtifactInput

KIB = 1024
MIB = 1024 * 1024


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def raw_aes_gcm(size: int, count: int) -> dict[str, object]:
    """The peer: one fresh key and nonce per payload, AESGCM encrypt then decrypt, no storage."""
    payload = secrets.token_bytes(size)
    sealed: list[tuple[AESGCM, bytes, bytes]] = []

    def encrypt() -> None:
        for _ in range(count):
            aead = AESGCM(secrets.token_bytes(32))
            nonce = secrets.token_bytes(12)
            sealed.append((aead, nonce, aead.encrypt(nonce, payload, b"aad")))

    def decrypt() -> None:
        for aead, nonce, ciphertext in sealed:
            aead.decrypt(nonce, ciphertext, b"aad")

    return {
        "peer": "cryptography AESGCM (raw, in memory)",
        "size": size,
        "encrypt_per_s": rate(count, timed(encrypt)),
        "decrypt_per_s": rate(count, timed(decrypt)),
    }


def vault_figures(node: Node, backend: str, size: int, count: int, batch: int) -> dict[str, object]:
    payload = secrets.token_bytes(size)
    ids: list[str] = []

    def put_single() -> None:
        for _ in range(count):
            ids.append(node.vault.put(payload, {"bench": size}))

    def put_batched() -> None:
        items = [ArtifactInput(payload, {"bench": size}) for _ in range(batch)]
        for _ in range(count // batch):
            ids.extend(node.vault.put_many(items))

    def get_all() -> None:
        for artifact_id in ids:
            node.vault.get(artifact_id)

    single_s = timed(put_single)
    batched_s = timed(put_batched) if batch > 1 else None
    get_s = timed(get_all)
    return {
        "backend": backend,
        "size": size,
        "puts_per_s_single": rate(count, single_s),
        "puts_per_s_batched": rate(count, batched_s) if batched_s else None,
        "batch": batch,
        "gets_per_s": rate(len(ids), get_s),
        "mib_per_s_put_single": rate(count, single_s) * size / MIB,
    }


@contextmanager
def postgres_schema(url: str) -> Iterator[str | None]:
    schema = "oblivio_bench_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as e:
        print(f"# PostgreSQL unavailable at {url}: {e}; skipping its figures", file=sys.stderr)
        yield None
        return
    try:
        sep = "&" if "?" in url else "?"
        yield f"{url}{sep}options={quote(f'-c search_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "OBLIVIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    small_count, large_count = (1000, 20) if args.quick else (20_000, 200)
    plan = [(KIB, small_count, 1000), (MIB, large_count, 10)]

    results: list[dict[str, object]] = []
    for size, count, _ in plan:
        results.append({"kind": "peer", **raw_aes_gcm(size, count)})
    with tempfile.TemporaryDirectory() as tmp, postgres_schema(args.postgres) as pg_uri:
        stores = [("sqlite", None)] + ([("postgresql", pg_uri)] if pg_uri else [])
        for backend, uri in stores:
            with init_node(Path(tmp) / backend, name="bench", store_uri=uri) as node:
                for size, count, batch in plan:
                    figures = vault_figures(node, backend, size, count, batch)
                    results.append({"kind": "vault", **figures})
    for result in results:
        print(json.dumps(result))
    print("\n# summary (operations per second)")
    peers = {r["size"]: r for r in results if r["kind"] == "peer"}
    for r in results:
        if r["kind"] != "vault":
            continue
        peer = peers[r["size"]]
        batched = r["puts_per_s_batched"]
        print(
            f"{r['backend']:>10} {int(r['size']) // KIB:>5} KiB"
            f"  put {r['puts_per_s_single']:>9.0f}/s"
            f"  put batched {batched if batched is None else format(batched, '9.0f')}/s"
            f"  get {r['gets_per_s']:>9.0f}/s   raw AES-GCM enc {peer['encrypt_per_s']:>9.0f}/s"
            f" dec {peer['decrypt_per_s']:>9.0f}/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
