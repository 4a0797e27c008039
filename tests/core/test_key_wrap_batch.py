"""Batch key wrapping (core/envelope.py): the same bytes as one wrap at a time, and the same
opaque IntegrityError for any failure."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oblivio.core.envelope import unwrap_key, unwrap_keys, wrap_key, wrap_keys, wrap_keys_each
from oblivio.core.errors import IntegrityError

KEY = bytes(range(32))
items_strategy = st.lists(
    st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=40)), max_size=8
)


@settings(max_examples=50, deadline=None)
@given(items=items_strategy, seed=st.binary(min_size=12, max_size=12))
def test_batch_equals_one_at_a_time(items: list[tuple[bytes, bytes]], seed: bytes) -> None:
    nonces = b"".join(seed[:11] + bytes([i]) for i in range(len(items)))
    batch = wrap_keys(KEY, nonces, items)
    assert batch == [
        wrap_key(KEY, nonces[12 * i : 12 * i + 12], key, ctx) for i, (key, ctx) in enumerate(items)
    ]
    assert unwrap_keys(KEY, [(w, ctx) for w, (_, ctx) in zip(batch, items, strict=True)]) == [
        key for key, _ in items
    ]
    for w, (key, ctx) in zip(batch, items, strict=True):
        assert unwrap_key(KEY, w, ctx) == key


def test_any_failure_in_a_batch_is_the_opaque_error() -> None:
    items = [(bytes(32), b"a"), (bytes([1]) * 32, b"b")]
    wrapped = wrap_keys(KEY, bytes(24), items)
    with pytest.raises(IntegrityError):
        unwrap_keys(KEY, [(wrapped[0], b"a"), (wrapped[1], b"a")])
    with pytest.raises(IntegrityError):
        unwrap_keys(KEY, [(wrapped[0][:20], b"a")])
    with pytest.raises(IntegrityError):
        unwrap_keys(bytes(16), [(wrapped[0], b"a")])
    with pytest.raises(ValueError, match="nonce bytes"):
        wrap_keys(KEY, bytes(12), items)


@settings(max_examples=50, deadline=None)
@given(items=items_strategy, data=st.data())
def test_each_under_its_own_key_equals_one_at_a_time(
    items: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    keys = data.draw(st.binary(min_size=32 * len(items), max_size=32 * len(items)), label="keys")
    nonces = data.draw(
        st.binary(min_size=12 * len(items), max_size=12 * len(items)), label="nonces"
    )
    batch = wrap_keys_each(keys, nonces, items)
    for i, (wrapped, (key, ctx)) in enumerate(zip(batch, items, strict=True)):
        own = keys[32 * i : 32 * i + 32]
        assert wrapped == wrap_key(own, nonces[12 * i : 12 * i + 12], key, ctx)
        assert unwrap_key(own, wrapped, ctx) == key


@pytest.mark.parametrize(("keys", "nonces"), [(bytes(31), bytes(12)), (bytes(32), bytes(11))])
def test_each_needs_one_key_and_one_nonce_per_item(keys: bytes, nonces: bytes) -> None:
    with pytest.raises(ValueError, match="wrap_keys_each"):
        wrap_keys_each(keys, nonces, [(bytes(32), b"ctx")])
