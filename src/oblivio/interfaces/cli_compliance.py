"""``oblivio evidence list|show`` and the non-compliance half of ``oblivio verify-evidence``
(DESIGN.md §12, docs/adr/0027); ``peer reinstate`` is in cli.py's ``peer`` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from oblivio.core.canonical import JsonValue
from oblivio.core.errors import InvalidInputError, VerificationError
from oblivio.core.evidence import verify_evidence
from oblivio.interfaces.output import emit
from oblivio.node.node import open_node
from oblivio.node.services import open_services

EXIT_EVIDENCE_INVALID = 8
"""As ``oblivio verify`` for a proof that does not verify."""


def cmd_evidence(args: argparse.Namespace) -> int:
    """List the non-compliance evidence this node kept, or show (export) one record."""
    from oblivio.federation.propagation import open_federation

    with open_node(args.home, recover=False) as node:
        federation = open_federation(open_services(node))
        try:
            noncompliance = federation.noncompliance
            if args.action == "list":
                listed = noncompliance.evidence_list(args.peer)
                lines = [
                    f"{e['id']}\t{e['peer']}\t{e['finding']}\t{e['tombstone_id']}\t{e['found_at']}"
                    for e in listed
                ]
                emit(args, "\n".join(lines), {"evidence": listed})
                return 0
            if not args.evidence_id:
                raise InvalidInputError("evidence show needs an evidence ID")
            record = noncompliance.evidence(args.evidence_id)
        finally:
            federation.client.close()
    text = json.dumps(record, sort_keys=True, indent=1) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, "utf-8")
        except OSError as e:
            raise InvalidInputError(f"cannot write {args.output}: {e.strerror}") from e
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def verify_noncompliance(args: argparse.Namespace, data: JsonValue, key: str | None) -> int:
    """Check non-compliance evidence offline (core/evidence.py); exit 0 with what is proven,
    8 with the failing step."""
    try:
        found = verify_evidence(data, key)
    except VerificationError as e:
        if args.json:
            print(json.dumps({"valid": False, "error": str(e)}, sort_keys=True))
        print(f"oblivio verify-evidence: invalid: {e}", file=sys.stderr)
        return EXIT_EVIDENCE_INVALID
    statement = found.statement()
    if not found.peer_key_pinned:
        statement += " (with the peer key the evidence names: pass --key to pin it)"
    emit(
        args,
        statement,
        {
            "valid": True,
            "proven": [statement],
            "peer": found.peer,
            "finding": found.finding,
            "tombstone_id": found.tombstone_id,
            "belief_id": found.belief_id,
            "responded_at": found.responded_at,
            "peer_key_pinned": found.peer_key_pinned,
        },
    )
    return 0


def add_evidence_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``oblivio evidence``."""
    evidence = commands.add_parser(
        "evidence", parents=[common], help="non-compliance evidence kept against peers"
    )
    evidence.add_argument("action", choices=["list", "show"])
    evidence.add_argument("evidence_id", metavar="ID", nargs="?")
    evidence.add_argument("--peer", help="with list: one peer's evidence only")
    evidence.add_argument("-o", "--output", help="with show: write the record to this file")
    evidence.set_defaults(run=cmd_evidence)
