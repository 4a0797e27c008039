"""C2SP tlog-cosignature v1 (Ed25519): the published vectors (tests/vectors/c2sp_cosignature.json),
an independent implementation written here from the C2SP text and checked both ways against
oblivio's, and property tests of the encoders and decoders."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.cosignature import (
    Cosignature,
    WitnessSigner,
    append_signature_lines,
    check_cosignatures,
    cosigned_message,
    derive_witness_key,
    note_body,
    parse_cosignature_line,
    parse_witness_key,
    verify_cosignatures,
    witness_verifier_key,
)
from oblivio.core.errors import VerificationError
from oblivio.core.note import (
    Checkpoint,
    NoteSigner,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
)
from oblivio.core.signing import SigningKey

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "c2sp_cosignature.json").read_text("utf-8")
)
REAL = VECTORS["cosigned_checkpoints"][0]


# -- an independent tlog-cosignature v1, from the C2SP text only -----------------------------------
# c2sp.org/tlog-cosignature: key ID = SHA-256(name || "\n" || 0x04 || pk)[:4]; the signature is
# u64 timestamp (big-endian) || Ed25519 signature over "cosignature/v1\n" "time <ts>\n" || body;
# the line is "— <name> " base64(key ID || timestamp || signature) "\n".


def _ref_key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4]


def _ref_message(body: str, timestamp: int) -> bytes:
    return b"cosignature/v1\n" + b"time " + str(timestamp).encode() + b"\n" + body.encode()


def _ref_cosign(private: Ed25519PrivateKey, name: str, body: str, timestamp: int) -> str:
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = private.sign(_ref_message(body, timestamp))
    payload = _ref_key_id(name, public) + timestamp.to_bytes(8, "big") + signature
    return "\u2014 " + name + " " + base64.b64encode(payload).decode() + "\n"


def _ref_verify(public: bytes, name: str, note: str) -> list[int]:
    """Timestamps of the valid cosignatures by (name, public) in ``note``."""
    body, _, signatures = note.rpartition("\n\n")
    body += "\n"
    found = []
    for line in signatures.splitlines():
        dash, line_name, b64 = line.split(" ")
        payload = base64.b64decode(b64)
        if dash != "\u2014" or line_name != name or len(payload) != 76:
            continue
        if payload[:4] != _ref_key_id(name, public):
            continue
        timestamp = int.from_bytes(payload[4:12], "big")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                payload[12:], _ref_message(body, timestamp)
            )
        except InvalidSignature:
            continue
        found.append(timestamp)
    return found


def _ref_vkey(name: str, public: bytes) -> str:
    encoded = base64.b64encode(b"\x04" + public).decode()
    return f"{name}+{_ref_key_id(name, public).hex()}+{encoded}"


# -- published vectors -----------------------------------------------------------------------------


def test_real_cosigned_checkpoint_verifies_for_the_published_witness() -> None:
    note = REAL["note_text"].encode()
    witnesses = [parse_witness_key(k) for k in REAL["verifier_keys"] if "+BO" in k]
    report = verify_cosignatures(note, witnesses, quorum=1)
    assert report.signers == ("remora.n621.de+da77ade7",)
    assert report.signed[0][1] == next(
        line["timestamp"]
        for line in REAL["signature_lines"]
        if line["key_name"] == "remora.n621.de"
    )
    assert note_body(note) == REAL["checkpoint_body"]


def test_real_note_still_opens_for_the_log_key_alone() -> None:
    log_key = REAL["log_signature_to_verify"]["vkey"]
    opened = open_note(REAL["note_text"].encode(), [parse_verifier_key(log_key)])
    assert opened.text == REAL["checkpoint_body"]
    assert len(opened.unverified) == len(REAL["signature_lines"]) - 1


def test_real_cosignature_lines_decode_as_published() -> None:
    for line in REAL["signature_lines"]:
        if line["bytes_after_key_id"] != 72:
            with pytest.raises(VerificationError):
                parse_cosignature_line(line["line"])
            continue
        decoded = parse_cosignature_line(line["line"])
        assert decoded.name == line["key_name"]
        assert decoded.key_hash.hex() == line["key_id_hex"]
        assert decoded.timestamp == line["timestamp"]
        assert decoded.to_line() == line["line"] + "\n"


@pytest.mark.parametrize("mutate", ["body", "timestamp"])
def test_real_cosignature_refused_when_altered(mutate: str) -> None:
    witness = parse_witness_key(REAL["cosignatures_to_verify"][0]["witness_vkey"])
    line = parse_cosignature_line(REAL["cosignatures_to_verify"][0]["line"])
    body = REAL["checkpoint_body"]
    assert line.verifies(body, witness)
    if mutate == "body":
        assert not line.verifies(body.replace("1432088532", "1432088533"), witness)
    else:
        moved = Cosignature(line.name, line.key_hash, line.timestamp + 1, line.signature)
        assert not moved.verifies(body, witness)


def test_verifier_key_cases() -> None:
    for case in VECTORS["verifier_key_cases"]:
        if case["type"] == "0x04":
            witness = parse_witness_key(case["vkey"])
            assert witness.verifier_key == case["vkey"]
        else:
            # transparency-dev/formats converts a 0x01 note key; oblivio refuses it on purpose
            # (docs/adr/0021): a log's key is not a witness's.
            with pytest.raises(VerificationError, match="expected signature type 0x04"):
                parse_witness_key(case["vkey"])


def test_timestamp_cases() -> None:
    for case in VECTORS["timestamp_cases"]:
        line = "\u2014 w " + case["signature_b64"]
        if case["want_error"]:
            with pytest.raises(VerificationError):
                parse_cosignature_line(line)
        else:
            assert parse_cosignature_line(line).timestamp == case["want_timestamp"]


def test_spec_example_signed_message() -> None:
    examples = {e["name"]: e for e in VECTORS["format_only_examples"]}
    cosigned = examples["tlog-cosignature-spec-cosigned-checkpoint"]
    message = examples["tlog-cosignature-spec-signed-message"]["signed_message"]
    body = note_body(cosigned["note_text"].encode())
    timestamp = parse_cosignature_line(cosigned["signature_lines"][1]["line"]).timestamp
    assert cosigned_message(body, timestamp) == message.encode()


def test_witness_response_example_lines_decode() -> None:
    """The spec's example lines are made up: two carry timestamps above 2^63 - 1, which the
    cosignature spec forbids, so they are refused; the third decodes."""
    examples = {e["name"]: e for e in VECTORS["format_only_examples"]}
    response = examples["tlog-witness-add-checkpoint-response-body"]
    for line, want in zip(
        response["http_body"].splitlines(), response["signature_lines"], strict=True
    ):
        if want["timestamp"] > 2**63 - 1:
            with pytest.raises(VerificationError, match="exceeds"):
                parse_cosignature_line(line)
            continue
        decoded = parse_cosignature_line(line)
        assert (decoded.name, decoded.key_hash.hex()) == (want["key_name"], want["key_id_hex"])
        assert decoded.timestamp == want["timestamp"]


# -- both ways against the independent implementation ----------------------------------------------


def _checkpoint_note(seed: int = 1, size: int = 7) -> tuple[str, NoteSigner]:
    signer = NoteSigner("log.example/a", SigningKey(bytes([seed]) * 32))
    return sign_checkpoint(Checkpoint("log.example/a", size, bytes(range(32))), signer), signer


def test_ours_verify_with_the_independent_implementation() -> None:
    note, _ = _checkpoint_note()
    witness = WitnessSigner("witness.example/w1", SigningKey(b"\x07" * 32))
    line = witness.cosign(note_body(note.encode()), 1_700_000_000).to_line()
    cosigned = append_signature_lines(note, [line])
    public = witness.signing_key.verify_key.public_bytes
    assert _ref_verify(public, "witness.example/w1", cosigned) == [1_700_000_000]
    assert witness.verifier_key == _ref_vkey("witness.example/w1", public)


def test_independent_cosignatures_verify_with_ours() -> None:
    note, log = _checkpoint_note()
    private = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    line = _ref_cosign(private, "w2.example", note_body(note.encode()), 1_800_000_000)
    cosigned = append_signature_lines(note, [line]).encode()
    witness = parse_witness_key(_ref_vkey("w2.example", public))
    report = verify_cosignatures(cosigned, [witness], 1)
    key_id = "w2.example+" + _ref_key_id("w2.example", public).hex()
    assert report.signed == ((key_id, 1_800_000_000),)
    # The log's own signature still verifies with the cosignature line present.
    assert open_checkpoint(cosigned, log.verifier()).size == 7


def test_independent_cosignature_over_another_note_is_refused() -> None:
    note, _ = _checkpoint_note()
    other, _ = _checkpoint_note(size=8)
    private = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    line = _ref_cosign(private, "w2.example", note_body(other.encode()), 5)
    witness = parse_witness_key(_ref_vkey("w2.example", public))
    report = check_cosignatures(append_signature_lines(note, [line]).encode(), [witness])
    assert report.signed == ()
    assert report.invalid == (witness.key_id,)


# -- quorum ----------------------------------------------------------------------------------------


def test_quorum_names_signers_and_missing() -> None:
    note, _ = _checkpoint_note()
    body = note_body(note.encode())
    w1 = WitnessSigner("w1.example", SigningKey(b"\x01" * 32))
    w2 = WitnessSigner("w2.example", SigningKey(b"\x02" * 32))
    w3 = WitnessSigner("w3.example", SigningKey(b"\x03" * 32))
    cosigned = append_signature_lines(
        note, [w1.cosign(body, 10).to_line(), w1.cosign(body, 11).to_line()]
    ).encode()
    witnesses = [w1.verifier, w2.verifier, w3.verifier]
    report = verify_cosignatures(cosigned, witnesses, 1)
    assert report.signers == (w1.verifier.key_id,)
    assert report.missing == (w2.verifier.key_id, w3.verifier.key_id)
    # The same witness twice counts once.
    with pytest.raises(VerificationError, match=r"expected 2 of 3 witnesses, got 1") as err:
        verify_cosignatures(cosigned, witnesses, 2)
    assert w2.verifier.key_id in str(err.value)
    assert w3.verifier.key_id in str(err.value)
    with pytest.raises(ValueError, match="quorum"):
        verify_cosignatures(cosigned, witnesses, 4)
    with pytest.raises(ValueError, match="quorum"):
        verify_cosignatures(cosigned, [w1.verifier, w1.verifier], 2)


def test_a_note_signature_is_not_a_cosignature() -> None:
    """A plain note signature (0x01) by the witness's own key does not count, nor does a line
    under the witness's 0x04 key hash that carries a plain signature of the body."""
    key = SigningKey(b"\x05" * 32)
    log = NoteSigner("log.example/a", SigningKey(b"\x01" * 32))
    text = Checkpoint("log.example/a", 7, bytes(range(32))).to_text()
    both = sign_note(text, [log, NoteSigner("w1.example", key)])
    witness = WitnessSigner("w1.example", key).verifier
    report = check_cosignatures(both.encode(), [witness])
    assert report.signed == ()
    assert report.invalid == ()
    plain = base64.b64encode(witness.key_hash + key.sign(text.encode())).decode()
    forged = both + f"\u2014 w1.example {plain}\n"
    report = check_cosignatures(forged.encode(), [witness])
    assert report.signed == ()
    assert report.invalid == (witness.key_id,)


