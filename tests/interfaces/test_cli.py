"""The command line end to end, in real subprocesses (DESIGN.md §16)."""

from __future__ import annotations

import json
import os
import socket
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


def test_init_on_existing_home_exit_code(home: Path, tmp_path: Path) -> None:
    # Exit 6 means "no node at --home": a home that holds one is exit 10, and stays untouched.
    key_before = oblivio("key", home=home).stdout
    done = oblivio("init", home=home)
    assert done.returncode == 10
    assert "already initialised" in one_error_line(done)
    assert oblivio("key", home=home).stdout == key_before
    # Part of a node (its signing key) is a node already too.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "signing.key").write_text("not a key\n")
    done = oblivio("init", home=partial)
    assert done.returncode == 10
    assert "already initialised" in one_error_line(done)
    assert sorted(p.name for p in partial.iterdir()) == ["signing.key"]
    # Exit 6 keeps its meaning.
    missing = oblivio("key", home=tmp_path / "nothing-here")
    assert missing.returncode == 6
    assert "no oblivio node at" in one_error_line(missing)


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


# -- arguments that printed a traceback (issue 11 finding 5): one line on stderr, exit 2 --------


def _run_raw(*argv: str | bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m oblivio`` with raw argv items (bytes: not UTF-8, as a shell may pass)."""
    command: list[str | bytes] = [sys.executable, "-m", "oblivio", *argv, "--home", str(home)]
    return subprocess.run(command, capture_output=True, timeout=120, check=False)


def _one_line_exit_2(done: subprocess.CompletedProcess[bytes]) -> str:
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    assert len(line) < 1100  # input quoted in an error is cut
    return line


def test_verify_with_oversized_key_is_one_line_exit_2(home: Path, tmp_path: Path) -> None:
    proof = tmp_path / "pof.json"
    proof.write_text('{"type": "oblivio.pof.v1"}')
    done = oblivio("verify", str(proof), "--key", "k" * 5000)
    line = _one_line_exit_2(done)
    assert line.startswith("oblivio verify: error: verifier key unusable"), line
    assert len(line) < 1200  # the key is quoted, cut


def test_verify_with_binary_key_file_is_one_line_exit_2(home: Path, tmp_path: Path) -> None:
    proof = tmp_path / "pof.json"
    proof.write_text('{"type": "oblivio.pof.v1"}')
    binary = tmp_path / "key.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    line = _one_line_exit_2(oblivio("verify", str(proof), "--key", str(binary)))
    assert "expected a verifier key as UTF-8 text" in line
    huge = tmp_path / "key.txt"
    huge.write_bytes(b"k" * (1 << 20))
    line = _one_line_exit_2(oblivio("verify", str(proof), "--key", str(huge)))
    assert "at most 65536 bytes" in line
    # A key file that is a real key still works (the file is read, not taken as the key).
    key_file = tmp_path / "node.vkey"
    key_file.write_bytes(oblivio("key", home=home).stdout)
    line = _one_line_exit_2(oblivio("verify", str(proof), "--key", str(key_file)))
    assert line.startswith("oblivio verify: error: input: expected an oblivio.pof.v1 object")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--port", "99999"], "argument --port: expected an integer from 1 to 65535"),
        (["--port", "-1"], "argument --port: expected an integer from 1 to 65535"),
        (["--port", "http"], "argument --port: expected an integer from 1 to 65535"),
        (["--host", "h" * 5000], "cannot listen on"),
        (["--host", "no such host.invalid"], "cannot listen on"),
    ],
)
def test_serve_with_unusable_port_or_host_is_one_line_exit_2(
    home: Path, argv: list[str], expected: str
) -> None:
    line = _one_line_exit_2(oblivio("serve", *argv, home=home))
    assert line.startswith("oblivio serve: error: "), line
    assert expected in line


def test_serve_with_an_unusable_node_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert oblivio("init", home=home).returncode == 0
    config = json.loads((home / "config.json").read_text())
    (home / "config.json").write_text(
        json.dumps({**config, "store": "postgresql://postgres@127.0.0.1:1/nothing"})
    )
    done = oblivio("serve", home=home)
    assert b"Traceback" not in done.stderr
    assert done.returncode == 5
    assert "cannot connect to PostgreSQL" in one_error_line(done)
    (home / "config.json").write_text(json.dumps({**config, "forgetting": {"batch_size": "x"}}))
    line = _one_line_exit_2(oblivio("serve", home=home))
    assert "forgetting.batch_size" in line


def test_serve_on_a_port_in_use_is_one_line_exit_2(home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = _one_line_exit_2(oblivio("serve", "--port", str(port), home=home))
    assert f"cannot listen on '127.0.0.1' port {port}: Address already in use" in line


NOT_UTF8 = b"\xff\xfe"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["audit", "--after", "9" * 30], "argument --after: expected an integer from 0 to"),
        (["audit", "--limit", "9" * 30], "argument --limit: expected an integer from 1 to"),
        (["audit", "--limit", "-1"], "argument --limit: expected an integer from 1 to"),
        (["forget", "ab" * 32, "--level", "9" * 20], "argument --level: invalid choice"),
        (["forget", "ab" * 32, "--level", "9" * 5000], "characters cut"),
        (["prove", NOT_UTF8, "--request"], "artifact_id: expected UTF-8 text"),
        (["hold", "release", NOT_UTF8, "--authority", "x"], "target: expected UTF-8 text"),
        (["api-key", "revoke", "--name", NOT_UTF8], "name: expected UTF-8 text"),
        (["forget", "ab" * 32, "--level", "2", "--reason", NOT_UTF8], "reason: expected UTF-8"),
        (["put", "-", "--meta", NOT_UTF8], "meta: expected UTF-8 text"),
        (["hold", "place", "ab" * 32, "--authority", "a" * 201], "--authority: at most 200"),
        (["forget", "ab" * 32, "--level", "2", "--requestor", "r" * 601], "at most 600"),
        (["forget", "ab" * 32, "--level", "2", "--reason", "r" * 2001], "at most 2000"),
        (["restore", "ab" * 32, "--authority", "a" * 201], "--authority: at most 200"),
    ],
)
def test_arguments_that_printed_a_traceback_are_one_line_exit_2(
    home: Path, argv: list[str | bytes], expected: str
) -> None:
    line = _one_line_exit_2(_run_raw(*argv, home=home))
    assert expected in line, line


def test_init_refuses_an_overlong_node_name_and_makes_no_home(tmp_path: Path) -> None:
    home = tmp_path / "node"
    done = oblivio("init", "--name", "n" * 256, home=home)
    assert done.returncode == 2, done.stderr
    assert "node name: at most 255 characters, got 256" in one_error_line(done)
    assert not (home / "config.json").exists()


def test_get_to_an_unusable_file_name_is_one_line_exit_2(home: Path, tmp_path: Path) -> None:
    artifact_id = oblivio("put", "-", home=home, stdin=b"data").stdout.decode().strip()
    line = _one_line_exit_2(
        oblivio("get", artifact_id, "-o", str(tmp_path / ("o" * 5000)), home=home)
    )
    assert "cannot write" in line
    assert "File name too long" in line


def test_unusable_home_is_one_line_exit_2(tmp_path: Path) -> None:
    line = _one_line_exit_2(oblivio("key", home=tmp_path / ("h" * 5000)))
    assert "--home" in line
    assert "File name too long" in line
    line = _one_line_exit_2(oblivio("init", home=tmp_path / ("h" * 5000)))
    assert "File name too long" in line
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = _one_line_exit_2(oblivio("init", home=blocker / "home"))
    assert "cannot create a node at" in line
    assert "Not a directory" in line
