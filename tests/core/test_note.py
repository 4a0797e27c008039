"""C2SP signed notes and checkpoints against tests/vectors/signed_note.json (C2SP spec examples,
Go ``sumdb/note`` tests, transparency-dev/formats), and our own checkpoints checked for the
format Go's ``note.Open`` accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from oblivio.core.encoding import b64_std_decode
from oblivio.core.errors import VerificationError
from oblivio.core.note import (
    Checkpoint,
    NoteSigner,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    verifier_key,
)
from oblivio.core.signing import SigningKey

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "signed_note.json").read_text("utf-8")
)
NOTE_CASES = VECTORS["cases"] + VECTORS["ecdsa_cases"]


def _message(case: dict[str, Any]) -> bytes:
    message = bytes.fromhex(case["note_hex"])
    if case["note_text"] is not None:
        assert message == case["note_text"].encode("utf-8")
    return message


@pytest.mark.parametrize("case", NOTE_CASES, ids=lambda c: c["name"])
def test_note_cases(case: dict[str, Any]) -> None:
    verifiers = [parse_verifier_key(v) for v in case["verifier_keys"]]
    if not case["valid"]:
        with pytest.raises(VerificationError) as info:
            open_note(_message(case), verifiers)
        expected_error = case.get("error")
        if expected_error is not None:
            # The vectors name Go's error; ours says the same words.
            assert expected_error.split(" (")[0] in str(info.value)
        return
    note = open_note(_message(case), verifiers)
    if "verified_signers" in case:
        assert [s.name for s in note.signatures] == case["verified_signers"]
    assert [s.name for s in note.unverified] == case.get("unverified_signers", [])
    if "checkpoint" in case:
        checkpoint = parse_checkpoint(note.text)
        assert checkpoint.origin == case["checkpoint"]["origin"]
        assert checkpoint.size == case["checkpoint"]["tree_size"]
        assert checkpoint.root == b64_std_decode(case["checkpoint"]["root_hash_b64"])


@pytest.mark.parametrize("case", VECTORS["verifier_key_cases"], ids=lambda c: c["verifier_key"])
def test_verifier_key_cases(case: dict[str, Any]) -> None:
    if case["valid"]:
        verifier = parse_verifier_key(case["verifier_key"])
        if verifier.algorithm == 1:
            assert verifier_key(verifier.name, verifier.public_key) == case["verifier_key"]
    else:
        with pytest.raises(VerificationError, match="verifier key"):
            parse_verifier_key(case["verifier_key"])


@pytest.mark.parametrize("case", VECTORS["keypair_cases"], ids=lambda c: c["verifier_key"])
def test_keypairs_derive_their_verifier_keys(case: dict[str, Any]) -> None:
    assert parse_signer_key(case["signer_key"]).verifier_key == case["verifier_key"]


@pytest.mark.parametrize("case", VECTORS["signer_cases"], ids=lambda c: c["name"])
def test_signer_reproduces_go_signature_lines(case: dict[str, Any]) -> None:
    signer = parse_signer_key(case["signer_key"])
    signed = sign_note(case["note_text_to_sign"], [signer])
    sig_line = signed[len(case["note_text_to_sign"]) + 1 :]
    # Ed25519 is deterministic, so our line is byte-for-byte the one Go wrote.
    assert sig_line in case["expected_signed_note"]
    open_note(case["expected_signed_note"].encode(), [signer.verifier()])


def test_go_signed_checkpoint_fixture_verifies() -> None:
    """A real sum.golang.org checkpoint, signed by Go's implementation, opens as a checkpoint."""
    case = next(c for c in VECTORS["cases"] if c["name"] == "sumdb-checkpoint")
    verifier = parse_verifier_key(case["verifier_keys"][0])
    opened = open_note(_message(case), [verifier])
    assert parse_checkpoint(opened.text).size == 6476701


def test_format_examples_parse() -> None:
    example = next(e for e in VECTORS["format_examples"] if "checkpoint" in e)
    text = example["note_text"].split("\n\n")[0] + "\n"
    cp = parse_checkpoint(text)
    assert (cp.origin, cp.size) == (
        example["checkpoint"]["origin"],
        example["checkpoint"]["tree_size"],
    )


