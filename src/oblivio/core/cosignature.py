"""C2SP tlog-cosignature v1 with Ed25519 (DESIGN.md §17): witness keys, cosigning, verifying.

Pure: no I/O, no clock (the timestamp is passed in).

- Witness verifier key: ``name+hex(keyhash)+base64(0x04 || ed25519 public key)`` where
  ``keyhash = SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (signed-note vkeys with the
  cosignature signature type; c2sp.org/tlog-cosignature "Format").
- Signed message: ``cosignature/v1\\n`` ``time <decimal seconds, no leading zeros>\\n`` and the
  whole note body of the checkpoint (every line up to the blank line, extension lines
  included, no signature lines).
- Signature line: ``— name base64(keyhash(4) || timestamp(8, big-endian) || signature(64))``;
  the timestamp must not exceed 2^63 - 1.

A cosignature line is an ordinary note signature line, so a note verifier that does not know
the witness ignores it (``core/note.py``); ``verify_cosignatures`` checks the ones it is told to
trust and says which witnesses signed and which are missing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from oblivio.core.encoding import b64_std_encode
from oblivio.core.errors import VerificationError
from oblivio.core.hashing import sha256
from oblivio.core.note import (
    SIGNATURE_PREFIX,
    is_valid_key_name,
    parse_signature_line,
    split_note,
    split_verifier_key,
)
from oblivio.core.signing import PUBLIC_KEY_SIZE, SEED_SIZE, SIGNATURE_SIZE, SigningKey, VerifyKey

COSIGNATURE_ALGORITHM: Final = 0x04
"""The signed-note signature type of Ed25519 tlog-cosignature v1."""
COSIGNATURE_HEADER: Final = "cosignature/v1\n"
MAX_TIMESTAMP: Final = 2**63 - 1
COSIGNATURE_SIZE: Final = 4 + 8 + SIGNATURE_SIZE
"""Key hash, timestamp and Ed25519 signature, as the base64 of a line decodes."""
WITNESS_KEY_INFO: Final = b"oblivio/witness-cosignature-ed25519/v1"


def cosignature_key_hash(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x04 || public key)[:4]``."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_ALGORITHM]) + public_key)[:4]


def witness_verifier_key(name: str, public_key: bytes) -> str:
    """The witness's C2SP verifier key ``name+hash+base64(0x04 || public key)``."""
    if not is_valid_key_name(name):
        raise ValueError(f"witness key: invalid key name {name!r}")
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"witness key: expected a 32-byte Ed25519 key, got {len(public_key)}")
    encoded = b64_std_encode(bytes([COSIGNATURE_ALGORITHM]) + public_key)
    return f"{name}+{cosignature_key_hash(name, public_key).hex()}+{encoded}"


def derive_witness_key(identity_seed: bytes) -> SigningKey:
    """The node's witness key: HKDF-SHA256 of its identity seed with ``WITNESS_KEY_INFO``.

    A key of its own, as tlog-cosignature requires of a cosigner (its Ed25519 message does not
    commit to the cosigner's name), and no second secret file to keep.
    """
    if len(identity_seed) != SEED_SIZE:
        raise ValueError(f"witness key: expected a 32-byte seed, got {len(identity_seed)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_SIZE, salt=None, info=WITNESS_KEY_INFO)
    return SigningKey(hkdf.derive(identity_seed))


def cosigned_message(body: str, timestamp: int) -> bytes:
    """The bytes an Ed25519 v1 cosignature signs: header, time line, then the note body.

    Raises ValueError for a timestamp outside 0..2^63-1 or a body not ending in a newline.
    """
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"cosignature: timestamp must be 0..2^63-1, got {timestamp}")
    if not body.endswith("\n") or "\n\n" in body:
        raise ValueError("cosignature: the note body must be lines ending in a newline")
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{body}".encode()


