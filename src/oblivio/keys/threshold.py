"""The threshold wrapping-key backend: each root key split among custodians (DESIGN.md §5).

A root key is split by Shamir sharing over GF(2^8) (core/shamir.py) into ``n`` shares, one per
custodian; using it needs ``t`` of them. Custodians are signing identities (Ed25519): destroying a
root asks every custodian to delete its share and to sign a share-deletion statement
(``oblivio.share-deletion.v1``); destruction is proven once ``n - t + 1`` custodians have signed,
since at most ``t - 1`` shares, below quorum, can then remain (seed 000 §4.2).

URI: ``threshold:?n=3&t=2`` keeps the custodians under ``HOME/keys/custodians``;
``threshold:/DIR?n=3&t=2`` under ``DIR``. Each custodian is a directory ``custodian-NN`` holding
its signing key and a share file (keys/key_file.py: in-place overwrite and fsync). In production
the custodians are separate machines or people; the ``Custodian`` protocol is the seam.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from oblivio.core.canonical import JsonValue
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.envelope import KEY_SIZE
from oblivio.core.errors import (
    InvalidKeysUriError,
    KeyBackendError,
    OblivioError,
)
from oblivio.core.identifiers import format_time
from oblivio.core.receipts import sign_share_deletion
from oblivio.core.shamir import Share, combine_shares, split_secret
from oblivio.core.signing import SEED_SIZE, SigningKey, VerifyKey
from oblivio.keys.backend import (
    DestructionEvidence,
    KeyStoreBinding,
    RootKeyPurpose,
    raise_binding_generation,
)
from oblivio.keys.in_process import InProcessRootWrapping
from oblivio.keys.key_file import REFERENCE_SIZE, KeyFile, parse_key_reference

SHARE_MAGIC = b"OBLVSHR1"
BINDING_MAGIC = b"OBLVBND1"
_REF_PREFIX = "th-"


@dataclass(frozen=True)
class ThresholdConfig:
    """Where the custodians live, how many there are and how many are needed."""

    directory: Path
    shares: int
    threshold: int


def parse_threshold_uri(uri: str, home: Path) -> ThresholdConfig:
    """``threshold:[/DIR]?n=N&t=T`` with ``1 <= t <= n <= 255``; raise InvalidKeysUriError."""
    parts = urlsplit(uri)
    query = parse_qs(parts.query, keep_blank_values=True)
    if parts.netloc or parts.fragment or set(query) != {"n", "t"}:
        raise InvalidKeysUriError(f"keys URI: expected threshold:[/DIR]?n=N&t=T, got {uri!r}")
    try:
        (n_text,), (t_text,) = query["n"], query["t"]
        n, t = int(n_text), int(t_text)
    except ValueError as e:
        raise InvalidKeysUriError(f"keys URI: n and t must be single integers in {uri!r}") from e
    if not 1 <= t <= n <= 255:
        raise InvalidKeysUriError(f"keys URI: expected 1 <= t <= n <= 255, got n={n}, t={t}")
    directory = Path(parts.path) if parts.path else home / "keys" / "custodians"
    return ThresholdConfig(directory, n, t)


class Custodian(Protocol):
    """One holder of shares: keeps them, hands them out, deletes them and says so, signed."""

    @property
    def verify_key(self) -> VerifyKey:
        """The custodian's public identity."""

    def store_share(self, reference: bytes, share: Share) -> None:
        """Keep ``share`` of root ``reference`` durably. Raises KeyBackendError."""

    def share(self, reference: bytes) -> Share | None:
        """The share of root ``reference`` this custodian holds, if any."""

    def references(self) -> set[bytes]:
        """The roots this custodian holds a share of."""

    def delete_share(
        self, reference: bytes, key_id: str, share_x: int, now: datetime
    ) -> dict[str, JsonValue]:
        """Delete share ``share_x`` of ``reference`` (if held) and return a signed
        share-deletion statement about root ``key_id``. Raises KeyBackendError if it cannot
        confirm the share is gone."""


