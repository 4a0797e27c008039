"""The ``oblivio`` command line (DESIGN.md §16): the contract other tools script against.

Every command takes ``--home DIR`` (default ``$OBLIVIO_HOME``, else ``./.oblivio``) and ``--json``.
Errors are one line on stderr and a non-zero exit status:

    1  anything else       2  usage or invalid input (verify: input unusable)
    3  unknown id          4  integrity failure (stored data altered)
    5  storage or key backend failure        6  no node at --home
    7  the artifact was forgotten, revoked or is suppressed
    8  verify: the proof is invalid (the failing link is named)
    9  the database and the key store do not belong together, or one is missing (a restored
       backup older than the key store, a key store lacking roots, another node's store or
       keys, a missing database file): the node refuses to open and destroys nothing
    10 init: a node already exists at --home
    11 request: the change is refused (an invalid status transition, an extension past the
       regime's limit); nothing was changed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from oblivio.core.canonical import parse_json
from oblivio.core.cosignature import WitnessVerifier, parse_witness_key
from oblivio.core.encoding import b64url_encode
from oblivio.core.erasure import ExtensionRefusedError, InvalidTransitionError
from oblivio.core.errors import (
    ArtifactForgottenError,
    ConflictError,
    InfrastructureError,
    IntegrityError,
    InvalidInputError,
    NodeStateMismatchError,
    NotFoundError,
    OblivioError,
    VerificationError,
)
from oblivio.core.evidence import EVIDENCE_TYPE
from oblivio.core.identifiers import CAPABILITIES
from oblivio.core.note import verifier_key
from oblivio.core.pof import ProofInputError, ProofLinkError, parse_proof_document, verify_document
from oblivio.core.witness import EquivocationEvidence, verify_equivocation
from oblivio.interfaces.cli_compliance import add_evidence_command, verify_noncompliance
from oblivio.interfaces.cli_requests import add_request_commands
from oblivio.interfaces.output import emit
from oblivio.interfaces.progress import progress_display
from oblivio.keys.custody import RestorePlan
from oblivio.node.api_keys import ApiKey
from oblivio.node.checkpoints import CheckpointService
from oblivio.node.compliance import open_compliance
from oblivio.node.home import NodeHomeError, default_home, ensure_uninitialised
from oblivio.node.node import Node, init_node, open_node, restore_backup
from oblivio.node.recall.model import parse_card, parse_fact
from oblivio.node.recall.query import make_query
from oblivio.node.services import open_services

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTEGRITY = 4
EXIT_INFRASTRUCTURE = 5
EXIT_NO_NODE = 6
EXIT_FORGOTTEN = 7
EXIT_PROOF_INVALID = 8
EXIT_NODE_STATE = 9
EXIT_NODE_EXISTS = 10
EXIT_REFUSED = 11

PORT_RANGE = (1, 65535)
COUNT_MAX = 2**62
"""Bounds of counts and sequence numbers on the command line (SQLite integers are 64-bit)."""
VERIFIER_KEY_FILE_MAX = 64 * 1024
ERROR_LINE_MAX = 1000
"""An error line longer than this is cut (errors may quote the offending input)."""
_PATH_ARGUMENTS = frozenset({"file", "proof", "output", "key"})
"""Arguments that may name a file, whose name need not be UTF-8 (the others are text)."""


class NodeExistsError(ConflictError):
    """``init`` found a node (or part of one) at --home already: exit 10."""

    code = "node_exists"


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line, like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(message: str) -> str:
    """An error message on one line, cut in the middle if it is very long (errors may quote
    the offending input; the reason often follows it, so the end is kept)."""
    line = " ".join(message.split())
    if len(line) <= ERROR_LINE_MAX:
        return line
    cut = len(line) - ERROR_LINE_MAX
    return f"{line[: ERROR_LINE_MAX - 200]} ...({cut} characters cut)... {line[-200:]}"


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}")
        return value

    return parse


AUTHORITY_MAX = 200
REASON_MAX = 2000
REQUESTOR_MAX = 600
"""Characters at most in a legal basis, a reason and a requestor: the HTTP API's limits."""


def _text(limit: int) -> Callable[[str], str]:
    """An argparse type: text of at most ``limit`` characters."""

    def parse(text: str) -> str:
        if len(text) > limit:
            raise argparse.ArgumentTypeError(f"at most {limit} characters, got {len(text)}")
        return text

    return parse


def _node_summary(node: Node) -> dict[str, Any]:
    return {
        "name": node.config.name,
        "home": str(node.home),
        "store": node.config.store_uri,
        "keys": node.config.keys_uri,
        "key_id": node.signing_key.key_id,
        "verifier_key": verifier_key(node.config.name, node.signing_key.verify_key.public_bytes),
    }


def cmd_init(args: argparse.Namespace) -> int:
    """Create a node in --home; exit 10 (NodeExistsError) if one is there already."""
    try:
        ensure_uninitialised(args.home.resolve())
    except NodeHomeError as e:
        raise NodeExistsError(str(e)) from e
    try:
        node = init_node(
            args.home, name=args.name, store_uri=args.store, keys_uri=args.keys, fanout=args.fanout
        )
    except OSError as e:
        raise InvalidInputError(f"cannot create a node at {args.home}: {e.strerror}") from e
    with node:
        summary = _node_summary(node)
    human = "\n".join(f"{k}: {v}" for k, v in summary.items())
    emit(args, f"initialised oblivio node\n{human}", summary)
    return 0


