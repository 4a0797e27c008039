"""Shamir secret sharing over GF(2^8) (DESIGN.md §5, the threshold backend).

A secret of any length is split byte by byte: for each byte a random polynomial of degree
``threshold - 1`` over GF(2^8) (the AES field, reduction polynomial x^8 + x^4 + x^3 + x + 1) has
that byte as its constant term, and share ``x`` holds the polynomial's value at ``x`` for
``x = 1 … shares``. Any ``threshold`` shares give the secret back by Lagrange interpolation at 0;
fewer reveal nothing about it. Randomness is passed in (core makes none).

No maintained PyPI library fitted (docs/adr/0002-shamir-gf256.md): this module is small, pure, and
checked against the field axioms and the split/combine laws in tests/core/test_shamir.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_SHARES = 255


def _tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    exp = [0] * 510
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = value
        log[value] = power
        # multiply by the generator 3 = x + 1
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= 0x11B
        value = doubled ^ value
    for power in range(255, 510):
        exp[power] = exp[power - 255]
    return tuple(exp), tuple(log)


_EXP, _LOG = _tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two elements of GF(2^8)."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_div(a: int, b: int) -> int:
    """Quotient ``a / b`` in GF(2^8); raises ZeroDivisionError for ``b == 0``."""
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] - _LOG[b] + 255]


@dataclass(frozen=True)
class Share:
    """One share: its x coordinate (1-255) and the polynomials' values there, one per byte."""

    x: int
    y: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.x <= MAX_SHARES:
            raise ValueError(f"Shamir share: expected x in 1..255, got {self.x}")


def split_secret(
    secret: bytes, shares: int, threshold: int, random_bytes: Callable[[int], bytes]
) -> list[Share]:
    """Split ``secret`` into ``shares`` shares of which any ``threshold`` recover it.

    Raises ValueError unless ``1 <= threshold <= shares <= 255`` and the secret is non-empty.
    """
    if not secret:
        raise ValueError("Shamir: the secret must not be empty")
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise ValueError(
            f"Shamir: expected 1 <= threshold <= shares <= 255, got t={threshold}, n={shares}"
        )
    coefficients = random_bytes(len(secret) * (threshold - 1))
    if len(coefficients) != len(secret) * (threshold - 1):
        raise ValueError("Shamir: the random source returned too few bytes")
    result = []
    for x in range(1, shares + 1):
        values = bytearray(len(secret))
        for i, constant in enumerate(secret):
            # Horner's rule from the highest coefficient down to the secret byte.
            acc = 0
            for j in range(threshold - 2, -1, -1):
                acc = gf_mul(acc, x) ^ coefficients[i * (threshold - 1) + j]
            values[i] = gf_mul(acc, x) ^ constant
        result.append(Share(x, bytes(values)))
    return result


def combine_shares(shares: Sequence[Share]) -> bytes:
    """Recover the secret from ``threshold`` (or more) distinct shares of one split.

    With fewer shares than the threshold the result is a meaningless value, not an error: Shamir
    sharing cannot tell. Raises ValueError for no shares, repeated x or unequal lengths.
    """
    if not shares:
        raise ValueError("Shamir: no shares to combine")
    xs = [share.x for share in shares]
    if len(set(xs)) != len(xs):
        raise ValueError("Shamir: shares must have distinct x coordinates")
    length = len(shares[0].y)
    if any(len(share.y) != length for share in shares):
        raise ValueError("Shamir: shares have different lengths")
    # Lagrange basis at 0: l_j(0) = prod_{m != j} x_m / (x_m - x_j); subtraction is XOR.
    weights = []
    for j, xj in enumerate(xs):
        weight = 1
        for m, xm in enumerate(xs):
            if m != j:
                weight = gf_mul(weight, gf_div(xm, xm ^ xj))
        weights.append(weight)
    secret = bytearray(length)
    for weight, share in zip(weights, shares, strict=True):
        for i, value in enumerate(share.y):
            secret[i] ^= gf_mul(weight, value)
    return bytes(secret)
