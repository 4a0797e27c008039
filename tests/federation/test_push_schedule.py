"""The outbox under the fixed push schedule (``federation.push_schedule = "fixed"``), on a real
SQLite node whose one peer is down (nothing listens on its loopback port): each failure takes
the next delay, and after the last retry the delivery is given up, audited, and never due
again. Under the default backoff the same failures never give up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oblivio.core.note import verifier_key
from oblivio.federation.propagation import Federation, open_federation
from oblivio.node.node import init_node, open_node
from oblivio.node.services import open_services
from tests.processes import free_port


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _federation(tmp_path: Path, section: dict[str, Any], clock: Clock) -> tuple[Any, Federation]:
    home, peer_home = tmp_path / "a", tmp_path / "b"
    init_node(home, name="node-a.example").close()
    init_node(peer_home, name="node-b.example").close()
    config = json.loads((home / "config.json").read_text())
    config["federation"] = section
    (home / "config.json").write_text(json.dumps(config))
    with open_node(peer_home) as peer:
        manifest = dict(open_services(peer).compliance.own_manifest().raw)
        key = verifier_key("node-b.example", peer.signing_key.verify_key.public_bytes)
    node = open_node(home)
    federation = open_federation(open_services(node), clock=clock)
    url = f"http://127.0.0.1:{free_port()}"  # down: nothing listens there
    federation.peers.add("node-b.example", url, key, manifest, "v4.public.unused")
    return node, federation


def _fail_every_due_delivery(federation: Federation, clock: Clock, rounds: int) -> list[Any]:
    delays = []
    for _ in range(rounds):
        due = federation.due()
        if not due:
            clock.now += timedelta(days=365)
            due = federation.due()
        if not due:
            break
        delays.append(federation.deliver(due[0]))
    return delays


def test_the_fixed_schedule_takes_its_delays_then_gives_up(tmp_path: Path) -> None:
    clock = Clock()
    section = {"push_schedule": "fixed", "push_delays_seconds": [5, 60], "push_retry_limit": 3}
    node, federation = _federation(tmp_path, section, clock)
    try:
        record, _ = federation.compliance.tombstones.issue("admin", "user:ada", "*", None)
        delays = _fail_every_due_delivery(federation, clock, 6)
        seconds = [None if d is None else d.total_seconds() for d in delays]
        assert seconds == [5.0, 60.0, 60.0, None]  # 1 try + 3 retries, then given up
        assert federation.due() == []
        clock.now += timedelta(days=3650)
        assert federation.due() == []  # never due again
        peer = federation.propagation(record.id)["peers"][0]
        assert peer["attempts"] == 4
        assert peer["last_error"].startswith("given up after 4 attempts (fixed schedule)")
        given_up = [
            e
            for e in federation.compliance.audit.read(0, 1000)
            if e.event == "federation_delivery_given_up"
        ]
        assert [(e.actor, e.subject) for e in given_up] == [("node-b.example", record.id)]
    finally:
        federation.client.close()
        node.close()


def test_the_default_backoff_never_gives_up(tmp_path: Path) -> None:
    clock = Clock()
    node, federation = _federation(tmp_path, {}, clock)
    try:
        federation.compliance.tombstones.issue("admin", "user:ada", "*", None)
        delays = _fail_every_due_delivery(federation, clock, 20)
        assert len(delays) == 20
        assert all(d is not None and d <= timedelta(minutes=5) for d in delays)
        clock.now += timedelta(days=1)
        assert len(federation.due()) == 1
    finally:
        federation.client.close()
        node.close()
