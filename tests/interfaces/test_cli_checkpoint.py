"""``oblivio checkpoint`` prints the latest signed checkpoint, verifiable with ``oblivio key``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oblivio.core.note import open_checkpoint, parse_verifier_key
from oblivio.interfaces.cli import main


def test_checkpoint_prints_a_note_the_verifier_key_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "node")
    assert main(["init", "--home", home, "--name", "oblivio.example/cli"]) == 0
    capsys.readouterr()
    assert main(["key", "--home", home]) == 0
    vkey = capsys.readouterr().out.strip()
    assert main(["checkpoint", "--home", home]) == 0
    note = capsys.readouterr().out
    checkpoint = open_checkpoint(note.encode(), parse_verifier_key(vkey))
    assert checkpoint.origin == "oblivio.example/cli"
    assert checkpoint.size == 1
    # Asking again prints the same checkpoint: reading does not commit epochs.
    assert main(["checkpoint", "--home", home, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint"] == note
    assert data["verifier_key"] == vkey
    assert data["epoch"] == 1


def test_checkpoint_without_a_node_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["checkpoint", "--home", str(tmp_path / "none")]) == 6
    assert "no oblivio node" in capsys.readouterr().err
