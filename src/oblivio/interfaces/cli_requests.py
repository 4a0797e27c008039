"""``oblivio request …`` and ``oblivio report`` (DESIGN.md §16, §18; docs/adr/0032).

With no server running, the command line processes a request itself: ``request
verify-identity`` runs the steps at once (tombstone, forget and its epoch, propagation status,
proofs) unless ``--no-wait``, and ``request process`` advances one now (a failed step at
once). A request that must wait (on a peer, a destruction window) stays ``in_processing``; the
worker of ``oblivio serve`` goes on with it, or another ``request process``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oblivio.core.canonical import JsonValue, parse_json
from oblivio.core.erasure import REGIMES, STATUSES
from oblivio.core.errors import InvalidInputError
from oblivio.interfaces.output import emit
from oblivio.interfaces.reports import FORMATS, render, report_format, report_view
from oblivio.node.erasure_requests import ErasureRequest, ErasureRequestService
from oblivio.node.node import open_node
from oblivio.node.services import open_services


@contextmanager
def open_requests(home: Path) -> Iterator[ErasureRequestService]:
    """The erasure-request service of the node at ``home``, with its federation's per-peer
    status, closed on exit."""
    from oblivio.federation.propagation import open_federation

    with open_node(home) as node:
        services = open_services(node)
        federation = open_federation(services)
        try:
            yield ErasureRequestService(services, propagation=federation.propagation)
        finally:
            federation.client.close()


def _scope(text: str | None) -> object:
    if text and text.startswith("["):
        return parse_json(text)
    return text or "*"


def _line(request: ErasureRequest, now: datetime) -> str:
    view = request.to_dict(now)
    flags = " OVERDUE" if view["overdue"] else ""
    clock = "" if view["clock_running"] else " (clock waits on the requester)"
    return f"{request.id}\t{request.status}\t{request.regime}\tdue {view['due_at']}{clock}{flags}"


def _print(args: argparse.Namespace, human: str, machine: dict[str, JsonValue]) -> None:
    emit(args, human, machine)


def cmd_request(args: argparse.Namespace) -> int:
    """Create, verify, list, show, extend, cancel or process erasure requests."""
    now = datetime.now(UTC)
    with open_requests(args.home) as service:
        if args.action == "list":
            listed = service.every(args.status)
            lines = [_line(r, now) for r in listed]
            _print(args, "\n".join(lines), {"requests": [r.to_dict(now) for r in listed]})
            return 0
        if args.action == "create":
            if not args.entity or not args.regime:
                raise InvalidInputError("request create needs --entity URI and --regime")
            if args.request_id:
                raise InvalidInputError("request create takes no ID")
            request = service.create(args.entity, _scope(args.scope), args.regime, args.requestor)
        else:
            if not args.request_id:
                raise InvalidInputError(f"request {args.action} needs the request ID")
            request = _act(service, args)
        described = service.describe(request.id)
    lines = [_line(request, now)]
    if request.pause_reason:
        lines.append(f"paused: {request.pause_reason}")
    if request.status == "error" and request.last_error:
        lines.append(f"error: {request.last_error} (retried from this step)")
    _print(args, "\n".join(lines), described)
    return 0


def _act(service: ErasureRequestService, args: argparse.Namespace) -> ErasureRequest:
    request_id: str = args.request_id
    if args.action == "verify-identity":
        service.verify_identity(request_id)
        return service.get(request_id) if args.no_wait else service.advance(request_id)
    if args.action == "process":
        return service.advance(request_id, retry_now=True)
    if args.action == "extend":
        if args.days is None or args.reason is None:
            raise InvalidInputError("request extend needs --days N and --reason R")
        return service.extend(request_id, args.days, args.reason)
    if args.action == "cancel":
        return service.cancel(request_id)
    return service.get(request_id)


def cmd_report(args: argparse.Namespace) -> int:
    """Write the completion report of a request (HTML or PDF, the bundle attached)."""
    kind = report_format(args.format, args.output)
    with open_requests(args.home) as service:
        described = service.describe(args.request_id)
        bundle = service.bundle(args.request_id) if described["pof_bundle"] else None
        content = render(report_view(described, bundle, datetime.now(UTC)), kind)
    if args.output in (None, "-"):
        sys.stdout.buffer.write(content)
        return 0
    try:
        Path(args.output).write_bytes(content)
    except OSError as e:
        raise InvalidInputError(f"cannot write {args.output}: {e.strerror}") from e
    machine: dict[str, Any] = {"request_id": args.request_id, "format": kind, "file": args.output}
    _print(args, f"wrote {args.output} ({kind})", machine)
    return 0


def add_request_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``request`` and ``report``."""
    request = commands.add_parser("request", parents=[common], help="erasure requests (§18)")
    request.add_argument(
        "action",
        choices=["create", "verify-identity", "list", "show", "extend", "cancel", "process"],
    )
    request.add_argument("request_id", metavar="ID", nargs="?")
    request.add_argument("--entity", help="with create: the entity URI to erase")
    request.add_argument("--scope", help="with create: '*', a scope, or a JSON array of scopes")
    request.add_argument("--regime", choices=REGIMES, help="with create: gdpr or ccpa")
    request.add_argument("--requestor", default="", help="with create: who asked")
    request.add_argument("--days", type=int, help="with extend: days to add to the due date")
    request.add_argument("--reason", help="with extend: why (recorded, GDPR Art. 12(3))")
    request.add_argument("--status", choices=STATUSES, help="with list: only this status")
    request.add_argument(
        "--no-wait", action="store_true", help="with verify-identity: leave it to the server"
    )
    request.set_defaults(run=cmd_request)

    report = commands.add_parser(
        "report", parents=[common], help="write an erasure request's completion report"
    )
    report.add_argument("request_id", metavar="REQUEST_ID")
    report.add_argument("-o", "--output", help="the file to write (.html or .pdf), - for stdout")
    report.add_argument("--format", choices=FORMATS, help="html or pdf (default: by -o suffix)")
    report.set_defaults(run=cmd_report)
