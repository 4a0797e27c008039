"""Node fixtures: a freshly initialised node on each store backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from oblivio.node.node import Node, init_node


@pytest.fixture
def node(tmp_path: Path, store_uri: str) -> Iterator[Node]:
    """A new node whose store is each backend in turn."""
    with init_node(tmp_path / "home", name="test-node", store_uri=store_uri) as created:
        yield created
