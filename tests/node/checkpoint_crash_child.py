"""Child process for the crash test: commits epochs forever, printing ``BEGIN`` before each
commit and ``ACK epoch root`` after it returns. The parent kills it with SIGKILL at random
moments inside a commit."""

from __future__ import annotations

import random
import sys

from oblivio.core.signing import SigningKey
from oblivio.node.checkpoints import CheckpointService
from oblivio.store.database import open_database
from oblivio.store.migrations import migrate


def main() -> None:
    uri, seed, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    db = open_database(uri)
    migrate(db)
    service = CheckpointService(db, "crash.test/node", SigningKey(bytes(32)))
    print("READY", flush=True)
    while True:
        updates: dict[bytes, bytes | None] = {
            rng.randbytes(32): rng.randbytes(32) for _ in range(batch)
        }
        print("BEGIN", flush=True)
        commit = service.commit_epoch(updates, [b'{"type":"forget","seed":%d}' % seed])
        print(f"ACK {commit.epoch} {commit.smt_root.hex()}", flush=True)


if __name__ == "__main__":
    main()
