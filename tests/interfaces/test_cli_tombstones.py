"""Data written with ``oblivio put`` about an entity a tombstone covers (ADR 0018), in real
subprocesses on SQLite and PostgreSQL: stored and forgotten at once, answering as any forgotten
artifact does; a legal-hold tombstone keeps it suppressed until revoked.

The command line has no tombstone commands (they are issued over HTTP or by a peer): the tests
issue and revoke them through the node's services, as the HTTP API does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from oblivio.node.node import open_node
from oblivio.node.services import open_services
from tests.interfaces.test_cli import oblivio, one_error_line

EXIT_FORGOTTEN = 7


@pytest.fixture
def home(tmp_path: Path, store_uri: str) -> Path:
    home = tmp_path / "home"
    done = oblivio("init", "--name", "cli-tombstones.test", "--store", store_uri, home=home)
    assert done.returncode == 0, done.stderr
    return home


def _issue(home: Path, entity: str, *, legal_hold: bool = False) -> str:
    with open_node(home) as node:
        record, created = open_services(node).compliance.tombstones.issue(
            "admin-1", entity, "*", "erasure request", legal_hold
        )
    assert created
    return record.id


def _put(home: Path, payload: bytes, entity: str, scope: str = "team") -> str:
    done = oblivio("put", "-", "--entity", entity, "--scope", scope, home=home, stdin=payload)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def _blank(line: str) -> str:
    line = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", line)
    return re.sub(r"[0-9a-f]{64}", "<hex32>", line)


def test_put_after_tombstone_is_suppressed(home: Path, tmp_path: Path) -> None:
    _issue(home, "user:carol")
    late = _put(home, b"carol's new address", "user:carol")
    kept = _put(home, b"dave's address", "user:dave")
    erased = _put(home, b"dave's old address", "user:dave", "local")
    forgot = oblivio("forget", erased, "--level", "2", home=home)
    assert forgot.returncode == 0, forgot.stderr

    got = oblivio("get", late, home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert got.stdout == b""
    # The very answer an artifact forgotten by ``oblivio forget`` gives.
    ordinary = oblivio("get", erased, home=home)
    assert ordinary.returncode == EXIT_FORGOTTEN
    assert _blank(one_error_line(got)) == _blank(one_error_line(ordinary))
    assert oblivio("get", kept, home=home).stdout == b"dave's address"

    # Executed at the next epoch like any forget: a Proof of Forgetting that verifies.
    assert oblivio("epoch", home=home).returncode == 0
    proof = tmp_path / "late.pof.json"
    assert oblivio("prove", late, "-o", str(proof), home=home).returncode == 0
    key = oblivio("key", home=home).stdout.decode().strip()
    verified = oblivio("verify", str(proof), "--key", key, "--json", home=home)
    assert verified.returncode == 0, verified.stderr
    [proven] = json.loads(verified.stdout)["proven"]
    assert (proven["artifact_id"], proven["level"]) == (late, 2)


def test_put_after_legal_hold_tombstone_stays_suppressed_until_revoked(home: Path) -> None:
    tombstone_id = _issue(home, "user:erin", legal_hold=True)
    held = _put(home, b"erin's contract", "user:erin", "company")
    assert oblivio("epoch", home=home).returncode == 0
    got = oblivio("get", held, home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert "was forgotten at level 2" in one_error_line(got)

    with open_node(home) as node:
        revocation = open_services(node).compliance.tombstones.revoke(
            "admin-1", tombstone_id, "hold lifted"
        )
    assert revocation.erased_artifacts == ()
    restored = oblivio("get", held, home=home)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == b"erin's contract"
