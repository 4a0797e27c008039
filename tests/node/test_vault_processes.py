"""The vault across real processes: concurrent writers, and payloads larger than memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oblivio.node.node import Node, init_node, open_node

WRITER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from oblivio.node.node import open_node
    from oblivio.node.vault import ArtifactInput
    home, tag, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ids = []
    with open_node(home) as node:
        for i in range(count // 2):
            ids.append(node.vault.put(f"{tag}-{i}".encode(), {"writer": tag, "i": i}))
        batch = [ArtifactInput(f"{tag}-{i}".encode(), {"writer": tag, "i": i})
                 for i in range(count // 2, count)]
        for start in range(0, len(batch), 10):
            ids.extend(node.vault.put_many(batch[start:start + 10]))
    print(json.dumps(ids))
    """
)


def test_two_concurrent_writer_processes_lose_and_duplicate_nothing(node: Node) -> None:
    count = 200
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(node.home), tag, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    results = [w.communicate(timeout=300) for w in writers]
    for writer, (_, err) in zip(writers, results, strict=True):
        assert writer.returncode == 0, err
    ids = [i for out, _ in results for i in json.loads(out)]
    assert len(ids) == 2 * count
    assert len(set(ids)) == 2 * count
    assert node.vault.count() == 2 * count
    for artifact_id in ids:
        info = node.vault.describe(artifact_id)
        assert (
            node.vault.get(artifact_id)
            == f"{info.metadata['writer']}-{info.metadata['i']}".encode()
        )


STREAMER = textwrap.dedent(
    """
    import hashlib, json, sys, threading
    from pathlib import Path
    from oblivio.node.node import open_node

    def status_kib(field):
        return int(next(line.split()[1] for line in open("/proc/self/status")
                        if line.startswith(field + ":")))

    # The peak of the process's anonymous memory (heap, buffers), sampled every 5 ms: what
    # holding the payload would take. The database file's pages that SQLite reads through its
    # memory map (ADR 0015) count in the RSS too, but they are the OS's file cache.
    peak_anon, stop = [0], threading.Event()
    def sample():
        while not stop.wait(0.005):
            peak_anon[0] = max(peak_anon[0], status_kib("RssAnon"))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    class Pattern:
        '''A deterministic payload of `size` bytes produced on demand, never held whole.'''
        def __init__(self, size):
            self.left, self.counter, self.digest = size, 0, hashlib.sha256()
        def read(self, n):
            n = min(n, self.left)
            block = bytearray()
            while len(block) < n:
                block += hashlib.sha256(self.counter.to_bytes(8, "big")).digest() * 2048
                self.counter += 1
            block = bytes(block[:n])
            self.left -= n
            self.digest.update(block)
            return block

    class HashSink:
        def __init__(self):
            self.digest, self.size = hashlib.sha256(), 0
        def write(self, data):
            self.digest.update(data)
            self.size += len(data)
            return len(data)

    home, size = Path(sys.argv[1]), int(sys.argv[2])
    with open_node(home) as node:
        source = Pattern(size)
        artifact_id = node.vault.put_stream(source, {"size": size})
        sink = HashSink()
        node.vault.read_into(artifact_id, sink)
    stop.set()
    sampler.join()
    print(json.dumps({
        "written": source.digest.hexdigest(), "read": sink.digest.hexdigest(), "size": sink.size,
        # VmHWM is this process image's own peak: getrusage's ru_maxrss would carry over the
        # peak of the (large) pytest process that forked us.
        "max_rss_kib": status_kib("VmHWM"),
        "max_anon_kib": max(peak_anon[0], status_kib("RssAnon")),
    }))
    """
)


@pytest.mark.slow
def test_one_gib_payload_streams_without_being_held_in_memory(node: Node) -> None:
    size = 1 << 30
    done = subprocess.run(
        [sys.executable, "-c", STREAMER, str(node.home), str(size)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["size"] == size
    assert result["read"] == result["written"]
    # The payload is 1024 MiB; the process never held more than a small fraction of it.
    assert result["max_anon_kib"] < 256 * 1024, result


def test_orphan_chunks_of_a_crashed_upload_are_swept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_node(home).close()
    crash = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from oblivio.node.node import open_node
        class Endless:
            def __init__(self): self.n = 0
            def read(self, size):
                self.n += 1
                if self.n == 40:  # after two committed chunk batches: die without cleanup
                    os._exit(9)
                return b"x" * size
        with open_node(Path(sys.argv[1])) as node:
            node.vault.put_stream(Endless(), {})
        """
    )
    done = subprocess.run([sys.executable, "-c", crash, str(home)], check=False)
    assert done.returncode == 9
    with open_node(home) as node:
        with node.db.transaction(write=False) as tx:
            orphaned = tx.fetchone("SELECT COUNT(*) FROM artifact_chunks")
        assert orphaned is not None
        assert orphaned[0] >= 16
        assert node.vault.count() == 0
        kept = node.vault.put(b"kept", {})
        assert node.vault.sweep_orphan_chunks(datetime.now(UTC) - timedelta(hours=1)) == 0
        assert (
            node.vault.sweep_orphan_chunks(datetime.now(UTC) + timedelta(seconds=1)) == orphaned[0]
        )
        assert node.vault.get(kept) == b"kept"
