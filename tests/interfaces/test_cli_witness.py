"""``oblivio witness``, ``verify --witness/--quorum`` and ``verify-evidence`` refuse bad input with
the documented exit codes, in real subprocesses (DESIGN.md §16, §17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oblivio.core.cosignature import parse_witness_key
from oblivio.core.note import Checkpoint, NoteSigner, sign_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.core.witness import EquivocationEvidence
from tests.interfaces.test_cli import oblivio, one_error_line

LOG = NoteSigner("log.example", SigningKey(b"\x71" * 32))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    done = oblivio("init", "--name", "witness.example", home=home)
    assert done.returncode == 0, done.stderr
    return home


def test_witness_key_is_a_cosignature_key_distinct_from_the_node_key(home: Path) -> None:
    done = oblivio("witness", "key", "--json", home=home)
    assert done.returncode == 0, done.stderr
    wkey = json.loads(done.stdout)["verifier_key"]
    assert parse_witness_key(wkey).name == "witness.example"
    node = json.loads(oblivio("key", "--json", home=home).stdout)["verifier_key"]
    assert wkey.split("+")[2] != node.split("+")[2]


def test_add_log_and_use_refuse_mismatched_or_wrong_type_keys(home: Path) -> None:
    wrong_name = oblivio("witness", "add-log", "other.example", LOG.verifier_key, home=home)
    assert wrong_name.returncode == 2
    assert "not the origin 'other.example'" in one_error_line(wrong_name)
    # A log's note key (0x01) given as a witness key.
    as_witness = oblivio(
        *("witness", "use", "log.example", "--url", "http://127.0.0.1:1/v1/witness"),
        *("--key", LOG.verifier_key),
        home=home,
    )
    assert as_witness.returncode == 2
    assert "expected signature type 0x04" in one_error_line(as_witness)
    wkey = json.loads(oblivio("witness", "key", "--json", home=home).stdout)["verifier_key"]
    bad_url = oblivio(
        *("witness", "use", "witness.example", "--url", "ftp://x", "--key", wkey), home=home
    )
    assert bad_url.returncode == 2
    added = oblivio("witness", "add-log", "log.example", LOG.verifier_key, home=home)
    assert added.returncode == 0, added.stderr
    logs = json.loads(oblivio("witness", "logs", "--json", home=home).stdout)["logs"]
    assert [(log["origin"], log["size"]) for log in logs] == [("log.example", 0)]
    assert json.loads(oblivio("witness", "list", "--json", home=home).stdout)["witnesses"] == []
    missing = oblivio("witness", "remove", "nobody", home=home)
    assert missing.returncode == 3


def test_verify_evidence_exit_codes(tmp_path: Path) -> None:
    first = sign_checkpoint(Checkpoint(LOG.name, 9, b"\x01" * 32), LOG)
    second = sign_checkpoint(Checkpoint(LOG.name, 9, b"\x02" * 32), LOG)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(EquivocationEvidence(LOG.name, 9, first, second).to_dict()))
    done = oblivio("verify-evidence", str(good), "--key", LOG.verifier_key)
    assert done.returncode == 0, done.stderr
    assert b"equivocation proven" in done.stdout
    same = tmp_path / "same.json"
    same.write_text(json.dumps(EquivocationEvidence(LOG.name, 9, first, first).to_dict()))
    refused = oblivio("verify-evidence", str(same), "--key", LOG.verifier_key)
    assert refused.returncode == 8
    assert b"same root" in refused.stderr
    other_key = NoteSigner(LOG.name, SigningKey(b"\x72" * 32)).verifier_key
    assert oblivio("verify-evidence", str(good), "--key", other_key).returncode == 8
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"type": "something else"}')
    assert oblivio("verify-evidence", str(garbage), "--key", LOG.verifier_key).returncode == 2


def test_verify_refuses_a_quorum_above_the_witnesses(tmp_path: Path) -> None:
    proof = tmp_path / "proof.json"
    proof.write_text("{}")
    done = oblivio("verify", str(proof), "--key", LOG.verifier_key, "--quorum", "1")
    assert done.returncode == 2
    bad = oblivio("verify", str(proof), "--key", LOG.verifier_key, "--witness", "nonsense")
    assert bad.returncode == 2
    assert "--witness" in one_error_line(bad)
