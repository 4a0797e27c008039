"""Binary-to-text encodings on the wire (DESIGN.md §15): lower-case hex, unpadded base64url."""

from __future__ import annotations

import base64
import binascii


def b64url_encode(data: bytes) -> str:
    """base64url without padding (seed 002 signatures and keys)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly; raise ValueError on anything else."""
    if not isinstance(text, str) or "=" in text or not text.isascii():
        raise ValueError("expected unpadded base64url text")
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded, altchars=b"-_", validate=True)
    except binascii.Error as e:
        raise ValueError(f"invalid base64url: {e}") from e
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url encoding")
    return data


def b64_std_encode(data: bytes) -> str:
    """Standard base64 with padding (C2SP signed notes and checkpoints)."""
    return base64.b64encode(data).decode("ascii")


def b64_std_decode(text: str) -> bytes:
    """Decode standard padded base64 strictly; raise ValueError on anything else."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"invalid base64: {e}") from e
    if b64_std_encode(data) != text:
        raise ValueError("non-canonical base64 encoding")
    return data