@dataclass(frozen=True)
class WitnessVerifier:
    """A trusted witness: its key name, 4-byte key hash and Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: bytes

    @property
    def verifier_key(self) -> str:
        """The vkey string this verifier was parsed from (canonical form)."""
        return witness_verifier_key(self.name, self.public_key)

    @property
    def key_id(self) -> str:
        """``name+hex(keyhash)``, how reports name this witness."""
        return f"{self.name}+{self.key_hash.hex()}"


def parse_witness_key(vkey: str) -> WitnessVerifier:
    """Parse ``name+hex8+base64(0x04 || key)``; only the Ed25519 cosignature type is accepted.

    Raises VerificationError naming what is wrong (a key of another type included: a 0x01 note
    key is a log's key, not a witness's, and taking it for one is a configuration mistake).
    """
    name, key_hash, key = split_verifier_key(vkey, "witness key")
    if key[0] != COSIGNATURE_ALGORITHM:
        raise VerificationError(
            f"witness key: expected signature type 0x04 (Ed25519 cosignature v1), "
            f"got 0x{key[0]:02x} in {vkey!r}"
        )
    public_key = key[1:]
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise VerificationError(
            f"witness key: expected a 32-byte Ed25519 key, got {len(public_key)} in {vkey!r}"
        )
    expected = cosignature_key_hash(name, public_key)
    if key_hash != expected:
        raise VerificationError(
            f"witness key: expected key hash {expected.hex()}, got {key_hash.hex()} in {vkey!r}"
        )
    return WitnessVerifier(name, expected, public_key)


@dataclass(frozen=True)
class Cosignature:
    """One decoded cosignature line."""

    name: str
    key_hash: bytes
    timestamp: int
    signature: bytes

    def to_line(self) -> str:
        """The signature line, ending in a newline."""
        payload = self.key_hash + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {b64_std_encode(payload)}\n"

    def verifies(self, body: str, witness: WitnessVerifier) -> bool:
        """Whether this is ``witness``'s valid cosignature of the note ``body``."""
        if self.name != witness.name or not hmac.compare_digest(self.key_hash, witness.key_hash):
            return False
        try:
            VerifyKey(witness.public_key).verify(
                self.signature, cosigned_message(body, self.timestamp)
            )
        except (VerificationError, ValueError):
            return False
        return True


