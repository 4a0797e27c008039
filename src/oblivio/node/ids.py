"""Fresh record identifiers: UUIDv7 from the ``uuid6`` library (RFC 9562 §5.7)."""

from __future__ import annotations

import uuid
from typing import Final

import uuid6

_RAND_B_BITS: Final = 62
"""The random low field of a UUIDv7 (``rand_b``), below the two variant bits."""


def new_uuid7() -> str:
    """A new time-ordered UUIDv7 in its canonical lower-case text form."""
    return str(uuid6.uuid7())


def new_uuid7s(count: int) -> list[str]:
    """``count`` new UUIDv7s in increasing order, for the records of one batch.

    The first comes from ``uuid6``; each next one adds 1 to its ``rand_b`` field, RFC 9562
    §6.2's monotonic random method, so the batch costs one clock reading and one draw of random
    bits. When ``rand_b`` has no room for the batch, a fresh draw is taken."""
    if count <= 0:
        return []
    first = uuid6.uuid7().int
    while (first & ((1 << _RAND_B_BITS) - 1)) + count >= 1 << _RAND_B_BITS:
        first = uuid6.uuid7().int
    return [str(uuid.UUID(int=first + n)) for n in range(count)]


def new_record_id(prefix: str = "") -> str:
    """``prefix`` followed by a new UUIDv7, e.g. ``tomb_0190…`` (seed 002 §23.2.2)."""
    return prefix + new_uuid7()
