"""``oblivio share`` and ``oblivio belief``: encrypted beliefs from the command line (DESIGN.md
§12, seed 001). They act on the node home directly, as ``peer`` does; a running ``oblivio
serve`` delivers what they enqueue once the grace period is over."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oblivio.core.errors import InvalidInputError
from oblivio.federation.beliefs import Beliefs
from oblivio.federation.propagation import open_federation
from oblivio.interfaces.output import emit
from oblivio.node.node import open_node
from oblivio.node.services import open_services

CLI_AGENT = "cli"
"""The agent named in the tombstones the command line issues (``agent:ORG/cli``)."""


def _with_beliefs(
    home: Path, work: Callable[[Beliefs], dict[str, Any]], *, recover: bool = True
) -> dict[str, Any]:
    """``work`` on the node's beliefs; a read (``recover=False``) never runs key recovery."""
    with open_node(home, recover=recover) as node:
        federation = open_federation(open_services(node))
        try:
            return work(Beliefs(federation))
        finally:
            federation.client.close()


def cmd_share(args: argparse.Namespace) -> int:
    """Share a stored artifact's plaintext, or --text, as a belief with --to PEER…"""
    if (args.artifact_id is None) == (args.text is None):
        raise InvalidInputError("share needs an artifact ID or --text, not both")

    def share(beliefs: Beliefs) -> dict[str, Any]:
        if args.artifact_id is not None:
            plaintext = beliefs.services.node.vault.get(args.artifact_id)
        else:
            plaintext = args.text.encode("utf-8")
        return beliefs.share(plaintext, {}, list(args.to), actor=CLI_AGENT)

    shared = _with_beliefs(args.home, share)
    emit(args, f"{shared['id']}\t{shared['status']} until {shared['deliver_after']}", shared)
    return 0


def cmd_belief(args: argparse.Namespace) -> int:
    """Show or delete a belief."""
    if args.action == "show":
        answer = _with_beliefs(args.home, lambda b: b.read(args.belief_id), recover=False)
    else:
        answer = _with_beliefs(args.home, lambda b: b.delete(args.belief_id, CLI_AGENT))
    emit(args, f"{answer['id']}\t{answer['status']}", answer)
    return 0


def add_belief_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``share`` and ``belief``."""
    share = commands.add_parser("share", parents=[common], help="share a belief with peers")
    share.add_argument("artifact_id", metavar="ID", nargs="?", help="a stored artifact to share")
    share.add_argument("--text", help="share this text instead of an artifact")
    share.add_argument("--to", nargs="+", required=True, metavar="PEER", help="recipients")
    share.set_defaults(run=cmd_share)
    belief = commands.add_parser("belief", parents=[common], help="show or delete a belief")
    belief.add_argument("action", choices=["show", "delete"])
    belief.add_argument("belief_id", metavar="BELIEF_ID")
    belief.set_defaults(run=cmd_belief)
