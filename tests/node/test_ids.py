"""Record identifiers are UUIDv7 (RFC 9562 §5.7), in increasing order within a batch."""

from __future__ import annotations

import uuid

import pytest

from oblivio.core.identifiers import uuid7_unix_ms
from oblivio.node import ids
from oblivio.node.ids import new_uuid7, new_uuid7s


@pytest.mark.parametrize("count", [1, 2, 1000])
def test_a_batch_of_ids_is_distinct_increasing_uuid7(count: int) -> None:
    batch = new_uuid7s(count)
    assert len(batch) == len(set(batch)) == count
    assert batch == sorted(batch)
    for text in batch:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
    assert uuid7_unix_ms(batch[0]) == uuid7_unix_ms(batch[-1])


def test_batches_follow_each_other_in_order() -> None:
    earlier = new_uuid7s(10)
    later = new_uuid7s(10)
    assert earlier[-1] < later[0] or uuid7_unix_ms(earlier[-1]) == uuid7_unix_ms(later[0])
    assert new_uuid7() > earlier[0]


def test_no_batch_is_asked_for_nothing() -> None:
    assert new_uuid7s(0) == []


def test_a_draw_without_room_for_the_batch_is_taken_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = uuid.UUID(int=(0x0190 << 112) | (7 << 76) | (2 << 62) | ((1 << 62) - 2))
    roomy = uuid.UUID(int=(0x0190 << 112) | (7 << 76) | (2 << 62) | 5)
    draws = iter([full, roomy])
    monkeypatch.setattr(ids.uuid6, "uuid7", lambda: next(draws))
    batch = new_uuid7s(3)
    assert [uuid.UUID(t).int & ((1 << 62) - 1) for t in batch] == [5, 6, 7]
    assert all(uuid.UUID(t).variant == uuid.RFC_4122 for t in batch)
