"""The command line end to end, in real subprocesses (DESIGN.md §16)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from oblivio.core.encoding import b64url_decode


def oblivio(
    *args: str, home: Path | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m oblivio`` with ``args`` (and ``--home``), capturing its output."""
    argv = [sys.executable, "-m", "oblivio", *args]
    if home is not None:
        argv += ["--home", str(home)]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=120, check=False)


def one_error_line(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture
def home(tmp_path: Path, store_uri: str) -> Path:
    home = tmp_path / "home"
    done = oblivio("init", "--name", "cli-test", "--store", store_uri, "--json", home=home)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["name"] == "cli-test"
    assert summary["verifier_key"].startswith("cli-test+")
    return home


def test_put_get_key_round_trip(home: Path, tmp_path: Path) -> None:
    payload = tmp_path / "note.txt"
    payload.write_bytes(b"Alice's address\n")
    put = oblivio(
        "put", str(payload), "--meta", '{"kind":"address"}', "--entity", "user:alice", home=home
    )
    assert put.returncode == 0, put.stderr
    artifact_id = put.stdout.decode().strip()
    assert len(artifact_id) == 64

    got = oblivio("get", artifact_id, home=home)
    assert got.returncode == 0
    assert got.stdout == b"Alice's address\n"

    as_json = oblivio("get", artifact_id, "--json", home=home)
    assert b64url_decode(json.loads(as_json.stdout)["plaintext_b64url"]) == b"Alice's address\n"

    out = tmp_path / "out.bin"
    to_file = oblivio("get", artifact_id, "-o", str(out), home=home)
    assert to_file.returncode == 0
    assert out.read_bytes() == b"Alice's address\n"

    key = oblivio("key", "--json", home=home)
    assert json.loads(key.stdout)["verifier_key"].startswith("cli-test+")


def test_put_from_stdin(home: Path) -> None:
    put = oblivio("put", "-", "--json", home=home, stdin=b"from stdin")
    assert put.returncode == 0, put.stderr
    result = json.loads(put.stdout)
    assert result["size"] == 10
    assert oblivio("get", result["artifact_id"], home=home).stdout == b"from stdin"


def test_home_from_environment(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OBLIVIO_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "oblivio", "key"],
        capture_output=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0
    assert done.stdout.decode().startswith("cli-test+")


def test_unknown_id(home: Path) -> None:
    done = oblivio("get", "0" * 64, home=home)
    assert done.returncode == 3
    assert "is not stored on this node" in one_error_line(done)


def test_malformed_id(home: Path) -> None:
    done = oblivio("get", "xyz", home=home)
    assert done.returncode == 2
    assert "artifact id" in one_error_line(done)


def test_invalid_entity_uri(home: Path, tmp_path: Path) -> None:
    payload = tmp_path / "p"
    payload.write_bytes(b"x")
    done = oblivio("put", str(payload), "--entity", "user:*", home=home)
    assert done.returncode == 2
    assert "wildcards are not allowed" in one_error_line(done)


def test_bad_meta_and_missing_file(home: Path, tmp_path: Path) -> None:
    done = oblivio("put", str(tmp_path / "p"), "--meta", "[1]", home=home)
    assert done.returncode == 2
    assert "--meta" in one_error_line(done)
    done = oblivio("put", str(tmp_path / "missing"), home=home)
    assert done.returncode == 2
    assert "cannot read" in one_error_line(done)


def test_missing_home(tmp_path: Path) -> None:
    done = oblivio("get", "0" * 64, home=tmp_path / "nowhere")
    assert done.returncode == 6
    assert "no oblivio node at" in one_error_line(done)


@pytest.mark.parametrize("uri", ["mysql://db/x", "sqlite://host/x.db", "nonsense"])
def test_bad_store_uri_leaves_no_home(tmp_path: Path, uri: str) -> None:
    home = tmp_path / "home"
    done = oblivio("init", "--store", uri, home=home)
    assert done.returncode == 2
    assert "store URI" in one_error_line(done)
    assert not home.exists()


def test_unreachable_store_is_an_infrastructure_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = oblivio(
        "init", "--store", "postgresql://nobody@127.0.0.1:1/x?connect_timeout=1", home=home
    )
    assert done.returncode == 5
    assert "cannot connect" in one_error_line(done)
    assert not home.exists()


def test_bad_keys_uri(tmp_path: Path) -> None:
    done = oblivio("init", "--keys", "kms://somewhere", home=tmp_path / "home")
    assert done.returncode == 2
    assert "keys URI" in one_error_line(done)


def test_init_twice_is_refused(home: Path) -> None:
    done = oblivio("init", home=home)
    assert done.returncode == 6
    assert "already initialised" in one_error_line(done)


def test_tampered_ciphertext(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    artifact_id = oblivio("put", "-", home=home, stdin=b"secret data").stdout.decode().strip()
    with sqlite3.connect(home / "oblivio.db") as conn:
        (data,) = conn.execute("SELECT data FROM artifact_chunks").fetchone()
        conn.execute("UPDATE artifact_chunks SET data = ?", (bytes([data[0] ^ 1]) + data[1:],))
    done = oblivio("get", artifact_id, home=home)
    assert done.returncode == 4
    assert "integrity check failed" in one_error_line(done)
    assert done.stdout == b""
    out = tmp_path / "out"
    done = oblivio("get", artifact_id, "-o", str(out), home=home)
    assert done.returncode == 4
    assert not out.exists()
    assert not (tmp_path / "out.partial").exists()


def test_secret_files_are_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    for name in ("signing.key", "config.json", "oblivio.db", "keys/software-root-keys"):
        assert (home / name).stat().st_mode & 0o077 == 0, name


def test_init_fanout(tmp_path: Path) -> None:
    done = oblivio("init", "--fanout", "1", home=tmp_path / "bad")
    assert done.returncode == 2
    assert "fan-out" in one_error_line(done)
    assert not (tmp_path / "bad").exists()
    home = tmp_path / "home"
    assert oblivio("init", "--fanout", "64", home=home).returncode == 0
    assert json.loads((home / "config.json").read_text())["key_tree"] == {"fanout": 64}
    artifact_id = oblivio("put", "-", home=home, stdin=b"wide tree").stdout.decode().strip()
    assert oblivio("get", artifact_id, home=home).stdout == b"wide tree"
