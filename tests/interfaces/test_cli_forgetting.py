"""Forgetting over the command line, end to end in real subprocesses, on SQLite and PostgreSQL
(DESIGN.md §8, §9, §16): put, forget, get, prove, verify, restore, hold, epoch.

Exit statuses (interfaces/cli.py): 7 the artifact was forgotten, revoked or is suppressed;
8 the proof is invalid (the failing link named); 2 the input is unusable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.errors import IntegrityError
from oblivio.core.identifiers import Capability, parse_artifact_id
from oblivio.interfaces.cli import main
from oblivio.node.node import open_node
from tests.core.test_pof import ALLOWED_LINKS, apply_mutation, mutations, note_mutations
from tests.interfaces.test_cli import oblivio, one_error_line

EXIT_FORGOTTEN = 7
EXIT_PROOF_INVALID = 8
EXIT_USAGE = 2


@pytest.fixture
def home(tmp_path: Path, store_uri: str) -> Path:
    home = tmp_path / "home"
    done = oblivio("init", "--name", "cli-forget.test", "--store", store_uri, home=home)
    assert done.returncode == 0, done.stderr
    return home


def _verifier_key(home: Path) -> str:
    done = oblivio("key", home=home)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def _put(home: Path, payload: bytes, *extra: str) -> str:
    done = oblivio("put", "-", *extra, home=home, stdin=payload)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip()


def _forget(home: Path, *args: str) -> dict[str, Any]:
    done = oblivio("forget", *args, "--json", home=home)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _prove(home: Path, target: str, path: Path, *extra: str) -> dict[str, Any]:
    done = oblivio("prove", target, "-o", str(path), *extra, home=home)
    assert done.returncode == 0, done.stderr
    proof: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return proof


def _key_is_gone(home: Path, artifact_id: str, capability: Capability = "decrypt") -> bool:
    with open_node(home) as node:
        try:
            node.vault.custody.unwrap_capability_key(parse_artifact_id(artifact_id), capability)
        except IntegrityError:
            return True
    return False


def test_put_forget_level_2_prove_verify(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"Alice's address\n", "--entity", "user:alice")
    other = _put(home, b"Bob's address\n", "--entity", "user:bob")
    assert oblivio("get", artifact_id, home=home).stdout == b"Alice's address\n"

    result = _forget(
        home, artifact_id, "--level", "2", "--reason", "GDPR art. 17", "--authority", "GDPR-17"
    )
    assert result["state"] == "done"
    assert result["level"] == 2
    [event] = result["events"]
    assert event["artifact_id"] == artifact_id
    assert event["epoch"] >= 1

    got = oblivio("get", artifact_id, home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert got.stdout == b""
    assert "was forgotten at level 2" in one_error_line(got)
    out = tmp_path / "plain.txt"
    got = oblivio("get", artifact_id, "-o", str(out), home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert not out.exists()
    # Other artifacts are untouched.
    assert oblivio("get", other, home=home).stdout == b"Bob's address\n"

    proof_path = tmp_path / "pof.json"
    proof = _prove(home, artifact_id, proof_path)
    assert proof["type"] == "oblivio.pof.v1"
    assert proof["artifact_id"] == artifact_id
    key = _verifier_key(home)

    verified = oblivio("verify", str(proof_path), "--key", key)
    assert verified.returncode == 0, verified.stderr
    statement = verified.stdout.decode()
    assert f"holds no capability to decrypt artifact {artifact_id}" in statement
    assert "level 2" in statement
    assert "node cli-forget.test" in statement
    assert "software backend" in statement

    as_json = oblivio("verify", str(proof_path), "--key", key, "--json")
    assert as_json.returncode == 0
    [proven] = json.loads(as_json.stdout)["proven"]
    assert proven["artifact_id"] == artifact_id
    assert proven["forget_event_id"] == event["event_id"]

    # The key may be given as a file, and the proof on standard input.
    key_file = tmp_path / "node.vkey"
    key_file.write_text(key + "\n", "utf-8")
    from_stdin = oblivio("verify", "-", "--key", str(key_file), stdin=proof_path.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert _key_is_gone(home, artifact_id)


def _mutated(proof: dict[str, Any], path: tuple[str | int, ...], value: object) -> bytes:
    copy: Any = json.loads(json.dumps(proof))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return json.dumps(copy).encode()


def test_verify_names_the_failing_link_and_exits_8(home: Path, tmp_path: Path) -> None:
    for i in range(4):  # non-empty proof paths
        _put(home, b"padding %d" % i)
    artifact_id = _put(home, b"secret")
    _forget(home, artifact_id, "--level", "2")
    proof = _prove(home, artifact_id, tmp_path / "pof.json")
    key = _verifier_key(home)
    note = proof["checkpoint"]
    flipped_note = note[:2] + chr(ord(note[2]) ^ 1) + note[3:]
    event_hash = proof["record"]["forget_event_hash"]
    other_hash = ("1" if event_hash[0] == "0" else "0") + event_hash[1:]
    cases: list[tuple[tuple[str | int, ...], object, str]] = [
        (("record", "forget_event_hash"), other_hash, "record"),
        (("checkpoint",), flipped_note, "checkpoint"),
        (("forget_event", "level"), 1, "forget_event"),
        (("map_root", "epoch"), proof["map_root"]["epoch"] + 1, "map_root"),
        (("smt_proof", "siblings", 0), "00" * 32, "smt_proof"),
        (("destruction_receipt", "backend"), "pkcs11", "record"),
    ]
    for path, value, link in cases:
        data = _mutated(proof, path, value)
        done = oblivio("verify", "-", "--key", key, stdin=data)
        assert done.returncode == EXIT_PROOF_INVALID, (path, done.stderr)
        assert done.stdout == b""
        line = one_error_line(done)
        assert line.startswith(f"oblivio verify: proof invalid: failed link {link}: "), line
        as_json = oblivio("verify", "-", "--key", key, "--json", stdin=data)
        assert as_json.returncode == EXIT_PROOF_INVALID
        assert json.loads(as_json.stdout) == {
            "valid": False,
            "link": link,
            "error": json.loads(as_json.stdout)["error"],
        }


def test_every_single_mutation_of_a_served_proof_fails_verify(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The proof comes from this backend's node through `oblivio prove`; `oblivio verify` runs
    # in process (hundreds of mutations) and must exit 8 naming the link of the changed field,
    # or 2 when the document's own shape is broken.
    for i in range(6):  # non-empty proof paths
        _put(home, b"padding %d" % i)
    artifact_id = _put(home, b"secret")
    _forget(home, artifact_id, "--level", "2")
    proof = _prove(home, artifact_id, tmp_path / "pof.json")
    key = _verifier_key(home)
    target = tmp_path / "mutated.json"

    def verify(document: dict[str, Any]) -> tuple[int, str]:
        target.write_text(json.dumps(document), "utf-8")
        status = main(["verify", str(target), "--key", key])
        captured = capsys.readouterr()
        assert captured.out == ""
        return status, captured.err.strip()

    assert main(["verify", str(tmp_path / "pof.json"), "--key", key]) == 0
    capsys.readouterr()
    cases = [(path, what, apply_mutation(proof, path, new)) for path, what, new in mutations(proof)]
    cases += [
        (("checkpoint",), "note byte", {**proof, "checkpoint": n})
        for n in note_mutations(proof["checkpoint"])
    ]
    checked = 0
    for path, what, mutated in cases:
        if mutated == proof:
            continue
        status, error = verify(mutated)
        where = f"{what} at {'.'.join(map(str, path)) or '(document)'}"
        if status == EXIT_USAGE:
            # Only a broken top-level shape makes the document unusable.
            assert len(path) <= 1, f"{where}: {error}"
            assert error.startswith("oblivio verify: error: input"), f"{where}: {error}"
            continue
        assert status == EXIT_PROOF_INVALID, f"{where}: exit {status}"
        prefix = "oblivio verify: proof invalid: failed link "
        assert error.startswith(prefix), f"{where}: {error}"
        link = error[len(prefix) :].partition(":")[0]
        assert link in ALLOWED_LINKS[str(path[0])], f"{where}: link {link}"
        checked += 1
    assert checked > 300, checked


def test_verify_exits_2_when_the_input_is_unusable(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"secret")
    _forget(home, artifact_id, "--level", "2")
    proof = _prove(home, artifact_id, tmp_path / "pof.json")
    key = _verifier_key(home)
    without_record = {k: v for k, v in proof.items() if k != "record"}
    unusable: list[tuple[list[str], bytes | None]] = [
        (["-", "--key", key], b"this is not json"),
        (["-", "--key", key], b"[1, 2, 3]"),
        (["-", "--key", key], json.dumps({**proof, "type": "oblivio.pof.v0"}).encode()),
        (
            ["-", "--key", key],
            json.dumps(without_record).encode(),
        ),
        (["-", "--key", "no-such-key"], json.dumps(proof).encode()),
        ([str(tmp_path / "missing.json"), "--key", key], None),
    ]
    for args, data in unusable:
        done = oblivio("verify", *args, stdin=data)
        assert done.returncode == EXIT_USAGE, (args, data, done.stderr)
        assert done.stdout == b""
        assert one_error_line(done).startswith("oblivio verify: error: ")


def test_level_0_is_reversible_over_the_cli(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"revocable")
    result = _forget(home, artifact_id, "--level", "0")
    assert result["level"] == 0
    got = oblivio("get", artifact_id, home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert "revoked" in one_error_line(got)
    refused = oblivio("prove", artifact_id, "-o", str(tmp_path / "p.json"), home=home)
    assert refused.returncode == EXIT_USAGE
    assert "proofs exist for level 2 only" in one_error_line(refused)
    assert not (tmp_path / "p.json").exists()

    restored = oblivio("restore", artifact_id, "--authority", "DPO", home=home)
    assert restored.returncode == 0, restored.stderr
    assert oblivio("get", artifact_id, home=home).stdout == b"revocable"
    assert not _key_is_gone(home, artifact_id)
    # Restoring what is not revoked is refused.
    again = oblivio("restore", artifact_id, home=home)
    assert again.returncode == EXIT_USAGE
    assert "cannot be restored" in one_error_line(again)


def test_level_1_is_not_reversible_over_the_cli(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"erasable")
    result = _forget(home, artifact_id, "--level", "1")
    assert result["state"] == "done"
    got = oblivio("get", artifact_id, home=home)
    assert got.returncode == EXIT_FORGOTTEN
    assert "forgotten at level 1" in one_error_line(got)
    restore = oblivio("restore", artifact_id, home=home)
    assert restore.returncode == EXIT_USAGE
    assert "cannot be restored" in one_error_line(restore)
    assert oblivio("get", artifact_id, home=home).returncode == EXIT_FORGOTTEN
    refused = oblivio("prove", artifact_id, "-o", str(tmp_path / "p.json"), home=home)
    assert refused.returncode == EXIT_USAGE
    assert "level 2 only" in one_error_line(refused)
    assert _key_is_gone(home, artifact_id)


def test_a_legal_hold_defers_destruction_until_released(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"under hold", "--entity", "user:dave")
    placed = oblivio("hold", "place", artifact_id, "--authority", "court order 12", home=home)
    assert placed.returncode == 0, placed.stderr
    hold_id = placed.stdout.decode().strip()

    result = _forget(home, artifact_id, "--level", "1")
    assert result["state"] == "pending"
    assert [e["epoch"] for e in result["events"]] == [None]
    assert oblivio("get", artifact_id, home=home).returncode == EXIT_FORGOTTEN
    assert oblivio("epoch", home=home).returncode == 0
    assert not _key_is_gone(home, artifact_id)

    released = oblivio("hold", "release", hold_id, "--authority", "court", home=home)
    assert released.returncode == 0, released.stderr
    assert oblivio("epoch", home=home).returncode == 0
    assert _key_is_gone(home, artifact_id)
    assert oblivio("get", artifact_id, home=home).returncode == EXIT_FORGOTTEN
    twice = oblivio("hold", "release", hold_id, "--authority", "court", home=home)
    assert twice.returncode == EXIT_USAGE


def test_entity_forget_in_scopes_proves_a_bundle(home: Path, tmp_path: Path) -> None:
    by_scope = {
        scope: _put(home, scope.encode(), "--entity", "user:erin", "--scope", scope)
        for scope in ("local", "team", "company", "public")
    }
    result = _forget(home, "--entity", "user:erin", "--scope", '["team", "public"]', "--level", "2")
    forgotten = {e["artifact_id"] for e in result["events"]}
    assert forgotten == {by_scope["team"], by_scope["public"]}
    for scope, artifact_id in by_scope.items():
        got = oblivio("get", artifact_id, home=home)
        if scope in ("team", "public"):
            assert got.returncode == EXIT_FORGOTTEN
        else:
            assert got.stdout == scope.encode()

    bundle_path = tmp_path / "bundle.json"
    bundle = _prove(home, result["request_id"], bundle_path, "--request")
    assert bundle["type"] == "oblivio.pof-bundle.v1"
    assert len(bundle["proofs"]) == 2
    done = oblivio("verify", str(bundle_path), "--key", _verifier_key(home), "--json")
    assert done.returncode == 0, done.stderr
    proven = json.loads(done.stdout)["proven"]
    assert {p["artifact_id"] for p in proven} == forgotten
    assert len({p["checkpoint_size"] for p in proven}) == 1


def test_get_after_partial_forgets_says_forgotten(home: Path, tmp_path: Path) -> None:
    artifact_id = _put(home, b"recover, then decrypt")
    _forget(home, artifact_id, "--level", "2", "--capabilities", "recover")
    assert oblivio("get", artifact_id, home=home).stdout == b"recover, then decrypt"
    _forget(home, artifact_id, "--level", "2", "--capabilities", "decrypt")
    got = oblivio("get", artifact_id, home=home)
    assert got.returncode == EXIT_FORGOTTEN, got.stderr
    assert "was forgotten at level 2" in one_error_line(got)
    assert got.stdout == b""
    _prove(home, artifact_id, tmp_path / "pof.json")
    verified = oblivio("verify", str(tmp_path / "pof.json"), "--key", _verifier_key(home), "--json")
    assert verified.returncode == 0, verified.stderr
    [proven] = json.loads(verified.stdout)["proven"]
    assert proven["capabilities"] == ["decrypt", "recover"]
    assert "(forgotten: decrypt, recover)" in proven["statement"]


def test_an_identical_forget_answers_with_the_existing_request(home: Path) -> None:
    artifact_id = _put(home, b"once")
    first = _forget(home, artifact_id, "--level", "2", "--requestor", "alice")
    assert first["existing"] is False
    assert first["opening"]["value"]["requestor"] == "alice"
    again = _forget(home, artifact_id, "--level", "2", "--capabilities", "decrypt")
    assert again["existing"] is True
    assert again["request_id"] == first["request_id"]
    assert again["opening"] is None
    assert again["events"] == first["events"]
    human = oblivio("forget", artifact_id, "--level", "2", home=home)
    assert human.returncode == 0, human.stderr
    assert f"request {first['request_id']}: done (already requested" in human.stdout.decode()
    with open_node(home) as node, node.db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM forget_requests") == (1,)
