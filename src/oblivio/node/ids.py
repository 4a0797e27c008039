"""Fresh record identifiers: UUIDv7 from the ``uuid6`` library (RFC 9562 §5.7)."""

from __future__ import annotations

import uuid6


def new_uuid7() -> str:
    """A new time-ordered UUIDv7 in its canonical lower-case text form."""
    return str(uuid6.uuid7())


def new_record_id(prefix: str = "") -> str:
    """``prefix`` followed by a new UUIDv7, e.g. ``tomb_0190…`` (seed 002 §23.2.2)."""
    return prefix + new_uuid7()
