"""C2SP tlog-witness ``add-checkpoint`` (DESIGN.md §17): request bodies, the witness's checks, and
equivocation evidence. Pure: the caller reads and writes the witness's state.

Request body (c2sp.org/tlog-witness): ``old <size>\\n``, at most 63 base64 consistency-proof
lines, an empty line, then the signed checkpoint note. The witness answers, in this order:

1. 400  the body is malformed (including more than 63 proof lines, or a malformed note);
2. 404  the checkpoint's origin is not a log it witnesses;
3. 403  no signature by a key it trusts for that origin verifies;
4. 409  the log signed another root at this size before (an equivocation: the pair is kept
        as evidence; the body is the latest cosigned size, ``text/x.tlog.size``);
5. 400  the old size is above the checkpoint's size;
6. 409  the old size is not the size it last cosigned (body: that size);
7. 422  the consistency proof does not prove the checkpoint extends the one it cosigned;
8. 409  same size as the one it cosigned, different root (a fork; also evidence);
9. 200  cosignature lines, after the new state is persisted (atomically with the checks).

Step 4 goes beyond the spec's same-size check (step 8): the witness remembers every checkpoint
it cosigned, so a fork presented at any size it cosigned is caught, not only at the latest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from oblivio.core.encoding import b64_std_decode, b64_std_encode
from oblivio.core.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    VerificationError,
)
from oblivio.core.hashing import HASH_SIZE
from oblivio.core.merkle_log import verify_consistency
from oblivio.core.note import (
    Checkpoint,
    NoteVerifier,
    open_checkpoint,
    parse_checkpoint,
    parse_verifier_key,
    split_note,
)

MAX_PROOF_LINES: Final = 63
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
EQUIVOCATION_TYPE: Final = "oblivio.equivocation.v1"


class WitnessRequestError(InvalidInputError):
    """The add-checkpoint body is malformed, or its old size is above the checkpoint's: 400."""

    code = "witness_bad_request"


class UnknownLogError(NotFoundError):
    """The checkpoint's origin is not a log this witness witnesses: 404."""

    code = "witness_unknown_log"


class UntrustedCheckpointError(VerificationError):
    """No signature by a key the witness trusts for the origin verifies: 403."""

    code = "witness_untrusted_checkpoint"


class WitnessConflictError(ConflictError):
    """The old size is not the latest cosigned size, or the checkpoint forks the log: 409 with
    ``latest_size`` as ``text/x.tlog.size``."""

    code = "witness_conflict"

    def __init__(self, message: str, latest_size: int) -> None:
        super().__init__(message)
        self.latest_size = latest_size


class EquivocationError(WitnessConflictError):
    """The log signed two roots at one size: 409, and the pair is evidence."""

    code = "witness_equivocation"


class BadConsistencyProofError(VerificationError):
    """The consistency proof does not verify: 422."""

    code = "witness_bad_proof"


