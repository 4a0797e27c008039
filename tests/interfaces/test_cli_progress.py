"""Progress on the command line (issue 15, deliverable 4): an entity forget and a request's
proof bundle draw progress on standard error when it is a terminal, and nothing when it is not
or with ``--json`` — run as real processes, the terminal a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from oblivio.node.node import init_node

OBLIVIO = (sys.executable, "-m", "oblivio")


def _run(home: Path, *args: str, terminal: bool) -> tuple[int, str, str]:
    """Exit code, standard output and standard error of ``oblivio --home HOME ARGS``; standard
    error is a pseudo-terminal when ``terminal``."""
    command = [*OBLIVIO, "--home", str(home), *args]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "COLUMNS": "120"}
        )
        os.close(follower)
        follower = -1
        drawn = bytearray()
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed its end (EIO on Linux)
                break
            if not chunk:
                break
            drawn += chunk
        assert process.stdout is not None
        out = process.stdout.read().decode()
        process.stdout.close()
        return process.wait(timeout=120), out, drawn.decode(errors="replace")
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "node"
    init_node(home, name="progress.example").close()
    for n in range(5):
        text = tmp_path / f"note{n}.txt"
        text.write_text(f"note {n} about alice")
        code, _, err = _run(home, "put", str(text), "--entity", "user:alice", terminal=False)
        assert code == 0, err
    return home


def test_an_entity_forget_on_a_terminal_shows_its_progress(home: Path) -> None:
    code, out, drawn = _run(home, "forget", "--entity", "user:alice", "--level", "2", terminal=True)
    assert code == 0, drawn
    assert "destroying keys" in drawn
    assert "5/5" in drawn
    assert "committing the epoch" in drawn
    assert "destroying keys" not in out  # progress never enters standard output
    request_id = out.split()[1].rstrip(":")

    code, out, drawn = _run(home, "prove", request_id, "--request", terminal=True)
    assert code == 0, drawn
    assert "proving" in drawn
    assert "5/5" in drawn
    assert json.loads(out)["proofs"]  # standard output is the bundle alone


def test_no_progress_off_a_terminal_or_with_json(home: Path) -> None:
    code, out, err = _run(home, "forget", "--entity", "user:alice", "--level", "2", terminal=False)
    assert code == 0, err
    assert err == ""
    request_id = out.split()[1].rstrip(":")

    code, out, drawn = _run(home, "prove", request_id, "--request", "--json", terminal=True)
    assert code == 0, drawn
    assert drawn == ""  # a terminal, but machine-readable output asked for
    assert json.loads(out)["proofs"]

    code, _, drawn = _run(home, "epoch", "--json", terminal=True)
    assert code == 0, drawn
    assert drawn == ""