def _parse_meta(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    value = parse_json(text)
    if not isinstance(value, dict):
        raise InvalidInputError("--meta: expected a JSON object")
    return value


def cmd_put(args: argparse.Namespace) -> int:
    """Store FILE (or - for standard input) as an artifact (forgotten at once if an active
    tombstone covers its entity and scope: ADR 0018)."""
    metadata = _parse_meta(args.meta)
    with open_node(args.home) as node:
        open_services(node)  # the vault's placement rule: tombstones cover new data too
        source: BinaryIO
        if args.file == "-":
            source = sys.stdin.buffer
            artifact_id = node.vault.put_stream(source, metadata, args.entity, args.scope)
        else:
            try:
                with open(args.file, "rb") as source:
                    artifact_id = node.vault.put_stream(source, metadata, args.entity, args.scope)
            except OSError as e:
                raise InvalidInputError(f"cannot read {args.file}: {e.strerror}") from e
        info = node.vault.describe(artifact_id)
    emit(
        args,
        artifact_id,
        {"artifact_id": artifact_id, "size": info.plaintext_size, "metadata": info.metadata},
    )
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Write an artifact's plaintext to standard output or -o FILE."""
    with open_node(args.home, recover=False) as node:
        if args.output:
            target = Path(args.output)
            partial = target.with_name(target.name + ".partial")
            try:
                with open(partial, "wb") as sink:
                    size = node.vault.read_into(args.artifact_id, sink)
                os.replace(partial, target)
            except OSError as e:
                raise InvalidInputError(f"cannot write {target}: {e.strerror}") from e
            finally:
                with contextlib.suppress(OSError):  # a name the OS refused was never created
                    partial.unlink(missing_ok=True)
            if args.json:
                print(
                    json.dumps({"artifact_id": args.artifact_id, "size": size, "path": str(target)})
                )
            return 0
        if args.json:
            plaintext = node.vault.get(args.artifact_id)
            print(
                json.dumps(
                    {
                        "artifact_id": args.artifact_id,
                        "size": len(plaintext),
                        "plaintext_b64url": b64url_encode(plaintext),
                    }
                )
            )
            return 0
        node.vault.read_into(args.artifact_id, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """Print the node's C2SP verifier key."""
    with open_node(args.home, recover=False) as node:
        summary = _node_summary(node)
    emit(
        args,
        summary["verifier_key"],
        {k: summary[k] for k in ("name", "key_id", "verifier_key")},
    )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """Print the latest signed checkpoint (a node without one commits its first epoch)."""
    from oblivio.node.checkpoints import CheckpointService

    with open_node(args.home) as node:
        service = CheckpointService(node.db, node.config.name, node.signing_key)
        latest = service.latest_or_first_checkpoint()
        machine = {**latest.to_dict(), "verifier_key": service.verifier_key}
    if args.json:
        print(json.dumps(machine, sort_keys=True))
    else:
        sys.stdout.write(latest.note)
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; InvalidInputError (one line) if it cannot be had."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidInputError(f"cannot listen on {host!r} port {port}: {reason}") from e


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API with uvicorn until interrupted."""
    import uvicorn

    from oblivio.interfaces.http import create_app

    # The node is opened once before the server starts, so a missing home, a store or key
    # backend that cannot be reached or a bad configuration is one line with its exit status,
    # not a failed application start-up.
    with open_node(args.home) as node:
        open_services(node)
    # The socket is bound here, so a host or port that cannot be had is one line (exit 2).
    listener = _listen(args.host, args.port)
    # Announce streams (federation) stay open: shutting down waits at most this for them.
    config = uvicorn.Config(create_app(args.home), log_level="warning", timeout_graceful_shutdown=5)
    with listener:
        uvicorn.Server(config).run(sockets=[listener])
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys for the HTTP API."""
    with open_node(args.home) as node:
        services = open_compliance(node)
        if args.action == "create":
            if not args.name or not args.role:
                raise InvalidInputError("api-key create needs --name and --role")
            key, token = services.api_keys.create(
                args.name,
                args.role,
                read_scopes=args.read_scopes.split(",") if args.read_scopes else None,
                write_scopes=args.write_scopes.split(",") if args.write_scopes else None,
            )
            emit(args, token, {"name": key.name, "role": key.role, "token": token})
        elif args.action == "revoke":
            if not args.name:
                raise InvalidInputError("api-key revoke needs --name")
            services.api_keys.revoke(args.name)
            emit(args, f"revoked {args.name}", {"revoked": args.name})
        else:
            keys = services.api_keys.list()
            lines = [f"{k['name']}\t{k['role']}\t{k['revoked_at'] or 'live'}" for k in keys]
            emit(args, "\n".join(lines), {"api_keys": keys})
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """Show the org manifest, rotate the signing key, or trust another org's manifest."""
    with open_node(args.home) as node:
        services = open_compliance(node)
        if args.action == "rotate":
            new_key = services.rotate_signing_key()
            vkey = verifier_key(node.config.name, new_key.verify_key.public_bytes)
            emit(args, vkey, {"key_id": new_key.key_id, "verifier_key": vkey})
            return 0
        if args.action == "trust":
            if not args.file or not args.anchor:
                raise InvalidInputError("manifest trust needs FILE and --anchor KEY_ID")
            try:
                text = Path(args.file).read_bytes()
            except OSError as e:
                raise InvalidInputError(f"cannot read {args.file}: {e.strerror}") from e
            manifest = services.manifests.trust(parse_json(text), args.anchor)
            emit(args, f"trusted org {manifest.org}", {"org": manifest.org})
            return 0
        manifest = services.own_manifest()
        print(json.dumps(dict(manifest.raw), indent=None if args.json else 2, sort_keys=True))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print audit log events."""
    with open_node(args.home, recover=False) as node:
        events = open_compliance(node).audit.read(args.after, args.limit)
    for event in events:
        if args.json:
            print(json.dumps(event.to_dict(), sort_keys=True))
        else:
            print(f"{event.seq}\t{event.at}\t{event.event}\t{event.subject or ''}")
    return 0


def _capabilities(text: str | None) -> list[str]:
    return list(CAPABILITIES) if text is None else [c.strip() for c in text.split(",") if c.strip()]


def cmd_forget(args: argparse.Namespace) -> int:
    """Forget an artifact (or an entity's artifacts in a scope pattern) at a level."""
    if (args.artifact_id is None) == (args.entity is None):
        raise InvalidInputError("forget needs an artifact ID or --entity URI (not both)")
    scope: object = args.scope
    if args.scope and args.scope.startswith("["):
        scope = parse_json(args.scope)
    with open_node(args.home) as node:
        services = open_services(node)
        receipt = services.forgetting.forget(
            artifact_id=args.artifact_id,
            entity_uri=args.entity,
            scope=scope or "*",
            level=args.level,
            capabilities=_capabilities(args.capabilities),
            requestor=args.requestor or "",
            authority=args.authority,
            reason=args.reason or "",
        )
        if not args.no_wait:
            with progress_display(machine_output=args.json) as progress:
                services.forgetting.commit_due(progress=progress)
        status = services.forgetting.status(receipt.request_id)
    machine = receipt.to_dict() | {"state": status["state"], "events": status["events"]}
    events = status["events"] if isinstance(status["events"], list) else []
    human = "\n".join(
        f"{e['event_id']}\t{e['artifact_id']}\tlevel {args.level}\t"
        + (f"committed in epoch {e['epoch']}" if e["epoch"] else "pending")
        for e in events
    )
    heading = f"request {receipt.request_id}: {status['state']}"
    if receipt.existing:
        heading += " (already requested at this level and capabilities: nothing new recorded)"
    emit(args, f"{heading}\n{human}", machine)
    return 0


def cmd_epoch(args: argparse.Namespace) -> int:
    """Commit an epoch now: execute due forgets, sign a checkpoint."""
    with open_node(args.home) as node:
        services = open_services(node)
        with progress_display(machine_output=args.json) as progress:
            commit = services.forgetting.commit_due(force=True, progress=progress)
        if commit is None:
            raise InfrastructureError("epoch: nothing was committed")
    if args.json:
        print(json.dumps({"epoch": commit.epoch, **commit.checkpoint.to_dict()}, sort_keys=True))
    else:
        sys.stdout.write(commit.checkpoint.note)
    return 0


def cmd_prove(args: argparse.Namespace) -> int:
    """Write the Proof of Forgetting of an artifact (or the bundle of a forget request)."""
    with open_node(args.home, recover=False) as node:
        services = open_services(node)
        if args.request:
            with progress_display(machine_output=args.json) as progress:
                proof = services.forgetting.prove_request(args.artifact_id, progress)
        else:
            proof = services.forgetting.prove(args.artifact_id)
    text = json.dumps(proof, indent=None if args.json else 1, sort_keys=True) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, "utf-8")
        except OSError as e:
            raise InvalidInputError(f"cannot write {args.output}: {e.strerror}") from e
    else:
        sys.stdout.write(text)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify a Proof of Forgetting offline with the node's verifier key."""
    try:
        data = sys.stdin.buffer.read() if args.proof == "-" else Path(args.proof).read_bytes()
    except OSError as e:
        raise ProofInputError(f"cannot read {args.proof}: {e.strerror}") from e
    key = _verifier_key_text(args.key)
    witnesses = _witness_verifiers(args.witness or [])
    distinct = len({(w.name, w.key_hash) for w in witnesses})
    quorum = distinct if args.quorum is None else args.quorum
    try:
        proven = verify_document(parse_proof_document(data), key, witnesses, quorum)
    except ProofLinkError as e:
        message = f"proof invalid: failed link {e.link}: {str(e).partition(': ')[2]}"
        if args.json:
            print(json.dumps({"valid": False, "link": e.link, "error": str(e)}, sort_keys=True))
        print(f"oblivio verify: {message}", file=sys.stderr)
        return EXIT_PROOF_INVALID
    if args.json:
        print(json.dumps({"valid": True, "proven": [p.to_dict() for p in proven]}, sort_keys=True))
    else:
        for item in proven:
            print(item.statement())
    return 0


def _verifier_key_text(value: str) -> str:
    """--key is the verifier key itself, or a file holding it as UTF-8 text."""
    try:
        is_file = Path(value).is_file()
    except (OSError, ValueError):
        is_file = False  # too long or not a path at all: the key's own text
    if not is_file:
        return value
    try:
        with open(value, "rb") as f:
            data = f.read(VERIFIER_KEY_FILE_MAX + 1)
    except OSError as e:
        raise ProofInputError(f"cannot read --key {value}: {e.strerror}") from e
    if len(data) > VERIFIER_KEY_FILE_MAX:
        raise ProofInputError(
            f"--key {value}: expected a verifier key file of at most {VERIFIER_KEY_FILE_MAX} bytes"
        )
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as e:
        raise ProofInputError(f"--key {value}: expected a verifier key as UTF-8 text") from e


def _witness_verifiers(values: Sequence[str]) -> list[WitnessVerifier]:
    try:
        return [parse_witness_key(_verifier_key_text(v)) for v in values]
    except VerificationError as e:
        raise ProofInputError(f"--witness: {e}") from e


# -- witnesses (DESIGN.md §17) ---------------------------------------------------------------------


def cmd_witness(args: argparse.Namespace) -> int:
    """``oblivio witness key|add-log|logs|use|list|remove``: this node as a witness, and the
    witnesses this node asks to cosign its checkpoints."""
    from oblivio.node.witness import CosignatureCollector, HttpWitnessTransport, WitnessService

    with open_node(args.home, recover=args.action not in ("key", "logs", "list")) as node:
        witness = WitnessService(node.db, node.config.name, node.signing_key)
        collector = CosignatureCollector(
            node.db,
            lambda: CheckpointService(node.db, node.config.name, node.signing_key),
            HttpWitnessTransport(),
        )
        if args.action == "key":
            emit(
                args,
                witness.verifier_key,
                {"name": witness.signer.name, "verifier_key": witness.verifier_key},
            )
        elif args.action == "add-log":
            if len(args.values) != 2:
                raise InvalidInputError("witness add-log needs ORIGIN and VKEY")
            origin, vkey = args.values[0], _verifier_key_text(args.values[1])
            witness.add_log(origin, vkey, actor="cli")
            emit(args, f"witnessing {origin}", {"origin": origin, "verifier_key": vkey})
        elif args.action == "logs":
            logs = [log.to_dict() for log in witness.logs()]
            human = "\n".join(f"{log['origin']} size {log['size']}" for log in logs)
            emit(args, human or "no logs witnessed", {"logs": logs})
        elif args.action == "use":
            if len(args.values) != 1 or not args.url or not args.key:
                raise InvalidInputError("witness use needs NAME, --url and --key")
            collector.use(args.values[0], args.url, _verifier_key_text(args.key), actor="cli")
            emit(args, f"asking witness {args.values[0]}", {"name": args.values[0]})
        elif args.action == "list":
            witnesses = [w.to_dict() for w in collector.witnesses()]
            human = "\n".join(f"{w['name']} {w['url']} size {w['size']}" for w in witnesses)
            emit(args, human or "no witnesses", {"witnesses": witnesses})
        else:
            if len(args.values) != 1:
                raise InvalidInputError("witness remove needs NAME")
            collector.remove(args.values[0])
            emit(args, f"no longer asking {args.values[0]}", {"name": args.values[0]})
    return 0


def cmd_verify_evidence(args: argparse.Namespace) -> int:
    """Check evidence offline. Equivocation evidence: the log of --key signed both checkpoints,
    at one size, with different roots (a file may hold one piece or a witness's listing of
    several). Non-compliance evidence (oblivio.noncompliance-evidence.v1): cli_compliance.py."""
    try:
        data = parse_json(Path(args.file).read_bytes())
    except OSError as e:
        raise InvalidInputError(f"cannot read {args.file}: {e.strerror}") from e
    if isinstance(data, dict) and data.get("type") == EVIDENCE_TYPE:
        key_text = None if args.key is None else _verifier_key_text(args.key)
        return verify_noncompliance(args, data, key_text)
    items = data.get("equivocations") if isinstance(data, dict) else None
    pieces = items if isinstance(items, list) else [data]
    if not pieces:
        raise InvalidInputError("verify-evidence: the file holds no evidence")
    if args.key is None:
        raise InvalidInputError("verify-evidence: equivocation evidence needs --key (the log's)")
    key = _verifier_key_text(args.key)
    proven = []
    for piece in pieces:
        evidence = EquivocationEvidence.from_dict(piece)
        try:
            verify_equivocation(evidence, key)
        except VerificationError as e:
            if args.json:
                print(json.dumps({"valid": False, "error": str(e)}, sort_keys=True))
            print(f"oblivio verify-evidence: invalid: {e}", file=sys.stderr)
            return EXIT_PROOF_INVALID
        proven.append(
            f"log {evidence.origin} signed two different roots at size {evidence.size}: "
            "equivocation proven"
        )
    emit(args, "\n".join(proven), {"valid": True, "proven": proven})
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Reverse a level-0 revocation."""
    with open_node(args.home) as node:
        event_id = open_services(node).forgetting.restore(
            args.artifact_id, authority=args.authority, reason=args.reason or ""
        )
    emit(args, f"restored {args.artifact_id} (event {event_id})", {"event_id": event_id})
    return 0


def cmd_restore_backup(args: argparse.Namespace) -> int:
    """Bring a restored database back into service with the live key store (docs/
    key-erasure.md): say what it destroys and loses, ask unless --yes, then do it, audited."""

    def confirm(plan: RestorePlan) -> bool:
        lost = ", ".join(plan.lost_trees) or "none"
        print(
            f"restore-backup: database generation {plan.database_generation}, key store "
            f"generation {plan.key_store_generation}\n"
            f"  root keys to destroy (what was written after the backup becomes unreadable "
            f"in every copy): {len(plan.roots_to_destroy)}\n"
            f"  key trees whose root key is gone: {lost}; artifacts of this backup that can "
            f"never be read again: {plan.unreadable_artifacts}",
            file=sys.stderr,
        )
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InvalidInputError("restore-backup: confirm with --yes (no terminal to ask on)")
        answer = input("Type 'restore' to destroy these keys and go on: ")
        return answer.strip() == "restore"

    plan = restore_backup(args.home, confirm)
    if plan is None:
        emit(args, "restore-backup: nothing changed", {"restored": False})
        return EXIT_USAGE
    emit(
        args,
        f"restore-backup: done; {len(plan.roots_to_destroy)} root keys destroyed",
        {"restored": True, **plan.to_dict()},
    )
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    """Place or release a legal hold."""
    with open_node(args.home) as node:
        services = open_services(node)
        if args.action == "release":
            if not args.target:
                raise InvalidInputError("hold release needs the hold id")
            released = services.release_hold(args.target, authority=args.authority)
            emit(args, f"released {args.target}", {"hold_id": args.target, "artifacts": released})
            return 0
        if (args.target is None) == (args.entity is None):
            raise InvalidInputError("hold place needs an artifact ID or --entity URI (not both)")
        hold_id, targets = services.place_hold(
            artifact_id=args.target,
            entity_uri=args.entity,
            scope=args.scope or "*",
            authority=args.authority,
            reason=args.reason or "",
        )
    emit(args, hold_id, {"hold_id": hold_id, "artifacts": targets})
    return 0


# -- the memory store (DESIGN.md §11) -------------------------------------------------------------

_LOCAL_CALLER = ApiKey("cli", "cli", "admin")
"""Whoever runs the command line on the node's home: every scope (as an admin key)."""


def cmd_fact(args: argparse.Namespace) -> int:
    """Add a fact: VALUE is JSON if it parses, else a string; with --ref an entity URI."""
    if args.ref:
        value: dict[str, Any] = {"ref": args.value}
    else:
        try:
            value = {"literal": parse_json(args.value)}
        except InvalidInputError:
            value = {"literal": args.value}
    fact = parse_fact(
        {
            "entity_uri": args.entity,
            "attribute": args.attribute,
            "value": value,
            "scope": args.scope,
            "derived_from": args.derived_from or [],
        }
    )
    with open_node(args.home) as node:
        added = open_services(node).recall.add_facts(_LOCAL_CALLER, [fact])[0]
    emit(args, str(added["id"]), added)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    """Add a memory card about an entity."""
    card = parse_card(
        {
            "about_entity": args.about,
            "text": args.text,
            "related_entities": args.related or [],
            "scope": args.scope,
        }
    )
    with open_node(args.home) as node:
        added = open_services(node).recall.add_card(_LOCAL_CALLER, card)
    emit(args, str(added["id"]), added)
    return 0


def cmd_recall(args: argparse.Namespace) -> int:
    """Recall an entity's facts, cards and edges (and/or a text query)."""
    query = make_query(
        entity=args.entity,
        q=args.q,
        hops=args.hops,
        scopes=args.scopes.split(",") if args.scopes else None,
        as_of=args.as_of,
        token_budget=args.budget,
        limit=args.limit,
    )
    with open_node(args.home) as node:
        result = open_services(node).recall.recall(_LOCAL_CALLER, query).to_dict()
    lines = []
    for fact in result["facts"]:
        assert isinstance(fact, dict)  # noqa: S101 - to_dict's items are objects
        lines.append(f"{fact['entity_uri']}\t{fact['attribute']}\t{json.dumps(fact['value'])}")
    for card in result["cards"]:
        assert isinstance(card, dict)  # noqa: S101 - to_dict's items are objects
        lines.append(f"{card['about_entity']}\tcard\t{card['text']}")
    lines.append(f"({result['total']} in all)")
    emit(args, "\n".join(lines), result)
    return 0


def _add_memory_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    fact = commands.add_parser("fact", parents=[common], help="the memory store's facts")
    fact_actions = fact.add_subparsers(dest="action", required=True, metavar="ACTION")
    fact_add = fact_actions.add_parser("add", parents=[common], help="add a fact")
    fact_add.add_argument("entity", metavar="ENTITY")
    fact_add.add_argument("attribute", metavar="ATTRIBUTE")
    fact_add.add_argument("value", metavar="VALUE", help="JSON, or a string")
    fact_add.add_argument("--ref", action="store_true", help="VALUE is an entity URI (an edge)")
    fact_add.add_argument("--scope", default="local", help="local, team, company or public")
    fact_add.add_argument("--derived-from", nargs="*", help="fact hashes it was derived from")
    fact_add.set_defaults(run=cmd_fact)
    card = commands.add_parser("card", parents=[common], help="the memory store's cards")
    card_actions = card.add_subparsers(dest="action", required=True, metavar="ACTION")
    card_add = card_actions.add_parser("add", parents=[common], help="add a memory card")
    card_add.add_argument("about", metavar="ABOUT_ENTITY")
    card_add.add_argument("text", metavar="TEXT")
    card_add.add_argument("--related", nargs="*", help="related entity URIs")
    card_add.add_argument("--scope", default="local", help="local, team, company or public")
    card_add.set_defaults(run=cmd_card)
    recall = commands.add_parser("recall", parents=[common], help="recall from the memory store")
    recall.add_argument("entity", metavar="ENTITY", nargs="?")
    recall.add_argument("--q", help="full-text query")
    recall.add_argument("--hops", type=int, help="ref hops to follow, 0 to 3 (default 1)")
    recall.add_argument("--budget", type=int, help="token budget of the page")
    recall.add_argument("--scopes", help="comma-separated scopes (default: all)")
    recall.add_argument("--as-of", help="answer as of this RFC 3339 time")
    recall.add_argument("--limit", type=int, help="items per page (default 50)")
    recall.set_defaults(run=cmd_recall)


def cmd_peer(args: argparse.Namespace) -> int:
    """Pin, list and remove peers; issue capability tokens (DESIGN.md §12)."""
    from oblivio.federation.peers import validate_peer_url
    from oblivio.federation.propagation import open_federation

    with open_node(args.home) as node:
        federation = open_federation(open_services(node))
        try:
            peers = federation.peers
            if args.action == "add":
                if not args.name or not args.url or not args.key:
                    raise InvalidInputError("peer add needs NAME, --url and --key")
                key = _verifier_key_text(args.key)
                manifest = federation.client.manifest(validate_peer_url(args.url))
                peer = peers.add(args.name, args.url, key, manifest, args.token)
                emit(args, f"peer {peer.name} pinned at {peer.url}", peer.to_dict())
            elif args.action == "token":
                if not args.name or not args.verbs:
                    raise InvalidInputError("peer token needs NAME and --verbs")
                verbs = [v.strip() for v in args.verbs.split(",") if v.strip()]
                lifetime = federation.settings.token_lifetime.total_seconds()
                token = peers.issue_token(args.name, verbs, lifetime)
                emit(args, token, {"peer": args.name, "verbs": verbs, "token": token})
            elif args.action == "remove":
                if not args.name:
                    raise InvalidInputError("peer remove needs NAME")
                peers.remove(args.name)
                emit(args, f"removed {args.name}", {"removed": args.name})
            elif args.action == "reinstate":
                if not args.name:
                    raise InvalidInputError("peer reinstate needs NAME")
                peer = federation.noncompliance.reinstate(args.name, actor="cli")
                emit(args, f"reinstated {peer.name}", peer.to_dict())
            else:
                listed = [p.to_dict() for p in peers.every()]
                lines = [
                    f"{p['name']}\t{p['state']}\t{p['reputation']:.2f}\t{p['url']}" for p in listed
                ]
                emit(args, "\n".join(lines), {"peers": listed})
        finally:
            federation.client.close()
    return 0


def cmd_propagation(args: argparse.Namespace) -> int:
    """Per-peer propagation of one tombstone, or of every tombstone sent, and the inbound
    records kept unverified."""
    from oblivio.federation.propagation import open_federation

    with open_node(args.home, recover=False) as node:
        federation = open_federation(open_services(node))
        try:
            ids = [args.tombstone_id] if args.tombstone_id else federation.tracked()
            reports = [federation.propagation(i) for i in ids]
            unverified = [] if args.tombstone_id else federation.unverified()
        finally:
            federation.client.close()
    lines = [
        f"{r['tombstone_id']}\t{p['peer']}\t{p['status']}"
        + (f"\tvia {p['via']}" if p.get("via") else "")
        for r in reports
        for p in r["peers"]
    ]
    lines += [f"{u['record_id']}\tfrom {u['received_from']}\t{u['state']}" for u in unverified]
    emit(args, "\n".join(lines), {"tombstones": reports, "unverified": unverified})
    return 0


def _common() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--home", type=Path, default=argparse.SUPPRESS, help="node home (default $OBLIVIO_HOME)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    return common


def _add_forgetting_commands(commands: Any, common: _Parser) -> None:
    forget = commands.add_parser("forget", parents=[common], help="forget an artifact or entity")
    forget.add_argument("artifact_id", metavar="ID", nargs="?")
    forget.add_argument("--entity", help="forget every artifact about this entity URI")
    forget.add_argument("--scope", help="with --entity: '*', a scope, or a JSON array of scopes")
    forget.add_argument("--level", type=int, choices=[0, 1, 2], required=True)
    forget.add_argument("--capabilities", help="comma-separated: decrypt,prove,recover (all)")
    forget.add_argument(
        "--reason", type=_text(REASON_MAX), help="kept private; committed to in the log"
    )
    forget.add_argument(
        "--authority",
        type=_text(AUTHORITY_MAX),
        default="unspecified",
        help="legal basis, e.g. GDPR-17 (kept private; committed to in the log)",
    )
    forget.add_argument(
        "--requestor",
        type=_text(REQUESTOR_MAX),
        help="who asked (kept private; committed to in the log)",
    )
    forget.add_argument("--no-wait", action="store_true", help="do not commit the epoch now")
    forget.set_defaults(run=cmd_forget)

    epoch = commands.add_parser("epoch", parents=[common], help="commit an epoch now")
    epoch.set_defaults(run=cmd_epoch)

    prove = commands.add_parser("prove", parents=[common], help="write a Proof of Forgetting")
    prove.add_argument("artifact_id", metavar="ID")
    prove.add_argument("-o", "--output", help="write the proof to this file")
    prove.add_argument("--request", action="store_true", help="ID is a forget request: bundle")
    prove.set_defaults(run=cmd_prove)

    verify = commands.add_parser("verify", parents=[common], help="verify a proof offline")
    verify.add_argument("proof", metavar="POF", help="proof file, or - for standard input")
    verify.add_argument("--key", required=True, help="the node's verifier key (or a file)")
    verify.add_argument(
        "--witness",
        action="append",
        metavar="WKEY",
        help="a witness's cosignature key (0x04 vkey, or a file); repeat for each",
    )
    verify.add_argument(
        "--quorum", type=int, help="cosignatures required from the witnesses (default: all)"
    )
    verify.set_defaults(run=cmd_verify)

    restore = commands.add_parser("restore", parents=[common], help="reverse a level-0 forget")
    restore.add_argument("artifact_id", metavar="ID")
    restore.add_argument("--authority", type=_text(AUTHORITY_MAX), default="unspecified")
    restore.add_argument("--reason", type=_text(REASON_MAX))
    restore.set_defaults(run=cmd_restore)

    restore_backup = commands.add_parser(
        "restore-backup",
        parents=[common],
        help="bring a restored database back into service (destroys newer keys; asks first)",
    )
    restore_backup.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore_backup.set_defaults(run=cmd_restore_backup)

    hold = commands.add_parser("hold", parents=[common], help="place or release a legal hold")
    hold.add_argument("action", choices=["place", "release"])
    hold.add_argument("target", nargs="?", help="artifact ID to hold, or the hold id to release")
    hold.add_argument("--entity", help="hold every artifact about this entity URI")
    hold.add_argument("--scope")
    hold.add_argument("--authority", type=_text(AUTHORITY_MAX), required=True)
    hold.add_argument("--reason", type=_text(REASON_MAX))
    hold.set_defaults(run=cmd_hold)


def _add_witness_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    witness = commands.add_parser(
        "witness", parents=[common], help="witness peers' logs; ask witnesses to cosign"
    )
    witness.add_argument("action", choices=["key", "add-log", "logs", "use", "list", "remove"])
    witness.add_argument("values", nargs="*", help="add-log: ORIGIN VKEY; use/remove: NAME")
    witness.add_argument("--url", help="with use: the witness's submission prefix URL")
    witness.add_argument("--key", help="with use: the witness's cosignature key (0x04 vkey)")
    witness.set_defaults(run=cmd_witness)

    evidence = commands.add_parser(
        "verify-evidence", parents=[common], help="check equivocation or non-compliance evidence"
    )
    evidence.add_argument("file", metavar="FILE", help="evidence JSON (one, or a listing)")
    evidence.add_argument(
        "--key", help="the log's verifier key, or the peer's for non-compliance (or a file)"
    )
    evidence.set_defaults(run=cmd_verify_evidence)


def _add_federation_commands(commands: Any, common: _Parser) -> None:
    peer = commands.add_parser("peer", parents=[common], help="federation peers and tokens")
    peer.add_argument("action", choices=["add", "list", "remove", "token", "reinstate"])
    peer.add_argument("name", nargs="?", metavar="NAME", help="the peer's node name (its org)")
    peer.add_argument("--url", help="with add: the peer's base URL")
    peer.add_argument("--key", help="with add: the peer's verifier key (oblivio key), or a file")
    peer.add_argument("--token", help="with add: the capability token the peer issued us")
    peer.add_argument("--verbs", help="with token: comma-separated, e.g. tombstone:write")
    peer.set_defaults(run=cmd_peer)

    propagation = commands.add_parser(
        "propagation", parents=[common], help="per-peer status of sent tombstones"
    )
    propagation.add_argument("tombstone_id", metavar="TOMBSTONE_ID", nargs="?")
    propagation.set_defaults(run=cmd_propagation)
    add_evidence_command(commands, common)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = _common()
    parser = _Parser(
        prog="oblivio", description="Verifiable forgetting for personal data.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", parents=[common], help="create a node")
    init.add_argument("--name", help="node name (the checkpoint origin)")
    init.add_argument("--store", help="store URI (default sqlite:///HOME/oblivio.db)")
    init.add_argument("--keys", help="wrapping-key backend URI (default software:)")
    init.add_argument(
        "--fanout", type=int, help="children per key-tree node (default 64; DESIGN.md §5)"
    )
    init.set_defaults(run=cmd_init)

    put = commands.add_parser("put", parents=[common], help="store an artifact")
    put.add_argument("file", help="file to store, or - for standard input")
    put.add_argument("--meta", help="metadata as a JSON object")
    put.add_argument("--entity", help="entity URI the artifact is about, e.g. user:alice")
    put.add_argument("--scope", help="fact scope: local, team, company or public")
    put.set_defaults(run=cmd_put)

    get = commands.add_parser("get", parents=[common], help="read an artifact")
    get.add_argument("artifact_id", metavar="ID")
    get.add_argument("-o", "--output", help="write the plaintext to this file")
    get.set_defaults(run=cmd_get)

    key = commands.add_parser("key", parents=[common], help="print the node's verifier key")
    key.set_defaults(run=cmd_key)

    checkpoint = commands.add_parser(
        "checkpoint", parents=[common], help="print the latest signed checkpoint"
    )
    checkpoint.set_defaults(run=cmd_checkpoint)

    _add_forgetting_commands(commands, common)

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_bounded(*PORT_RANGE), default=8400)
    serve.set_defaults(run=cmd_serve)

    api_key = commands.add_parser("api-key", parents=[common], help="manage HTTP API keys")
    api_key.add_argument("action", choices=["create", "list", "revoke"])
    api_key.add_argument("--name", help="the key's name (agent name in signed_by)")
    api_key.add_argument("--role", choices=["admin", "agent", "peer"])
    api_key.add_argument("--read-scopes", help="comma-separated fact scopes it may read (all)")
    api_key.add_argument("--write-scopes", help="comma-separated fact scopes it may write (all)")
    api_key.set_defaults(run=cmd_api_key)

    manifest = commands.add_parser("manifest", parents=[common], help="org signing-key manifest")
    manifest.add_argument("action", choices=["show", "rotate", "trust"])
    manifest.add_argument("file", nargs="?", help="with trust: another org's manifest JSON")
    manifest.add_argument("--anchor", help="with trust: the key id the chain must start with")
    manifest.set_defaults(run=cmd_manifest)

    audit = commands.add_parser("audit", parents=[common], help="print the audit log")
    audit.add_argument("--after", type=_bounded(0, COUNT_MAX), default=0)
    audit.add_argument("--limit", type=_bounded(1, COUNT_MAX), default=100)
    audit.set_defaults(run=cmd_audit)
    from oblivio.interfaces.cli_beliefs import add_belief_commands

    for add_commands in (
        _add_memory_commands,
        _add_witness_commands,
        _add_federation_commands,
        add_request_commands,
        add_belief_commands,
    ):
        add_commands(commands, common)
    return parser


_EXIT_CODES: tuple[tuple[type[OblivioError], int], ...] = (
    (NodeStateMismatchError, EXIT_NODE_STATE),
    (NodeExistsError, EXIT_NODE_EXISTS),
    (ArtifactForgottenError, EXIT_FORGOTTEN),
    (VerificationError, EXIT_PROOF_INVALID),
    (NodeHomeError, EXIT_NO_NODE),
    (NotFoundError, EXIT_NOT_FOUND),
    (InvalidTransitionError, EXIT_REFUSED),
    (ExtensionRefusedError, EXIT_REFUSED),
    (InvalidInputError, EXIT_USAGE),
    (IntegrityError, EXIT_INTEGRITY),
    (InfrastructureError, EXIT_INFRASTRUCTURE),
)


def _exit_code(error: OblivioError) -> int:
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), EXIT_ERROR)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse, as invalid input, text arguments that are not UTF-8 (the OS hands undecodable
    bytes over as surrogates) and a --home the OS cannot even look up."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, str) and name not in _PATH_ARGUMENTS:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise InvalidInputError(f"{name}: expected UTF-8 text, got {value!r}") from e
    try:
        args.home.exists()
    except OSError as e:
        raise InvalidInputError(f"--home {args.home}: {e.strerror}") from e


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit status."""
    args = build_parser().parse_args(argv)
    if not hasattr(args, "home"):
        args.home = default_home()
    if not hasattr(args, "json"):
        args.json = False
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        _check_arguments(args)
        return run(args)
    except OblivioError as e:
        message = _one_line(str(e))
        print(f"oblivio {args.command}: error: {message}", file=sys.stderr)
        return _exit_code(e)
    except BrokenPipeError:
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"oblivio {args.command}: interrupted", file=sys.stderr)
        return 130