def test_witness_key_is_derived_and_distinct_from_the_identity() -> None:
    seed = b"\x11" * 32
    derived = derive_witness_key(seed)
    assert derived.seed != seed
    assert derive_witness_key(seed).seed == derived.seed


# -- properties ------------------------------------------------------------------------------------

names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Z", "C"), exclude_characters="+"),
    min_size=1,
    max_size=20,
)


@given(
    name=names,
    seed=st.binary(min_size=32, max_size=32),
    timestamp=st.integers(0, 2**63 - 1),
    size=st.integers(0, 2**40),
)
def test_cosignature_round_trip(name: str, seed: bytes, timestamp: int, size: int) -> None:
    note, _ = _checkpoint_note(size=size)
    signer = WitnessSigner(name, SigningKey(seed))
    cosignature = signer.cosign(note_body(note.encode()), timestamp)
    assert parse_cosignature_line(cosignature.to_line()) == cosignature
    assert parse_witness_key(signer.verifier_key) == signer.verifier
    cosigned = append_signature_lines(note, [cosignature.to_line()]).encode()
    assert check_cosignatures(cosigned, [signer.verifier]).signed == (
        (signer.verifier.key_id, timestamp),
    )


@given(data=st.binary(max_size=200))
def test_parse_cosignature_line_never_crashes(data: bytes) -> None:
    line = "\u2014 w " + base64.b64encode(data).decode()
    try:
        decoded = parse_cosignature_line(line)
    except VerificationError:
        assert len(data) != 76 or int.from_bytes(data[4:12], "big") > 2**63 - 1
    else:
        assert decoded.to_line() == line + "\n"


@given(text=st.text(max_size=80))
def test_parse_witness_key_refuses_or_round_trips(text: str) -> None:
    try:
        witness = parse_witness_key(text)
    except VerificationError:
        return
    assert witness.verifier_key == text


def test_timestamp_bounds() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        cosigned_message("a\n1\nx\n", 2**63)
    too_big = (2**63).to_bytes(8, "big")
    line = "\u2014 w " + base64.b64encode(b"\0" * 4 + too_big + b"\0" * 64).decode()
    with pytest.raises(VerificationError, match="exceeds"):
        parse_cosignature_line(line)
    assert witness_verifier_key("w", b"\0" * 32).startswith("w+")
