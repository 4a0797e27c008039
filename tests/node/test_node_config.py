"""A node's key trees follow its configuration (DESIGN.md §5): their fan-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oblivio.core.errors import InvalidInputError
from oblivio.node.home import NodeHomeError
from oblivio.node.node import init_node, open_node
from oblivio.store.key_tree_nodes import SqlKeyTreeStore


def _fanouts(home: Path) -> dict[str, int]:
    with open_node(home) as node, SqlKeyTreeStore(node.db).transaction(write=False) as nodes:
        heads = {tree: nodes.head(tree) for tree in ("wrap", "escrow")}
    return {tree: head.fanout for tree, head in heads.items() if head is not None}


def test_init_makes_trees_of_the_fanout_asked_for(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with init_node(home, fanout=24) as node:
        artifact = node.vault.put(b"kept", {})
        assert node.vault.get(artifact) == b"kept"
    assert json.loads((home / "config.json").read_text())["key_tree"] == {"fanout": 24}
    assert _fanouts(home) == {"wrap": 24, "escrow": 24}


def test_the_default_fanout_is_64(tmp_path: Path) -> None:
    with init_node(tmp_path / "home"):
        pass
    assert _fanouts(tmp_path / "home") == {"wrap": 64, "escrow": 64}


@pytest.mark.parametrize("fanout", [0, 1, 4097])
def test_init_refuses_a_fanout_out_of_range(tmp_path: Path, fanout: int) -> None:
    with pytest.raises(InvalidInputError, match="fan-out"):
        init_node(tmp_path / "home", fanout=fanout)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"fanout": 1}, "key_tree.fanout"),
        ({"fanout": "16"}, "key_tree.fanout"),
        ({"fanout": True}, "key_tree.fanout"),
        ({"destruction_window_seconds": 60}, "unknown field 'destruction_window_seconds'"),
        ([], "'key_tree' must be an object"),
    ],
)
def test_a_bad_key_tree_section_is_named(tmp_path: Path, section: object, message: str) -> None:
    home = tmp_path / "home"
    with init_node(home):
        pass
    config = json.loads((home / "config.json").read_text())
    config["key_tree"] = section
    (home / "config.json").write_text(json.dumps(config))
    with pytest.raises(NodeHomeError, match=message):
        open_node(home)
