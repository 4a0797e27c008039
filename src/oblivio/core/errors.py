"""The exception tree of oblivio, grouped by who is at fault (STYLE.md §5).

OblivioError
├── InvalidInputError               the caller sent something unusable (4xx over HTTP)
│   ├── InvalidEntityUriError       code tombstone_entity_uri_invalid
│   ├── InvalidScopeError           code tombstone_invalid_scope
│   ├── InvalidMetadataError
│   ├── InvalidStoreUriError
│   ├── InvalidKeysUriError
│   ├── NotFoundError               an id that names nothing (404)
│   │   ├── ArtifactNotFoundError
│   │   └── TombstoneNotFoundError  code tombstone_not_found
│   ├── ConflictError               the request contradicts what is stored (409)
│   │   ├── TombstoneAlreadyExistsError   code tombstone_already_exists
│   │   └── TombstoneAlreadyRevokedError  code tombstone_already_revoked
│   └── AccessDeniedError           the caller's credentials do not allow this (401/403)
├── ArtifactForgottenError          the artifact was forgotten, revoked or is suppressed (410)
├── VerificationError               evidence from a peer or a prover does not verify
│   └── TombstoneVerificationFailedError  code tombstone_verification_failed
├── IntegrityError                  stored data failed authentication: one opaque error for
│                                   every decrypt or unwrap failure, so no detail is an oracle
└── InfrastructureError             our own storage or key backend failed
    ├── StorageError
    │   └── SchemaVersionError
    └── KeyBackendError
"""

from __future__ import annotations


class OblivioError(Exception):
    """Base of every error oblivio raises on purpose."""

    code: str = "oblivio_error"


class InvalidInputError(OblivioError):
    """The caller's input is unusable; nothing was changed."""

    code = "invalid_input"


class InvalidEntityUriError(InvalidInputError):
    """An entity URI does not follow DESIGN.md §3 (seed 002 §23.2.2 invariant 2)."""

    code = "tombstone_entity_uri_invalid"


class InvalidScopeError(InvalidInputError):
    """A fact scope or scope pattern is not one of seed 002 §23.2.3."""

    code = "tombstone_invalid_scope"


class InvalidMetadataError(InvalidInputError):
    """Artifact metadata is not a JSON object within the size limits."""

    code = "invalid_metadata"


class InvalidStoreUriError(InvalidInputError):
    """A store URI names no supported backend or is malformed."""

    code = "invalid_store_uri"


class InvalidKeysUriError(InvalidInputError):
    """A wrapping-key backend URI names no supported backend or is malformed."""

    code = "invalid_keys_uri"


class NotFoundError(InvalidInputError):
    """An identifier names nothing this node holds."""

    code = "not_found"


class ArtifactNotFoundError(NotFoundError):
    """No artifact with this id is stored here."""

    code = "artifact_not_found"


class TombstoneNotFoundError(NotFoundError):
    """No tombstone with this id (seed 002 §23.7)."""

    code = "tombstone_not_found"


class ConflictError(InvalidInputError):
    """The request contradicts what is already stored; nothing was changed."""

    code = "conflict"


class TombstoneAlreadyExistsError(ConflictError):
    """An active tombstone for this entity URI and scope exists (seed 002 §23.7)."""

    code = "tombstone_already_exists"


class TombstoneAlreadyRevokedError(ConflictError):
    """The tombstone has already been revoked (seed 002 §23.7)."""

    code = "tombstone_already_revoked"


class AccessDeniedError(InvalidInputError):
    """The caller is not allowed to do this (missing, unknown or insufficient credentials)."""

    code = "access_denied"


class ArtifactForgottenError(OblivioError):
    """A read of an artifact that was forgotten (level 1/2), revoked (level 0), or is suppressed
    by a pending forget request or a legal hold; the message says which."""

    code = "artifact_forgotten"


class VerificationError(OblivioError):
    """Evidence (a signature, a proof, a checkpoint) did not verify; the message names the link."""

    code = "verification_failed"


class TombstoneVerificationFailedError(VerificationError):
    """An inbound tombstone's signature or signer did not verify (seed 002 §23.4.2, §23.7)."""

    code = "tombstone_verification_failed"


class IntegrityError(OblivioError):
    """Stored data failed authentication. Deliberately opaque: it never says which byte or why."""

    code = "integrity_error"

    def __init__(self, message: str = "integrity check failed: stored data was altered") -> None:
        super().__init__(message)


class InfrastructureError(OblivioError):
    """Our own infrastructure (database, key backend) failed; the caller is not at fault."""

    code = "infrastructure_error"


class StorageError(InfrastructureError):
    """The database failed or is unreachable."""

    code = "storage_error"


class SchemaVersionError(StorageError):
    """The database schema is newer than this build of oblivio knows."""

    code = "schema_version_error"


class KeyBackendError(InfrastructureError):
    """The wrapping-key backend failed (an unwrap failure is an IntegrityError instead)."""

    code = "key_backend_error"


class NodeStateMismatchError(OblivioError):
    """The node's database and its key store do not belong together, or one of them is missing
    (DESIGN.md §5, docs/key-erasure.md): a restored backup older than the key store, a key store
    that lacks roots the database needs, a key store or database of another node, a missing
    database file. The node refuses to open and destroys nothing; ``kind`` says which."""

    code = "node_state_mismatch"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
