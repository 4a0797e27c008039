"""Assertions shared by the node tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from oblivio.core.errors import ArtifactForgottenError
from oblivio.node.node import Node


def assert_suppressed(node: Node, artifact_id: str) -> None:
    """Reads of the artifact stop with the very answer a forgotten artifact gives (ADR 0017),
    while its forget has not been executed (its keys may still exist)."""
    with pytest.raises(ArtifactForgottenError, match=r"was forgotten at level \d \(forget request"):
        node.vault.get(artifact_id)
    with node.db.transaction(write=False) as tx:
        row = tx.fetchone(
            "SELECT status FROM artifact_states WHERE artifact_id = ?", (artifact_id,)
        )
    assert row == ("suppressed",)


class Clock:
    """A clock the test moves (``now``), starting at the real time."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now
