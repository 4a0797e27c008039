"""The PKCS#11 wrapping-key backend: root keys inside an HSM token (DESIGN.md §5).

Root keys are AES-256 secret-key objects made in the token (``CKA_TOKEN``, ``CKA_SENSITIVE``,
not ``CKA_EXTRACTABLE``), labelled ``PREFIX-root-wrap`` / ``PREFIX-root-escrow`` and named by a
random 16-byte ``CKA_ID``. Wrapping happens inside the token, by one of two mechanisms:

- ``aes-gcm`` (default): AES-GCM through ``C_Encrypt`` with the key-tree position as associated
  data (``nonce || ciphertext || tag``);
- ``aes-key-wrap``, for tokens that do not allow ``C_Encrypt`` with AES-GCM under a key: the
  material and ``SHA-256(associated data)`` go into a session object that ``C_WrapKey`` wraps
  with ``CKM_AES_KEY_WRAP`` (RFC 3394, whose integrity check then covers the context);
  ``C_UnwrapKey`` brings it back and the context hash must match. Deterministic: equal material
  and context under one root wrap equally (a key-tree root node is re-keyed at every forget).

Destruction is ``C_DestroyObject``, confirmed by a ``C_FindObjects`` that finds nothing. Any
PKCS#11 error while unwrapping is the one opaque IntegrityError.

URI (RFC 7512 style)::

    pkcs11:token=LABEL[;object=PREFIX]?module-path=/usr/lib/softhsm/libsofthsm2.so
           &pin-value=PIN | &pin-source=/path/to/pin-file [&wrap-mechanism=aes-key-wrap]

``object`` namespaces this node's keys in a shared token, so that several nodes can share one:
``oblivio init`` writes ``object=oblivio-`` and the first 16 hex characters of the node's key id
into the keys URI it records when the URI names none (a URI without it means ``oblivio``, the
prefix of nodes made before). The key store's binding (keys/backend.py) is a data object
labelled ``PREFIX-binding``. python-pkcs11 (the ``hsm`` extra) is imported lazily.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from oblivio.core.envelope import NONCE_SIZE, TAG_SIZE, digests_equal, key_wrap_aad
from oblivio.core.errors import IntegrityError, InvalidKeysUriError, KeyBackendError
from oblivio.core.hashing import sha256
from oblivio.keys.backend import (
    DestructionEvidence,
    KeyStoreBinding,
    RootKeyPurpose,
    raise_binding_generation,
)
from oblivio.keys.key_file import parse_key_reference

if TYPE_CHECKING:
    from pkcs11 import SecretKey, Session

DEFAULT_MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
_REF_PREFIX = "p11-"
_PURPOSES: tuple[RootKeyPurpose, ...] = ("wrap", "escrow")
WRAP_MECHANISMS = ("aes-gcm", "aes-key-wrap")
_CONTEXT_DIGEST_SIZE = 32


@dataclass(frozen=True)
class Pkcs11Config:
    """Which module, token and PIN; ``object_prefix`` namespaces this node's keys."""

    module_path: str
    token_label: str
    pin: str
    object_prefix: str = "oblivio"
    wrap_mechanism: str = "aes-gcm"


def parse_pkcs11_uri(uri: str) -> Pkcs11Config:
    """Parse a ``pkcs11:`` keys URI; raise InvalidKeysUriError naming what is wrong."""
    parts = urlsplit(uri)
    if parts.scheme != "pkcs11" or parts.netloc or parts.fragment:
        raise InvalidKeysUriError(f"keys URI: expected pkcs11:token=LABEL?..., got {uri!r}")
    attributes: dict[str, str] = {}
    for item in filter(None, parts.path.split(";")):
        name, sep, value = item.partition("=")
        if not sep or name not in ("token", "object"):
            raise InvalidKeysUriError(
                f"keys URI: pkcs11 path attributes are token= and object=, got {item!r}"
            )
        attributes[name] = unquote(value)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"module-path", "pin-value", "pin-source", "wrap-mechanism"}
    if unknown:
        raise InvalidKeysUriError(f"keys URI: unknown pkcs11 query attributes {sorted(unknown)}")
    if not attributes.get("token"):
        raise InvalidKeysUriError("keys URI: pkcs11 needs token=LABEL")
    module = query.get("module-path") or next(
        (p for p in DEFAULT_MODULE_PATHS if Path(p).exists()), ""
    )
    if not module:
        raise InvalidKeysUriError(
            "keys URI: pkcs11 needs module-path= (no SoftHSM2 module found; apt-get install "
            "softhsm2)"
        )
    if "pin-value" in query:
        pin = query["pin-value"]
    elif "pin-source" in query:
        source = query["pin-source"].removeprefix("file:")
        try:
            pin = Path(source).read_text("utf-8").strip()
        except OSError as e:
            raise InvalidKeysUriError(f"keys URI: cannot read pin-source {source}: {e}") from e
    else:
        raise InvalidKeysUriError("keys URI: pkcs11 needs pin-value= or pin-source=")
    prefix = attributes.get("object") or "oblivio"
    mechanism = query.get("wrap-mechanism", "aes-gcm")
    if mechanism not in WRAP_MECHANISMS:
        raise InvalidKeysUriError(
            f"keys URI: pkcs11 wrap-mechanism expected one of {WRAP_MECHANISMS}, got {mechanism!r}"
        )
    return Pkcs11Config(module, attributes["token"], pin, prefix, mechanism)


