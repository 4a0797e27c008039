"""C2SP signed notes and tlog-checkpoints (DESIGN.md §7, §15): keys, signing, opening, parsing.

- Signed note (https://c2sp.org/signed-note): UTF-8 text ending in a newline, a blank line,
  then signature lines ``— <name> base64(keyhash(4) || signature)``. Opening follows Go's
  ``golang.org/x/mod/sumdb/note.Open``: the note must be well formed, signatures by unknown keys
  are ignored, a known key's signature that fails rejects the note, and at least one known key
  must have signed.
- Verifier key: ``name+hex(keyhash)+base64(0x01 || ed25519 public key)`` where
  ``keyhash = SHA-256(name || 0x0A || 0x01 || public key)[:4]``. ECDSA keys (type 0x02, as
  transparency-dev/formats writes them) verify too; their key hash is ``SHA-256(DER SPKI)[:4]``.
- Checkpoint (https://c2sp.org/tlog-checkpoint): origin, tree size, base64 root, one per line.
  oblivio's checkpoints have no extension lines, so parsing refuses them.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from oblivio.core.encoding import b64_std_decode, b64_std_encode
from oblivio.core.errors import VerificationError
from oblivio.core.hashing import HASH_SIZE, sha256
from oblivio.core.signing import PUBLIC_KEY_SIZE, SigningKey, VerifyKey

ED25519_ALGORITHM = 0x01
ECDSA_ALGORITHM = 0x02
SIGNATURE_PREFIX = "\u2014 "
"""An em dash and a space start every signature line."""
MAX_SIGNATURES = 100
"""Go's ``note.Open`` refuses more signature lines than this (the spec requires at least 16)."""
_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"


