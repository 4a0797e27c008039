"""``oblivio fact add``, ``oblivio card add`` and ``oblivio recall`` (DESIGN.md §16)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.interfaces.test_cli import home, oblivio, one_error_line

__all__ = ["home"]  # the fixture, on each store


def test_fact_card_recall(home: Path) -> None:
    assert oblivio("fact", "add", "user:alice", "name", '"Alice Doe"', home=home).returncode == 0
    edge = oblivio("fact", "add", "user:bob", "knows", "user:alice", "--ref", home=home)
    assert edge.returncode == 0, edge.stderr
    card = oblivio("card", "add", "user:bob", "Bob sails", "--related", "user:alice", home=home)
    assert card.returncode == 0, card.stderr
    done = oblivio("recall", "user:bob", "--hops", "1", "--json", home=home)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["total"] == 3
    assert result["edges"][0]["to"] == "user:alice"
    text = oblivio("recall", "--q", "sails", home=home)
    assert b"Bob sails" in text.stdout


def test_bad_recall_input_exits_2(home: Path) -> None:
    done = oblivio("recall", "user:bob", "--hops", "4", home=home)
    assert done.returncode == 2
    assert "hops" in one_error_line(done)
    wildcard = oblivio("fact", "add", "user:*", "name", "x", home=home)
    assert wildcard.returncode == 2


def test_api_key_scopes_are_validated(home: Path) -> None:
    ok = oblivio(
        "api-key", "create", "--name", "bot", "--role", "agent", "--read-scopes", "team", home=home
    )
    assert ok.returncode == 0, ok.stderr
    bad = oblivio(
        "api-key", "create", "--name", "b2", "--role", "agent", "--write-scopes", "x", home=home
    )
    assert bad.returncode == 2
    assert "scope" in one_error_line(bad)