def pkcs11_object_prefix(uri: str) -> str | None:
    """The ``object=`` prefix a ``pkcs11:`` URI names, or None if it names none."""
    for item in filter(None, urlsplit(uri).path.split(";")):
        name, sep, value = item.partition("=")
        if sep and name == "object" and value:
            return unquote(value)
    return None


def _reference(key_ref: str) -> bytes | None:
    return parse_key_reference(key_ref, _REF_PREFIX)


class Pkcs11Backend:
    """Root keys as non-extractable AES keys in one PKCS#11 token; one session, serialised."""

    scheme = "pkcs11"

    def __init__(self, config: Pkcs11Config) -> None:
        try:
            import pkcs11
        except ImportError as e:
            raise KeyBackendError(
                "pkcs11 keys need python-pkcs11: pip install 'oblivio[hsm]'"
            ) from e
        self.config = config
        self._key_wrap = config.wrap_mechanism == "aes-key-wrap"
        self._lock = threading.Lock()
        try:
            lib = pkcs11.lib(config.module_path)
            token = lib.get_token(token_label=config.token_label)
            self.token_serial = token.serial.decode("ascii", "replace").strip()
            try:
                self._session: Session = token.open(rw=True, user_pin=config.pin)
            except pkcs11.UserAlreadyLoggedIn:
                # PKCS#11 login is per application and token: another backend of this process
                # has logged in already, and a new session shares that login.
                self._session = token.open(rw=True)
        except pkcs11.PKCS11Error as e:
            raise KeyBackendError(
                f"pkcs11 keys: cannot open token {config.token_label!r} with "
                f"{config.module_path}: {type(e).__name__} {e}"
            ) from e

    def _label(self, purpose: RootKeyPurpose) -> str:
        return f"{self.config.object_prefix}-root-{purpose}"

    def close(self) -> None:
        """Close the session."""
        import pkcs11

        with self._lock, contextlib.suppress(pkcs11.PKCS11Error):
            self._session.close()

    def _find(self, reference: bytes) -> list[SecretKey]:
        from pkcs11 import Attribute, ObjectClass, SecretKey

        found = []
        for purpose in _PURPOSES:
            for obj in self._session.get_objects(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.ID: reference,
                    Attribute.LABEL: self._label(purpose),
                }
            ):
                if isinstance(obj, SecretKey):
                    found.append(obj)
        return found

    def new_root_reference(self) -> str:
        return _REF_PREFIX + secrets.token_hex(16)

    def _binding_objects(self) -> list[object]:
        from pkcs11 import Attribute, ObjectClass

        return list(
            self._session.get_objects(
                {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: self._binding_label}
            )
        )

    @property
    def _binding_label(self) -> str:
        return f"{self.config.object_prefix}-binding"

    def binding(self) -> KeyStoreBinding | None:
        import pkcs11
        from pkcs11 import Attribute

        with self._lock:
            try:
                found = self._binding_objects()
                value = found[0][Attribute.VALUE] if found else None  # type: ignore[index]
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: reading the binding failed: {e!r}") from e
        if not isinstance(value, bytes) or len(value) != 48:
            return None
        return KeyStoreBinding.from_slot(value[:16], value[16:])

    def bind(self, binding: KeyStoreBinding) -> None:
        """Write the binding as a token data object (replacing the one there)."""
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        reference, secret = binding.to_slot()
        with self._lock:
            try:
                for obj in self._binding_objects():
                    obj.destroy()  # type: ignore[attr-defined]
                self._session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.DATA,
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.LABEL: self._binding_label,
                        Attribute.APPLICATION: "oblivio",
                        Attribute.VALUE: reference + secret,
                    }
                )
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: writing the binding failed: {e!r}") from e

    def create_root_key(
        self, purpose: RootKeyPurpose, key_ref: str | None = None, *, generation: int = 0
    ) -> str:
        """Raise the binding's generation, then generate a non-extractable AES-256 key in the
        token named ``key_ref`` (left as it is if it exists); confirm it can be found."""
        import pkcs11
        from pkcs11 import Attribute, KeyType

        key_ref = key_ref or self.new_root_reference()
        reference = _reference(key_ref)
        if reference is None:
            raise KeyBackendError(f"pkcs11 keys: not a pkcs11 key reference: {key_ref}")
        raise_binding_generation(self, generation)
        with self._lock:
            try:
                if self._find(reference):
                    return key_ref
                self._session.generate_key(
                    KeyType.AES,
                    256,
                    id=reference,
                    label=self._label(purpose),
                    store=True,
                    template={
                        Attribute.TOKEN: True,
                        Attribute.PRIVATE: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        # Only what the configured mechanism needs.
                        Attribute.ENCRYPT: not self._key_wrap,
                        Attribute.DECRYPT: not self._key_wrap,
                        Attribute.WRAP: self._key_wrap,
                        Attribute.UNWRAP: self._key_wrap,
                    },
                )
                if not self._find(reference):
                    raise KeyBackendError("pkcs11 keys: a new root key cannot be found")
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: cannot create a root key: {e!r}") from e
        return key_ref

    def has_root_key(self, key_ref: str) -> bool:
        import pkcs11

        reference = _reference(key_ref)
        if reference is None:
            return False
        with self._lock:
            try:
                return bool(self._find(reference))
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: lookup failed: {e!r}") from e

    def live_root_keys(self) -> set[str]:
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        refs: set[str] = set()
        with self._lock:
            try:
                for purpose in _PURPOSES:
                    for obj in self._session.get_objects(
                        {
                            Attribute.CLASS: ObjectClass.SECRET_KEY,
                            Attribute.LABEL: self._label(purpose),
                        }
                    ):
                        refs.add(_REF_PREFIX + bytes(obj[Attribute.ID]).hex())
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: listing keys failed: {e!r}") from e
        return refs

    def wrap(self, key_ref: str, key: bytes, context: bytes) -> bytes:
        return self.wrap_many(key_ref, [(key, context)])[0]

    def wrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Wrap inside the token by the configured mechanism, the wrap context bound as
        associated data (AES-GCM) or by its hash (AES key wrap); one key lookup."""
        import pkcs11

        reference = _reference(key_ref)
        with self._lock:
            try:
                found = self._find(reference) if reference else []
                if not found:
                    raise KeyBackendError(f"pkcs11 keys: no live root key {key_ref}")
                seal = self._key_wrap_seal if self._key_wrap else _gcm_seal
                return [seal(found[0], key, context) for key, context in items]
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: wrap failed: {e!r}") from e

    def _key_wrap_seal(self, root: SecretKey, material: bytes, context: bytes) -> bytes:
        """``C_WrapKey`` (CKM_AES_KEY_WRAP) of a session object holding the material and the
        hash of the wrap context; the object is destroyed at once."""
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
        from pkcs11 import SecretKey as Pkcs11SecretKey
        from pkcs11.types import WrapMixin

        if not isinstance(root, WrapMixin):
            raise KeyBackendError("pkcs11 keys: the root key cannot wrap")
        carrier = self._session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
                Attribute.VALUE: material + sha256(key_wrap_aad(context)),
            }
        )
        try:
            if not isinstance(carrier, Pkcs11SecretKey):
                raise KeyBackendError("pkcs11 keys: the token made no secret key object")
            wrapped = root.wrap_key(carrier, mechanism=Mechanism.AES_KEY_WRAP)
        finally:
            carrier.destroy()
        if not isinstance(wrapped, bytes):
            raise KeyBackendError("pkcs11 keys: C_WrapKey returned no bytes")
        return wrapped

    def unwrap(self, key_ref: str, wrapped: bytes, context: bytes) -> bytes:
        """Unwrap inside the token; every failure, PKCS#11 errors included, is IntegrityError."""
        return self.unwrap_many(key_ref, [(wrapped, context)])[0]

    def unwrap_many(self, key_ref: str, items: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """Unwrap inside the token by the configured mechanism with one key lookup; any
        failure, PKCS#11 errors included, is the opaque IntegrityError."""
        import pkcs11

        reference = _reference(key_ref)
        if reference is None:
            raise IntegrityError()
        with self._lock:
            try:
                found = self._find(reference)
                if not found:
                    raise IntegrityError()
                unseal = self._key_wrap_unseal if self._key_wrap else _gcm_unseal
                return [unseal(found[0], wrapped, context) for wrapped, context in items]
            except pkcs11.PKCS11Error as e:
                raise IntegrityError() from e

    def _key_wrap_unseal(self, root: SecretKey, wrapped: bytes, context: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
        from pkcs11.types import UnwrapMixin

        if not isinstance(root, UnwrapMixin):
            raise IntegrityError()
        carrier = root.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.GENERIC_SECRET,
            wrapped,
            mechanism=Mechanism.AES_KEY_WRAP,
            store=False,
            template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )
        try:
            value = carrier[Attribute.VALUE]
        finally:
            carrier.destroy()
        if not isinstance(value, bytes) or len(value) < _CONTEXT_DIGEST_SIZE:
            raise IntegrityError()
        material, digest = value[:-_CONTEXT_DIGEST_SIZE], value[-_CONTEXT_DIGEST_SIZE:]
        if not digests_equal(digest, sha256(key_wrap_aad(context))):
            raise IntegrityError()
        return material

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
        """``C_DestroyObject`` on every object with this ``CKA_ID``; then a lookup must fail."""
        import pkcs11

        reference = _reference(key_ref)
        if reference is None:
            raise KeyBackendError(f"pkcs11 keys: not a pkcs11 key reference: {key_ref}")
        with self._lock:
            try:
                objects = self._find(reference)
                for obj in objects:
                    obj.destroy()
                left = self._find(reference)
            except pkcs11.PKCS11Error as e:
                raise KeyBackendError(f"pkcs11 keys: destroying {key_ref} failed: {e!r}") from e
        if left:
            raise KeyBackendError(f"pkcs11 keys: {key_ref} still found after C_DestroyObject")
        return DestructionEvidence(
            backend=self.scheme,
            key_ref={
                "key_id": key_ref,
                "token_serial": self.token_serial,
                "token_label": self.config.token_label,
            },
            evidence={
                "method": "C_DestroyObject",
                "objects_destroyed": len(objects),
                "confirmed_by": "C_FindObjects by CKA_ID found no object",
            },
        )


def _gcm_seal(root: SecretKey, material: bytes, context: bytes) -> bytes:
    """AES-GCM through ``C_Encrypt``: ``nonce || ciphertext || tag``."""
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams
    from pkcs11.types import EncryptMixin

    if not isinstance(root, EncryptMixin):
        raise KeyBackendError("pkcs11 keys: the root key cannot encrypt")
    nonce = secrets.token_bytes(NONCE_SIZE)
    sealed = root.encrypt(
        material,
        mechanism=Mechanism.AES_GCM,
        mechanism_param=GCMParams(nonce, key_wrap_aad(context)),
    )
    if not isinstance(sealed, bytes):
        raise KeyBackendError("pkcs11 keys: C_Encrypt returned no bytes")
    return nonce + sealed


def _gcm_unseal(root: SecretKey, wrapped: bytes, context: bytes) -> bytes:
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams
    from pkcs11.types import DecryptMixin

    if not isinstance(root, DecryptMixin) or len(wrapped) < NONCE_SIZE + TAG_SIZE:
        raise IntegrityError()
    plain = root.decrypt(
        wrapped[NONCE_SIZE:],
        mechanism=Mechanism.AES_GCM,
        mechanism_param=GCMParams(wrapped[:NONCE_SIZE], key_wrap_aad(context)),
    )
    if not isinstance(plain, bytes):
        raise IntegrityError()
    return plain
