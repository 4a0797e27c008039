"""What a command prints: the human text, or with ``--json`` the machine form (sorted keys)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def emit(args: argparse.Namespace, human: str, machine: dict[str, Any]) -> None:
    """Print ``machine`` as JSON when ``--json`` was given, else ``human``."""
    if args.json:
        print(json.dumps(machine, sort_keys=True))
    else:
        print(human)