def _parse_size(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (text[0] == "0" and text != "0"):
        raise WitnessRequestError(f"{what}: expected a decimal size, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class AddCheckpointRequest:
    """An add-checkpoint request: old size, consistency proof, and the signed note as sent."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    def to_bytes(self) -> bytes:
        """The request body."""
        lines = [f"old {self.old_size}\n", *(b64_std_encode(h) + "\n" for h in self.proof), "\n"]
        return "".join(lines).encode("ascii") + self.note


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse a request body strictly. Raises WitnessRequestError naming what is malformed."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise WitnessRequestError("add-checkpoint: expected an empty line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as e:
        raise WitnessRequestError("add-checkpoint: the old size and proof must be ASCII") from e
    first = lines[0]
    if not first.startswith("old "):
        raise WitnessRequestError(f"add-checkpoint: expected 'old <size>', got {first[:40]!r}")
    old_size = _parse_size(first[4:], "add-checkpoint: old size")
    proof_lines = lines[1:]
    if len(proof_lines) > MAX_PROOF_LINES:
        raise WitnessRequestError(
            f"add-checkpoint: at most {MAX_PROOF_LINES} proof lines, got {len(proof_lines)}"
        )
    proof = []
    for index, line in enumerate(proof_lines):
        try:
            value = b64_std_decode(line)
        except ValueError as e:
            raise WitnessRequestError(f"add-checkpoint: proof line {index} is not base64") from e
        if len(value) != HASH_SIZE:
            raise WitnessRequestError(
                f"add-checkpoint: proof line {index}: expected 32 bytes, got {len(value)}"
            )
        proof.append(value)
    return AddCheckpointRequest(old_size, tuple(proof), note)


def submitted_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint a submitted note claims, before any signature is checked (its origin picks
    the keys). Raises WitnessRequestError if the note or the checkpoint is malformed."""
    try:
        text, _ = split_note(note)
        return parse_checkpoint(text.decode("utf-8"))
    except VerificationError as e:
        raise WitnessRequestError(f"add-checkpoint: {e}") from e


def open_submitted(note: bytes, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    """Verify a submitted note against the keys trusted for its origin (unknown keys are
    ignored). Raises UntrustedCheckpointError when no trusted signature verifies, or one fails."""
    failures = []
    for verifier in verifiers:
        try:
            return open_checkpoint(note, verifier)
        except VerificationError as e:
            failures.append(str(e))
    raise UntrustedCheckpointError(
        "add-checkpoint: no trusted signature verifies: " + ("; ".join(failures) or "no keys")
    )


def check_extension(
    request: AddCheckpointRequest,
    checkpoint: Checkpoint,
    latest_size: int,
    latest_root: bytes | None,
    root_cosigned_at_size: bytes | None,
) -> None:
    """Steps 4 to 8 of the module docstring, for a checkpoint already verified (step 3).

    ``latest_size``/``latest_root`` are the last cosigned checkpoint's (0/None for none);
    ``root_cosigned_at_size`` the root the witness cosigned at ``checkpoint.size``, if any.
    Returns when the witness may cosign. Raises EquivocationError, WitnessRequestError,
    WitnessConflictError or BadConsistencyProofError.
    """
    if root_cosigned_at_size is not None and root_cosigned_at_size != checkpoint.root:
        raise EquivocationError(
            f"add-checkpoint: {checkpoint.origin} signed another root at size "
            f"{checkpoint.size} before: equivocation",
            latest_size,
        )
    if request.old_size > checkpoint.size:
        raise WitnessRequestError(
            f"add-checkpoint: old size {request.old_size} is above the checkpoint's "
            f"size {checkpoint.size}"
        )
    if request.old_size != latest_size:
        raise WitnessConflictError(
            f"add-checkpoint: expected old size {latest_size}, got {request.old_size}",
            latest_size,
        )
    if request.old_size in (0, checkpoint.size):
        if request.proof:
            raise BadConsistencyProofError(
                f"add-checkpoint: expected an empty proof from size {request.old_size}, got "
                f"{len(request.proof)} hashes"
            )
        if request.old_size and latest_root != checkpoint.root:
            raise EquivocationError(
                f"add-checkpoint: {checkpoint.origin} signed another root at size "
                f"{checkpoint.size}: a fork",
                latest_size,
            )
        return
    if latest_root is None:
        raise WitnessConflictError("add-checkpoint: no cosigned root to extend", latest_size)
    try:
        verify_consistency(
            request.old_size, checkpoint.size, request.proof, latest_root, checkpoint.root
        )
    except VerificationError as e:
        raise BadConsistencyProofError(f"add-checkpoint: {e}") from e


def size_body(size: int) -> bytes:
    """The ``text/x.tlog.size`` body of a 409."""
    return f"{size}\n".encode("ascii")


def parse_size_body(body: bytes) -> int:
    """Read a ``text/x.tlog.size`` body. Raises WitnessRequestError if malformed."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as e:
        raise WitnessRequestError("tlog size: not ASCII") from e
    if not text.endswith("\n"):
        raise WitnessRequestError("tlog size: expected a decimal size and a newline")
    return _parse_size(text[:-1], "tlog size")


@dataclass(frozen=True)
class EquivocationEvidence:
    """Two checkpoints one log signed at one size with different roots (*spec*
    ``oblivio.equivocation.v1``): the one cosigned first and the one presented after."""

    origin: str
    size: int
    first: str
    second: str

    def to_dict(self) -> dict[str, Any]:
        """The wire form; the notes are the evidence, verbatim."""
        return {
            "type": EQUIVOCATION_TYPE,
            "origin": self.origin,
            "size": self.size,
            "first": self.first,
            "second": self.second,
        }

    @classmethod
    def from_dict(cls, data: object) -> EquivocationEvidence:
        """Parse the wire form strictly. Raises InvalidInputError naming the bad field (extra
        fields, such as a witness's own bookkeeping, are allowed and ignored)."""
        if not isinstance(data, Mapping) or data.get("type") != EQUIVOCATION_TYPE:
            raise InvalidInputError(f"evidence: expected an object of type {EQUIVOCATION_TYPE}")
        origin, size = data.get("origin"), data.get("size")
        first, second = data.get("first"), data.get("second")
        if not isinstance(origin, str) or type(size) is not int or size < 0:
            raise InvalidInputError("evidence: expected a string origin and a size >= 0")
        if not isinstance(first, str) or not isinstance(second, str):
            raise InvalidInputError("evidence: expected the two signed notes as strings")
        return cls(origin, size, first, second)


def verify_equivocation(evidence: EquivocationEvidence, log_verifier_key: str) -> Checkpoint:
    """Check offline that the log of ``log_verifier_key`` signed both checkpoints, that they
    name the evidence's origin and size, and that their roots differ. Returns the first.

    Raises VerificationError naming the failing check (a bad key included).
    """
    verifier = parse_verifier_key(log_verifier_key)
    opened = []
    for which, note in (("first", evidence.first), ("second", evidence.second)):
        try:
            checkpoint = open_checkpoint(note.encode("utf-8"), verifier)
        except VerificationError as e:
            raise VerificationError(f"evidence: {which} checkpoint: {e}") from e
        if checkpoint.origin != evidence.origin or checkpoint.size != evidence.size:
            raise VerificationError(
                f"evidence: {which} checkpoint: expected {evidence.origin!r} at size "
                f"{evidence.size}, got {checkpoint.origin!r} at size {checkpoint.size}"
            )
        opened.append(checkpoint)
    if opened[0].root == opened[1].root:
        raise VerificationError("evidence: both checkpoints have the same root: no equivocation")
    return opened[0]
