"""Shamir sharing over GF(2^8): field laws, split/combine, and the threshold property."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.shamir import Share, combine_shares, gf_div, gf_mul, split_secret


def _slow_mul(a: int, b: int) -> int:
    """Carry-less multiplication reduced by the AES polynomial, bit by bit."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return product


def test_multiplication_matches_the_aes_field() -> None:
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == _slow_mul(a, b)
    # FIPS 197 §4.2 worked example: {57} . {83} = {c1}
    assert gf_mul(0x57, 0x83) == 0xC1


def test_division_inverts_multiplication() -> None:
    for a in range(256):
        for b in range(1, 256):
            assert gf_div(gf_mul(a, b), b) == a
    with pytest.raises(ZeroDivisionError):
        gf_div(1, 0)


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test coefficients, not key material


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=48),
    n=st.integers(1, 7),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_any_threshold_subset_recovers_the_secret(
    secret: bytes, n: int, data: st.DataObject, seed: int
) -> None:
    t = data.draw(st.integers(1, n), label="t")
    shares = split_secret(secret, n, t, _rng(seed).randbytes)
    assert [s.x for s in shares] == list(range(1, n + 1))
    for subset in itertools.combinations(shares, t):
        assert combine_shares(list(subset)) == secret
    assert combine_shares(shares) == secret


def test_fewer_than_threshold_shares_are_uniform() -> None:
    """With t-1 shares fixed, every candidate secret byte stays possible (perfect secrecy):
    for t = 2, one share value appears for each secret byte under exactly one coefficient."""
    for x in (1, 2, 200):
        for secret_byte in range(256):
            seen = {
                split_secret(bytes([secret_byte]), 3, 2, lambda n, c=c: bytes([c]) * n)[x % 3].y
                for c in range(256)
            }
            assert len(seen) == 256


def test_wrong_share_gives_a_different_secret() -> None:
    secret = bytes(range(32))
    shares = split_secret(secret, 5, 3, _rng(1).randbytes)
    forged = Share(shares[0].x, bytes(b ^ 1 for b in shares[0].y))
    assert combine_shares([forged, shares[1], shares[2]]) != secret


@pytest.mark.parametrize(
    ("n", "t"), [(0, 0), (3, 0), (2, 3), (256, 2)], ids=["zero", "t0", "t>n", "n>255"]
)
def test_bad_parameters_are_refused(n: int, t: int) -> None:
    with pytest.raises(ValueError, match="threshold"):
        split_secret(b"k", n, t, _rng(0).randbytes)


def test_bad_shares_are_refused() -> None:
    with pytest.raises(ValueError, match="no shares"):
        combine_shares([])
    with pytest.raises(ValueError, match="distinct"):
        combine_shares([Share(1, b"a"), Share(1, b"b")])
    with pytest.raises(ValueError, match="lengths"):
        combine_shares([Share(1, b"a"), Share(2, b"bc")])
    with pytest.raises(ValueError, match=r"1\.\.255"):
        Share(0, b"a")