class FileCustodian:
    """A custodian kept in a directory: signing key and share file (in-place destruction).

    Made only with ``create`` (``oblivio init``): a missing signing key is an error, and a
    custodian whose share file is gone is one that cannot be reached (its calls raise
    KeyBackendError), never a new empty one."""

    def __init__(self, directory: Path, *, create: bool = False) -> None:
        self.directory = directory
        key_path = directory / "signing.key"
        self._shares: KeyFile | None = None
        self._missing: str | None = None
        if not create and not key_path.exists():
            raise KeyBackendError(f"custodian {directory}: its signing key is missing")
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not key_path.exists():
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(b64url_encode(secrets.token_bytes(SEED_SIZE)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            self._signing_key = SigningKey(b64url_decode(key_path.read_text("ascii").strip()))
        except (OSError, ValueError) as e:
            raise KeyBackendError(f"custodian {directory}: cannot load its signing key: {e}") from e
        try:
            self._shares = KeyFile(directory / "shares", SHARE_MAGIC, create=create)
        except KeyBackendError as e:
            self._missing = f"custodian {directory}: {e}"

    def _share_file(self) -> KeyFile:
        if self._shares is None:
            raise KeyBackendError(self._missing or f"custodian {self.directory}: unavailable")
        return self._shares

    @property
    def verify_key(self) -> VerifyKey:
        return self._signing_key.verify_key

    def store_share(self, reference: bytes, share: Share) -> None:
        self._share_file().add(reference, share.x, share.y)

    def share(self, reference: bytes) -> Share | None:
        slot = self._share_file().get(reference)
        return None if slot is None else Share(slot.tag, slot.secret)

    def references(self) -> set[bytes]:
        return set(self._share_file().live())

    def delete_share(
        self, reference: bytes, key_id: str, share_x: int, now: datetime
    ) -> dict[str, JsonValue]:
        self._share_file().destroy(reference)
        return sign_share_deletion(self._signing_key, key_id, share_x, format_time(now))

    def close(self) -> None:
        """Release the share file."""
        if self._shares is not None:
            self._shares.close()


def _reference(key_ref: str) -> bytes | None:
    return parse_key_reference(key_ref, _REF_PREFIX)


class ThresholdBackend(InProcessRootWrapping):
    """Root keys as Shamir shares held by custodians; ``t`` of ``n`` are needed to use one."""

    scheme = "threshold"

    def __init__(
        self,
        custodians: Sequence[Custodian],
        threshold: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        binding_file: KeyFile | None = None,
    ) -> None:
        if not 1 <= threshold <= len(custodians) <= 255:
            raise ValueError(f"threshold: expected 1 <= t <= n <= 255, got t={threshold}")
        self.custodians = list(custodians)
        self.threshold = threshold
        self._clock = clock
        self._binding_file = binding_file

    @classmethod
    def open(cls, config: ThresholdConfig, *, create: bool = False) -> ThresholdBackend:
        """Open the ``n`` file custodians of ``config`` and the key store's binding file
        (``DIR/binding``); ``create`` makes what is missing (``oblivio init``). Raises
        KeyBackendError if the binding file is missing and not ``create``."""
        custodians = [
            FileCustodian(config.directory / f"custodian-{i:02d}", create=create)
            for i in range(1, config.shares + 1)
        ]
        try:
            binding_file = KeyFile(config.directory / "binding", BINDING_MAGIC, create=create)
        except KeyBackendError:
            for custodian in custodians:
                custodian.close()
            raise
        return cls(custodians, config.threshold, binding_file=binding_file)

    def binding(self) -> KeyStoreBinding | None:
        if self._binding_file is None:
            return None
        slot = self._binding_file.binding()
        return None if slot is None else KeyStoreBinding.from_slot(*slot)

    def bind(self, binding: KeyStoreBinding) -> None:
        if self._binding_file is None:
            raise KeyBackendError("threshold keys: this key store has no binding file")
        self._binding_file.replace(None, None, binding=lambda _current: binding.to_slot())

    def new_root_reference(self) -> str:
        return _REF_PREFIX + secrets.token_hex(REFERENCE_SIZE)

    @property
    def custodian_keys(self) -> list[VerifyKey]:
        """The custodians' public keys, which a verifier of receipts must trust."""
        return [c.verify_key for c in self.custodians]

    def close(self) -> None:
        """Release the custodians' share files and the binding file."""
        for custodian in self.custodians:
            if isinstance(custodian, FileCustodian):
                custodian.close()
        if self._binding_file is not None:
            self._binding_file.close()

    def create_root_key(
        self, purpose: RootKeyPurpose, key_ref: str | None = None, *, generation: int = 0
    ) -> str:
        """Raise the binding's generation, then split a fresh key among all custodians; every
        one must store its share. A root of which any share exists is left as it is."""
        key_ref = key_ref or self.new_root_reference()
        reference = _reference(key_ref)
        if reference is None:
            raise KeyBackendError(f"threshold keys: not a threshold key reference: {key_ref}")
        raise_binding_generation(self, generation)
        if key_ref in self.live_root_keys():
            return key_ref
        shares = split_secret(
            secrets.token_bytes(KEY_SIZE),
            len(self.custodians),
            self.threshold,
            secrets.token_bytes,
        )
        for custodian, share in zip(self.custodians, shares, strict=True):
            custodian.store_share(reference, share)
        return key_ref

    def _missing_root(self, key_ref: str) -> str:
        return f"threshold keys: fewer than t shares of {key_ref} reachable"

    def _root_key(self, key_ref: str) -> bytes | None:
        reference = _reference(key_ref)
        if reference is None:
            return None
        shares: list[Share] = []
        for custodian in self.custodians:
            try:
                share = custodian.share(reference)
            except OblivioError:
                continue  # an unreachable custodian; others may make up the quorum
            if share is not None and share.x not in {s.x for s in shares}:
                shares.append(share)
            if len(shares) == self.threshold:
                return combine_shares(shares)
        return None

    def live_root_keys(self) -> set[str]:
        """Roots of which any custodian still holds a share."""
        refs: set[str] = set()
        for custodian in self.custodians:
            try:
                refs |= {_REF_PREFIX + r.hex() for r in custodian.references()}
            except OblivioError:
                continue
        return refs

    def rotate_root_key(
        self,
        key_ref: str,
        purpose: RootKeyPurpose,
        new_ref: str | None = None,
        *,
        generation: int = 0,
    ) -> tuple[DestructionEvidence, str]:
        """``destroy_root_key`` then ``create_root_key``: two steps in this backend."""
        evidence = self.destroy_root_key(key_ref)
        return evidence, self.create_root_key(purpose, new_ref, generation=generation)

    def destroy_root_key(self, key_ref: str) -> DestructionEvidence:
        """Ask every custodian to delete its share; proven with ``n - t + 1`` signed statements.

        Raises KeyBackendError (naming how many signed) when fewer custodians confirm; the
        deletions that did happen stand, and the call can be repeated.
        """
        reference = _reference(key_ref)
        if reference is None:
            raise KeyBackendError(f"threshold keys: not a threshold key reference: {key_ref}")
        statements: list[JsonValue] = []
        for x, custodian in enumerate(self.custodians, start=1):
            try:
                statements.append(custodian.delete_share(reference, key_ref, x, self._clock()))
            except OblivioError:
                continue
        needed = len(self.custodians) - self.threshold + 1
        if len(statements) < needed:
            raise KeyBackendError(
                f"threshold keys: {len(statements)} custodians confirmed deleting their share of "
                f"{key_ref}, expected at least n - t + 1 = {needed}"
            )
        return DestructionEvidence(
            backend=self.scheme,
            key_ref={
                "key_id": key_ref,
                "custodians": sorted(c.verify_key.key_id for c in self.custodians),
                "threshold": self.threshold,
            },
            evidence={
                "method": "shamir shares deleted below quorum",
                "share_deletions": statements,
            },
        )
