"""UUIDv7 against RFC 9562 Appendix A.6, and the uuid6 library's output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from oblivio.core.errors import InvalidInputError
from oblivio.core.identifiers import uuid7_unix_ms
from oblivio.node.ids import new_record_id, new_uuid7

VECTOR = json.loads((Path(__file__).parent.parent / "vectors" / "uuidv7.json").read_text("utf-8"))


def test_rfc9562_example_timestamp() -> None:
    example = VECTOR["example"]
    assert uuid7_unix_ms(example["uuid_lowercase"]) == example["unix_ts_ms"]
    assert uuid7_unix_ms(example["uuid"]) == example["unix_ts_ms"]


def test_generated_ids_are_version_7_and_time_ordered() -> None:
    ids = [new_uuid7() for _ in range(1000)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert new_record_id("tomb_").startswith("tomb_")


@pytest.mark.parametrize(
    "text",
    ["", "not-a-uuid", "ad69a821-23aa-4840-bb1f-71b111d1d45e"],  # the last a version-4 UUID
    ids=["empty", "text", "uuid4"],
)
def test_non_uuid7_is_rejected(text: str) -> None:
    with pytest.raises(InvalidInputError):
        uuid7_unix_ms(text)