# Go's note.Open rules, written out independently of open_note, for checking our own output:
# https://cs.opensource.google/go/x/mod/+/master:sumdb/note/note.go (Open, isValidName, chop).
_GO_SIG_LINE = re.compile(r"\u2014 ([^ +\s]+) ([A-Za-z0-9+/]+=*)\n")


def _go_open_format_check(note: str, name: str, key_hash: bytes) -> str:
    assert all(ord(c) >= 0x20 or c == "\n" for c in note)
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    assert sigs.endswith("\n")
    lines = list(_GO_SIG_LINE.finditer(sigs))
    assert "".join(m.group(0) for m in lines) == sigs
    assert len(lines) == 1
    assert lines[0].group(1) == name
    raw = b64_std_decode(lines[0].group(2))
    assert raw[:4] == key_hash
    assert len(raw) == 68
    return text


def test_our_checkpoint_is_in_the_format_go_accepts() -> None:
    key = SigningKey(bytes(range(32)))
    signer = NoteSigner("oblivio.example/node-1", key)
    checkpoint = Checkpoint(signer.name, 42, bytes(range(32)))
    note = sign_checkpoint(checkpoint, signer)
    text = _go_open_format_check(note, signer.name, signer.key_hash)
    assert text == "oblivio.example/node-1\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    # The signature checks out with pyca directly, as Go's ed25519.Verify would check it.
    raw = b64_std_decode(note.rsplit(" ", 1)[1].strip())
    Ed25519PublicKey.from_public_bytes(key.verify_key.public_bytes).verify(raw[4:], text.encode())
    vkey = signer.verifier_key
    assert re.fullmatch(r"oblivio\.example/node-1\+[0-9a-f]{8}\+A[A-Za-z0-9+/]{43}", vkey)
    assert open_checkpoint(note.encode(), parse_verifier_key(vkey)) == checkpoint


def test_checkpoint_signed_by_another_key_or_origin_fails() -> None:
    signer = NoteSigner("node-a", SigningKey(bytes(32)))
    other = NoteSigner("node-b", SigningKey(bytes([1]) * 32))
    note = sign_checkpoint(Checkpoint("node-a", 1, bytes(32)), signer).encode()
    with pytest.raises(VerificationError, match="no verifiable signatures"):
        open_checkpoint(note, other.verifier())
    # A note by node-a whose checkpoint names another origin.
    foreign = sign_note(Checkpoint("node-b", 1, bytes(32)).to_text(), [signer]).encode()
    with pytest.raises(VerificationError, match="expected origin 'node-a', got 'node-b'"):
        open_checkpoint(foreign, signer.verifier())
    tampered = note.replace(b"\n1\n", b"\n2\n")
    with pytest.raises(VerificationError, match="invalid signature for key node-a"):
        open_checkpoint(tampered, signer.verifier())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n1\n" + "A" * 43 + "=\nextension\n", "no extension lines"),
        ("o\n01\n" + "A" * 43 + "=\n", "size must be a decimal"),
        ("o\n-1\n" + "A" * 43 + "=\n", "size must be a decimal"),
        ("o\n1\nAAAA\n", "root must be 32 bytes"),
        ("o\n1\n" + "A" * 43 + "=", "end in a newline"),
        ("o\n1\n", "expected 3 lines"),
        ("\n1\n" + "A" * 43 + "=\n", "origin line is empty"),
    ],
)
def test_checkpoint_parsing_is_strict(text: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_checkpoint(text)


def test_sign_note_refuses_unusable_text() -> None:
    signer = NoteSigner("n", SigningKey(bytes(32)))
    with pytest.raises(ValueError, match="newline"):
        sign_note("no newline", [signer])
    with pytest.raises(ValueError, match="control"):
        sign_note("tab\there\n", [signer])
    with pytest.raises(ValueError, match="invalid key name"):
        NoteSigner("has space", SigningKey(bytes(32)))