def parse_cosignature_line(line: str) -> Cosignature:
    """Decode ``— name base64(keyhash || timestamp || signature)`` (the newline optional).

    Raises VerificationError if the line is not a signature line or its payload is not
    4 + 8 + 64 bytes with a timestamp of at most 2^63 - 1.
    """
    raw = line.removesuffix("\n").encode("utf-8")
    if b"\n" in raw:
        raise VerificationError("cosignature: expected one line")
    name, _, key_hash, rest = parse_signature_line(raw)
    if len(rest) != COSIGNATURE_SIZE - 4:
        raise VerificationError(
            f"cosignature: expected {COSIGNATURE_SIZE} bytes after the name, got {len(rest) + 4}"
        )
    timestamp = int.from_bytes(rest[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise VerificationError(f"cosignature: timestamp {timestamp} exceeds 2^63 - 1")
    return Cosignature(name, key_hash, timestamp, rest[8:])


@dataclass(frozen=True)
class WitnessSigner:
    """A witness's cosigning key under its name."""

    name: str
    signing_key: SigningKey

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise ValueError(f"witness signer: invalid key name {self.name!r}")

    @property
    def verifier(self) -> WitnessVerifier:
        """The matching verifier."""
        public = self.signing_key.verify_key.public_bytes
        return WitnessVerifier(self.name, cosignature_key_hash(self.name, public), public)

    @property
    def verifier_key(self) -> str:
        """The matching verifier key string (``oblivio witness key``)."""
        return witness_verifier_key(self.name, self.signing_key.verify_key.public_bytes)

    def cosign(self, body: str, timestamp: int) -> Cosignature:
        """Cosign a checkpoint note body at ``timestamp`` (POSIX seconds)."""
        signature = self.signing_key.sign(cosigned_message(body, timestamp))
        return Cosignature(self.name, self.verifier.key_hash, timestamp, signature)


def note_body(note: bytes) -> str:
    """The text of a signed note (up to and including the line before the blank line).

    Raises VerificationError if the note is malformed (``core/note.split_note``).
    """
    text, _ = split_note(note)
    return text.decode("utf-8")


def append_signature_lines(note: str, lines: Iterable[str]) -> str:
    """The note with ``lines`` appended to its signatures, skipping lines it already holds."""
    present = set(note.split("\n"))
    extra = [line.removesuffix("\n") for line in lines]
    fresh = [line + "\n" for i, line in enumerate(extra) if line not in present | set(extra[:i])]
    return note + "".join(fresh)


@dataclass(frozen=True)
class CosignatureReport:
    """Which of the trusted witnesses cosigned a note, and which did not."""

    signed: tuple[tuple[str, int], ...]
    """(witness key id, timestamp) of every trusted witness with a valid cosignature."""
    missing: tuple[str, ...]
    """Key ids of the trusted witnesses with no valid cosignature on the note."""
    invalid: tuple[str, ...]
    """Key ids of trusted witnesses whose line is present but does not verify."""

    @property
    def signers(self) -> tuple[str, ...]:
        """Key ids of the witnesses that signed."""
        return tuple(key_id for key_id, _ in self.signed)


def check_cosignatures(note: bytes, witnesses: Sequence[WitnessVerifier]) -> CosignatureReport:
    """Check every cosignature line of ``note`` by a trusted witness; lines by unknown keys are
    ignored (signed-note). A witness counts once however many lines it has.

    Raises VerificationError if the note is malformed.
    """
    text, lines = split_note(note)
    body = text.decode("utf-8")
    by_id = {(w.name, w.key_hash): w for w in witnesses}
    signed: dict[str, int] = {}
    invalid: set[str] = set()
    for raw in lines:
        name, _, key_hash, _ = parse_signature_line(raw)
        witness = by_id.get((name, key_hash))
        if witness is None:
            continue
        try:
            cosignature = parse_cosignature_line(raw.decode("utf-8"))
        except VerificationError:
            invalid.add(witness.key_id)
            continue
        if cosignature.verifies(body, witness):
            signed.setdefault(witness.key_id, cosignature.timestamp)
        else:
            invalid.add(witness.key_id)
    order = [w.key_id for w in witnesses]
    return CosignatureReport(
        signed=tuple((k, signed[k]) for k in dict.fromkeys(order) if k in signed),
        missing=tuple(k for k in dict.fromkeys(order) if k not in signed),
        invalid=tuple(k for k in dict.fromkeys(order) if k in invalid and k not in signed),
    )


def verify_cosignatures(
    note: bytes, witnesses: Sequence[WitnessVerifier], quorum: int
) -> CosignatureReport:
    """Require valid cosignatures on ``note`` from at least ``quorum`` distinct ``witnesses``.

    Returns the report (who signed, who is missing). Raises ValueError for a quorum below 0 or
    above the number of distinct witnesses, VerificationError naming the signers and the
    missing witnesses when the quorum is not met, or when the note is malformed.
    """
    distinct = {(w.name, w.key_hash) for w in witnesses}
    if not 0 <= quorum <= len(distinct):
        raise ValueError(
            f"cosignatures: quorum must be 0..{len(distinct)} (the witnesses given), got {quorum}"
        )
    report = check_cosignatures(note, witnesses)
    if len(report.signed) < quorum:
        signers = ", ".join(report.signers) or "none"
        missing = ", ".join(report.missing)
        bad = f"; present but invalid: {', '.join(report.invalid)}" if report.invalid else ""
        raise VerificationError(
            f"cosignatures: expected {quorum} of {len(distinct)} witnesses, got "
            f"{len(report.signed)} (signed: {signers}; missing: {missing}{bad})"
        )
    return report