def note_key_hash(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash that prefixes Ed25519 note signatures by this key."""
    return sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_ALGORITHM]) + public_key)[:4]


def verifier_key(name: str, public_key: bytes) -> str:
    """The C2SP verifier key string of an Ed25519 key under ``name``."""
    encoded = b64_std_encode(bytes([ED25519_ALGORITHM]) + public_key)
    return f"{name}+{note_key_hash(name, public_key).hex()}+{encoded}"


def is_valid_key_name(name: str) -> bool:
    """A key name is non-empty UTF-8 with no Unicode space and no '+' (Go ``isValidName``)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _malformed(reason: str) -> VerificationError:
    return VerificationError(f"signed note: malformed note: {reason}")


@dataclass(frozen=True)
class NoteVerifier:
    """A parsed verifier key: who signs (name, 4-byte key hash) and how to check a signature."""

    name: str
    key_hash: bytes
    algorithm: int
    """0x01 Ed25519 or 0x02 ECDSA."""
    public_key: bytes
    """The raw Ed25519 key, or the DER SubjectPublicKeyInfo of an ECDSA key."""

    @property
    def key_id(self) -> str:
        """``name+hex(keyhash)``, how error messages name this key."""
        return f"{self.name}+{self.key_hash.hex()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        if self.algorithm == ED25519_ALGORITHM:
            try:
                VerifyKey(self.public_key).verify(signature, message)
            except (VerificationError, ValueError):
                return False
            return True
        try:
            key = load_der_public_key(self.public_key)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def split_verifier_key(vkey: str, what: str) -> tuple[str, bytes, bytes]:
    """Split ``name+hex8+base64(type || key)`` into the key name, the 4-byte key hash and the
    typed key bytes (hex as Go's ``strconv.ParseUint`` reads it, either case). Raises
    VerificationError, prefixed with ``what``, when a part is malformed; the caller checks the
    type and the hash."""
    name, _, rest = vkey.partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    try:
        key = b64_std_decode(key_b64)
    except ValueError:
        key = b""
    if (
        len(hash_hex) != 8
        or any(c not in "0123456789abcdefABCDEF" for c in hash_hex)
        or not key
        or not is_valid_key_name(name)
    ):
        raise VerificationError(f"{what}: malformed verifier key {vkey!r}")
    return name, bytes.fromhex(hash_hex), key


def parse_verifier_key(vkey: str) -> NoteVerifier:
    """Parse ``name+hex8+base64(type || key)`` as Go's ``note.NewVerifier`` does (and ECDSA as
    transparency-dev/formats does). Raises VerificationError naming what is wrong."""
    name, key_hash, key = split_verifier_key(vkey, "verifier key")
    algorithm, public_key = key[0], key[1:]
    if algorithm == ED25519_ALGORITHM:
        expected = sha256(name.encode("utf-8") + b"\n" + key)[:4]
    elif algorithm == ECDSA_ALGORITHM:
        expected = sha256(public_key)[:4]
    else:
        raise VerificationError(f"verifier key: unknown algorithm 0x{algorithm:02x} in {vkey!r}")
    if key_hash != expected:
        raise VerificationError(
            f"verifier key: expected key hash {expected.hex()}, got {key_hash.hex()} in {vkey!r}"
        )
    if algorithm == ED25519_ALGORITHM:
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise VerificationError(
                f"verifier key: Ed25519 key must be 32 bytes, got {len(public_key)} in {vkey!r}"
            )
        return NoteVerifier(name, key_hash, ED25519_ALGORITHM, public_key)
    try:
        if not isinstance(load_der_public_key(public_key), ec.EllipticCurvePublicKey):
            raise ValueError("not an elliptic-curve key")
    except ValueError as e:
        raise VerificationError(f"verifier key: bad ECDSA key in {vkey!r}: {e}") from e
    return NoteVerifier(name, key_hash, ECDSA_ALGORITHM, public_key)


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 note signer: a key name and a signing key."""

    name: str
    signing_key: SigningKey

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise ValueError(f"note signer: invalid key name {self.name!r}")

    @property
    def key_hash(self) -> bytes:
        """The signer's 4-byte key hash."""
        return note_key_hash(self.name, self.signing_key.verify_key.public_bytes)

    @property
    def verifier_key(self) -> str:
        """The matching verifier key string."""
        return verifier_key(self.name, self.signing_key.verify_key.public_bytes)

    def verifier(self) -> NoteVerifier:
        """The matching verifier."""
        return NoteVerifier(
            self.name, self.key_hash, ED25519_ALGORITHM, self.signing_key.verify_key.public_bytes
        )


def parse_signer_key(skey: str) -> NoteSigner:
    """Parse Go's ``PRIVATE+KEY+name+hex8+base64(0x01 || seed)``; for interoperability tests.

    Raises ValueError when malformed or when the key hash does not match.
    """
    if not skey.startswith(_SIGNER_KEY_PREFIX):
        raise ValueError("signer key: expected PRIVATE+KEY+name+hash+key")
    name, _, rest = skey[len(_SIGNER_KEY_PREFIX) :].partition("+")
    hash_hex, _, key_b64 = rest.partition("+")
    key = b64_std_decode(key_b64)
    if len(key) != 33 or key[0] != ED25519_ALGORITHM or len(hash_hex) != 8:
        raise ValueError("signer key: expected an Ed25519 seed")
    signer = NoteSigner(name, SigningKey(key[1:]))
    if signer.key_hash.hex() != hash_hex.lower():
        raise ValueError(f"signer key: expected key hash {signer.key_hash.hex()}, got {hash_hex}")
    return signer


def _check_text(text: str, what: str) -> None:
    if not text.endswith("\n"):
        raise ValueError(f"{what}: text must end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise ValueError(f"{what}: text holds a control character")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` (UTF-8, ending in a newline, no control characters but newlines) with each
    signer, as Go's ``note.Sign``; returns the note. Raises ValueError for unusable text."""
    _check_text(text, "sign note")
    if not signers:
        raise ValueError("sign note: no signers")
    message = text.encode("utf-8")
    lines = [
        f"{SIGNATURE_PREFIX}{s.name} {b64_std_encode(s.key_hash + s.signing_key.sign(message))}\n"
        for s in signers
    ]
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, 4-byte key hash and the base64 as written."""

    name: str
    key_hash: bytes
    base64: str


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures that verified and those by unknown keys."""

    text: str
    signatures: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def parse_signature_line(raw: bytes) -> tuple[str, str, bytes, bytes]:
    """``— name base64`` (without its newline) → (name, base64, 4-byte key hash, the rest).

    Raises VerificationError (``malformed note``) when the line is not a signature line.
    """
    prefix = SIGNATURE_PREFIX.encode("utf-8")
    if not raw.startswith(prefix):
        raise _malformed("a signature line does not start with an em dash and a space")
    name, _, b64 = raw[len(prefix) :].decode("utf-8").partition(" ")
    try:
        sig = b64_std_decode(b64)
    except ValueError:
        sig = b""
    if not is_valid_key_name(name) or not b64 or len(sig) < 5:
        raise _malformed(f"bad signature line for {name!r}")
    return name, b64, sig[:4], sig[4:]


def split_note(message: bytes) -> tuple[bytes, list[bytes]]:
    """Check a signed note's structure and split it into its text (ending in a newline) and its
    signature lines (without newlines), as signed-note and Go's ``note.Open`` require.

    Raises VerificationError (``malformed note``): not UTF-8, a control character, no blank
    line before the signatures, a signature block not ending in a newline, or more than
    ``MAX_SIGNATURES`` lines. The lines themselves are checked by ``parse_signature_line``.
    """
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _malformed("not UTF-8") from e
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise _malformed("control character")
    split = message.rfind(b"\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, sigs = message[: split + 1], message[split + 2 :]
    if not sigs or not sigs.endswith(b"\n"):
        raise _malformed("signature block does not end in a newline")
    lines = sigs[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    return text, lines


def open_note(message: bytes, verifiers: Iterable[NoteVerifier]) -> Note:
    """Verify a signed note the way Go's ``note.Open`` does (module docstring).

    Raises VerificationError: ``malformed note``, ``invalid signature for key NAME+HASH``, or
    ``no verifiable signatures``.
    """
    known = {(v.name, v.key_hash): v for v in verifiers}
    text, lines = split_note(message)
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    seen_unverified: set[bytes] = set()
    for raw in lines:
        name, b64, key_hash, signature = parse_signature_line(raw)
        verifier = known.get((name, key_hash))
        if verifier is None:
            if raw not in seen_unverified:
                seen_unverified.add(raw)
                unverified.append(NoteSignature(name, key_hash, b64))
            continue
        if (name, key_hash) in seen:
            continue
        seen.add((name, key_hash))
        if not verifier.verify(text, signature):
            raise VerificationError(f"signed note: invalid signature for key {verifier.key_id}")
        verified.append(NoteSignature(name, key_hash, b64))
    if not verified:
        raise VerificationError("signed note: no verifiable signatures")
    return Note(text.decode("utf-8"), tuple(verified), tuple(unverified))


@dataclass(frozen=True)
class Checkpoint:
    """A C2SP tlog-checkpoint body: origin, tree size and RFC 9162 root (no extension lines)."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or not self.origin.isprintable():
            raise ValueError(f"checkpoint: origin must be one printable line, got {self.origin!r}")
        if self.size < 0:
            raise ValueError(f"checkpoint: size must be >= 0, got {self.size}")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"checkpoint: root must be 32 bytes, got {len(self.root)}")

    def to_text(self) -> str:
        """The three lines, each ending in a newline."""
        return f"{self.origin}\n{self.size}\n{b64_std_encode(self.root)}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint text strictly: exactly origin, decimal size without leading zeros, and a
    base64 32-byte root, each ending in a newline. Raises VerificationError naming the bad line."""
    if not text.endswith("\n"):
        raise VerificationError("checkpoint: text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError(f"checkpoint: expected 3 lines, got {len(lines)}")
    if len(lines) > 3:
        raise VerificationError(
            f"checkpoint: expected no extension lines, got {len(lines) - 3} after the root"
        )
    origin, size_text, root_text = lines
    if not origin:
        raise VerificationError("checkpoint: origin line is empty")
    if (
        not size_text.isascii()
        or not size_text.isdigit()
        or (size_text[0] == "0" and size_text != "0")
    ):
        raise VerificationError(f"checkpoint: size must be a decimal integer, got {size_text!r}")
    try:
        root = b64_std_decode(root_text)
    except ValueError as e:
        raise VerificationError(f"checkpoint: root is not base64: {root_text!r}") from e
    if len(root) != HASH_SIZE:
        raise VerificationError(f"checkpoint: root must be 32 bytes, got {len(root)}")
    try:
        return Checkpoint(origin, int(size_text), root)
    except ValueError as e:
        raise VerificationError(str(e)) from e


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The signed note of a checkpoint. Its origin must be the signer's name (DESIGN.md §7)."""
    if checkpoint.origin != signer.name:
        raise ValueError(
            f"checkpoint: origin {checkpoint.origin!r} is not the signer's name {signer.name!r}"
        )
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(note: bytes, verifier: NoteVerifier) -> Checkpoint:
    """Verify a signed checkpoint against the node's verifier and parse it.

    The origin must equal the verifier's name. Raises VerificationError naming what failed.
    """
    opened = open_note(note, [verifier])
    checkpoint = parse_checkpoint(opened.text)
    if not hmac.compare_digest(checkpoint.origin.encode(), verifier.name.encode()):
        raise VerificationError(
            f"checkpoint: expected origin {verifier.name!r}, got {checkpoint.origin!r}"
        )
    return checkpoint
