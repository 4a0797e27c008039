"""Interoperability with Go's ``golang.org/x/mod/sumdb/note`` (issue 14 acceptance): a checkpoint
carrying witness cosignature lines still opens with Go's ``note.Open`` for the log's own key (the
cosignatures are signatures by keys it does not know), and a tampered one does not.

Needs the Go toolchain and Debian's ``golang-golang-x-mod-dev`` (sources under
``/usr/share/gocode``); it builds offline in GOPATH mode. scripts/test.sh installs both under
``CI=true`` as root; elsewhere the test is skipped with the command that enables it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.cosignature import WitnessSigner, append_signature_lines, note_body
from oblivio.core.note import Checkpoint, NoteSigner, sign_checkpoint
from oblivio.core.signing import SigningKey
from oblivio.node.node import init_node
from oblivio.node.services import open_services
from tests.conftest import skip_or_fail

GOPATH = Path("/usr/share/gocode")
NOTE_PACKAGE = GOPATH / "src/golang.org/x/mod/sumdb/note/note.go"
SOURCE = Path(__file__).parent / "go_note_verify.go"
HINT = (
    "Go interop: needs `go` and Debian's golang.org/x/mod sources ({missing}); install them with "
    "`apt-get install golang-go golang-golang-x-mod-dev` (scripts/test.sh does under CI=true)"
)


@pytest.fixture(scope="module")
def go_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go verifier, built from tests/interop/go_note_verify.go."""
    go = shutil.which("go")
    if go is None or not NOTE_PACKAGE.is_file():
        skip_or_fail(HINT.format(missing="go" if go is None else str(NOTE_PACKAGE)))
    assert go is not None
    build = tmp_path_factory.mktemp("go")
    binary = build / "go_note_verify"
    env = os.environ | {
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOCACHE": str(build / "cache"),
        "GOFLAGS": "",
        "CGO_ENABLED": "0",
    }
    result = subprocess.run(
        [go, "build", "-o", str(binary), str(SOURCE)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return binary


def _go_open(binary: Path, vkey: str, note: str, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "note"
    path.write_bytes(note.encode("utf-8"))
    result = subprocess.run(
        [str(binary), vkey, str(path)], capture_output=True, text=True, check=False
    )
    return result.returncode, json.loads(result.stdout) if result.returncode == 0 else {}


WITNESSES = [
    WitnessSigner(f"witness-{i}.example", SigningKey(bytes([60 + i]) * 32)) for i in (1, 2)
]


def _cosigned(note: str) -> str:
    body = note_body(note.encode())
    return append_signature_lines(
        note, [w.cosign(body, 1_790_000_000).to_line() for w in WITNESSES]
    )


def test_go_opens_a_cosigned_checkpoint_for_the_log_key(go_verifier: Path, tmp_path: Path) -> None:
    log = NoteSigner("log.example/a", SigningKey(b"\x51" * 32))
    note = _cosigned(sign_checkpoint(Checkpoint(log.name, 12, bytes(range(32))), log))
    status, opened = _go_open(go_verifier, log.verifier_key, note, tmp_path)
    assert status == 0
    assert opened["text"] == note_body(note.encode())
    assert opened["signers"] == [log.name]
    assert opened["unverified"] == [w.name for w in WITNESSES]


def test_go_refuses_a_tampered_cosigned_checkpoint(go_verifier: Path, tmp_path: Path) -> None:
    log = NoteSigner("log.example/a", SigningKey(b"\x51" * 32))
    note = _cosigned(sign_checkpoint(Checkpoint(log.name, 12, bytes(range(32))), log))
    status, _ = _go_open(go_verifier, log.verifier_key, note.replace("\n12\n", "\n13\n"), tmp_path)
    assert status == 1
    other = NoteSigner(log.name, SigningKey(b"\x52" * 32))
    status, _ = _go_open(go_verifier, other.verifier_key, note, tmp_path)
    assert status == 1


def test_go_opens_a_nodes_cosigned_proof_checkpoint(go_verifier: Path, tmp_path: Path) -> None:
    """The checkpoint of a real Proof of Forgetting, with cosignature lines appended as the node
    serves them, opens with Go for the node's verifier key."""
    with init_node(tmp_path / "home", name="node.example") as node:
        services = open_services(node)
        artifact = node.vault.put(b"payload", {}, None, None)
        services.forgetting.forget(artifact_id=artifact, level=2)
        services.forgetting.commit_due()
        proof = services.forgetting.prove(artifact)
        vkey = services.checkpoints.verifier_key
    note = _cosigned(str(proof["checkpoint"]))
    status, opened = _go_open(go_verifier, vkey, note, tmp_path)
    assert status == 0
    assert opened["signers"] == ["node.example"]
    assert len(opened["unverified"]) == 2


def test_go_opens_the_published_cosigned_checkpoint(go_verifier: Path, tmp_path: Path) -> None:
    vectors = json.loads(
        (Path(__file__).parent.parent / "vectors" / "c2sp_cosignature.json").read_text("utf-8")
    )
    real = vectors["cosigned_checkpoints"][0]
    status, opened = _go_open(
        go_verifier, real["log_signature_to_verify"]["vkey"], real["note_text"], tmp_path
    )
    assert status == 0
    assert opened["text"] == real["checkpoint_body"]
