"""Witnessed checkpoints with real ``oblivio serve`` processes on loopback (issue 14 acceptance):
node A asks witnesses B and C; A's Proof of Forgetting carries both cosignatures and verifies
with ``--quorum 2``; with C down a new proof verifies with ``--quorum 1`` and fails with
``--quorum 2`` naming C; A restarted from an older copy of its home signs a forked checkpoint,
which B and C refuse with 409 and keep as evidence that ``oblivio verify-evidence`` checks.

The tests share one module fixture (servers take seconds to start on a shared machine) and run
in file order: each step builds on the state the previous one left.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from oblivio.core.cosignature import check_cosignatures, parse_witness_key
from oblivio.core.encoding import b64url_encode
from oblivio.core.witness import SIZE_CONTENT_TYPE, AddCheckpointRequest
from oblivio.node.node import init_node
from tests.interfaces.conftest import make_keys
from tests.processes import Served, free_port, oblivio, poll

DEADLINE = 120.0
"""Seconds a poll waits at most: generous, the machine is shared."""


def _poll(what: str, probe: Callable[[], bool]) -> None:
    poll(what, probe, deadline=DEADLINE)


@dataclass
class Federation:
    """A with witnesses B and C, and A's home copied before it served (``a_old``)."""

    a: Served
    b: Served
    c: Served
    a_old: Served
    a_key: str
    b_key: str
    c_key: str
    tmp: Path
    facts: dict[str, Any] = field(default_factory=dict)


def _node(tmp: Path, name: str) -> Served:
    home = tmp / name
    init_node(home, name=name).close()
    config = json.loads((home / "config.json").read_text())
    # Epochs only when a forget commits (wait: true), never from the timer or a heartbeat during
    # the test: two nodes that do the same operations then reach the same log sizes.
    config["forgetting"] = {"epoch_interval_seconds": 3600, "heartbeat_seconds": 3600}
    (home / "config.json").write_text(json.dumps(config))
    admin = make_keys(home)["admin"]
    return Served(name, home, free_port(), admin, tmp / f"{name}.log")


def _cli_json(*args: str) -> dict[str, Any]:
    result = oblivio(*args, "--json")
    assert result.returncode == 0, result.stderr
    value: dict[str, Any] = json.loads(result.stdout)
    return value


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("witnesses")
    a, b, c = (_node(tmp, n) for n in ("node-a.test", "witness-b.test", "witness-c.test"))
    a_key = _cli_json("key", "--home", str(a.home))["verifier_key"]
    b_key = _cli_json("witness", "key", "--home", str(b.home))["verifier_key"]
    c_key = _cli_json("witness", "key", "--home", str(c.home))["verifier_key"]
    for witness, wkey in ((b, b_key), (c, c_key)):
        _cli_json("witness", "add-log", a.name, a_key, "--home", str(witness.home))
        _cli_json(
            *("witness", "use", witness.name, "--home", str(a.home)),
            *("--url", f"{witness.url}/v1/witness", "--key", wkey),
        )
    # A's whole home (database and key store together) as it is before A serves: later started
    # as a second node with A's name and signing key, it signs another history (a fork).
    old_home = tmp / "node-a-old"
    shutil.copytree(a.home, old_home)
    config = json.loads((old_home / "config.json").read_text())
    config["store"] = "sqlite:///" + str(old_home / "oblivio.db").lstrip("/")
    (old_home / "config.json").write_text(json.dumps(config))
    a_old = Served(a.name + " (old copy)", old_home, free_port(), a.admin, tmp / "a-old.log")
    federation = Federation(a, b, c, a_old, a_key, b_key, c_key, tmp)
    try:
        for server in (b, c, a):
            server.start()
        yield federation
    finally:
        for server in (a, a_old, b, c):
            server.stop()


def _forget_one(server: Served, text: bytes) -> str:
    with server.client() as client:
        put = client.post("/v1/artifacts", json={"plaintext_b64url": b64url_encode(text)})
        assert put.status_code == 201, put.text
        artifact_id: str = put.json()["artifact_id"]
        forget = client.post(f"/v1/artifacts/{artifact_id}/forget", json={"level": 2})
        assert forget.status_code == 200, forget.text
        return artifact_id


def _latest(server: Served) -> dict[str, Any]:
    response = httpx.get(server.url + "/v1/checkpoint", timeout=30)
    assert response.status_code == 200, response.text
    value: dict[str, Any] = response.json()
    return value


def _signers(note: str, *wkeys: str) -> tuple[str, ...]:
    return check_cosignatures(note.encode(), [parse_witness_key(k) for k in wkeys]).signers


def _prove(server: Served, artifact_id: str, path: Path) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/v1/artifacts/{artifact_id}/proof")
    assert response.status_code == 200, response.text
    path.write_text(response.text)
    proof: dict[str, Any] = response.json()
    return proof


def proof_epoch(proof: dict[str, Any]) -> int:
    epoch: int = proof["map_root"]["epoch"]
    return epoch


def test_a_proof_carries_two_cosignatures_and_verifies_with_quorum_2(
    federation: Federation,
) -> None:
    f = federation
    artifact_id = _forget_one(f.a, b"alice's address")
    epoch = _latest(f.a)["epoch"]
    _poll(
        "A's checkpoint cosigned by B and C",
        lambda: len(_signers(_latest(f.a)["checkpoint"], f.b_key, f.c_key)) == 2,
    )
    latest = _latest(f.a)
    assert latest["epoch"] == epoch
    f.facts["forked_size"] = latest["tree_size"]
    proof_path = f.tmp / "pof-two.json"
    proof = _prove(f.a, artifact_id, proof_path)
    assert proof["type"] == "oblivio.pof.v1"
    assert proof["checkpoint"] == latest["checkpoint"]
    verified = oblivio(
        *("verify", str(proof_path), "--key", f.a_key, "--json"),
        *("--witness", f.b_key, "--witness", f.c_key, "--quorum", "2"),
    )
    assert verified.returncode == 0, verified.stderr
    [proven] = json.loads(verified.stdout)["proven"]
    assert proven["cosigned_by"] == [
        parse_witness_key(f.b_key).key_id,
        parse_witness_key(f.c_key).key_id,
    ]
    # Without --quorum every listed witness is required (a witness listed twice counts once).
    every = oblivio(
        *("verify", str(proof_path), "--key", f.a_key),
        *("--witness", f.b_key, "--witness", f.c_key, "--witness", f.c_key),
    )
    assert every.returncode == 0, every.stderr
    # A verifier that knows no witness still accepts the proof (the lines are ignored).
    plain = oblivio("verify", str(proof_path), "--key", f.a_key)
    assert plain.returncode == 0, plain.stderr
    # `oblivio checkpoint` serves the cosigned note too (read while A serves).
    note = oblivio("checkpoint", "--home", str(f.a.home))
    assert note.returncode == 0, note.stderr
    assert len(_signers(note.stdout, f.b_key, f.c_key)) == 2


def test_with_c_down_quorum_1_passes_and_quorum_2_names_c(federation: Federation) -> None:
    f = federation
    f.c.stop()
    artifact_id = _forget_one(f.a, b"bob's phone number")
    _poll(
        "A's new checkpoint cosigned by B",
        lambda: _signers(_latest(f.a)["checkpoint"], f.b_key) != (),
    )
    proof_path = f.tmp / "pof-one.json"
    proof = _prove(f.a, artifact_id, proof_path)
    assert _signers(proof["checkpoint"], f.b_key, f.c_key) == (parse_witness_key(f.b_key).key_id,)
    witnesses = ("--witness", f.b_key, "--witness", f.c_key)
    one = oblivio("verify", str(proof_path), "--key", f.a_key, *witnesses, "--quorum", "1")
    assert one.returncode == 0, one.stderr
    assert "cosigned by " + parse_witness_key(f.b_key).key_id in one.stdout
    two = oblivio("verify", str(proof_path), "--key", f.a_key, *witnesses, "--quorum", "2")
    assert two.returncode == 8, two.stdout + two.stderr
    assert "failed link cosignatures" in two.stderr
    assert "missing: " + parse_witness_key(f.c_key).key_id in two.stderr
    # C back: A's retries reach it and the same checkpoint gets its cosignature too.
    f.c.start()
    _poll(
        "A's checkpoint cosigned by C after its outage",
        lambda: len(_signers(_latest(f.a)["checkpoint"], f.b_key, f.c_key)) == 2,
    )
    assert _latest(f.a)["epoch"] == proof_epoch(proof)
    f.facts["a_size"] = _latest(f.a)["tree_size"]


def test_a_fork_from_an_older_copy_is_refused_with_409_and_kept_as_evidence(
    federation: Federation,
) -> None:
    f = federation
    f.a.stop()
    f.a_old.start()
    _forget_one(f.a_old, b"someone else entirely")
    forked = _latest(f.a_old)
    assert forked["tree_size"] == f.facts["forked_size"]
    for witness in (f.b, f.c):

        def kept(witness: Served = witness) -> bool:
            response = httpx.get(witness.url + "/v1/witness/equivocations", timeout=30)
            return bool(response.json()["equivocations"])

        _poll(f"{witness.name} keeping the fork as evidence", kept)
        listing = httpx.get(witness.url + "/v1/witness/equivocations", timeout=30).json()
        [evidence] = listing["equivocations"]
        assert (evidence["origin"], evidence["size"]) == (f.a.name, forked["tree_size"])
        assert evidence["second"].split("\n\n")[0] == forked["checkpoint"].split("\n\n")[0]
        path = f.tmp / f"evidence-{witness.name}.json"
        path.write_text(json.dumps(listing))
        checked = oblivio("verify-evidence", str(path), "--key", f.a_key)
        assert checked.returncode == 0, checked.stderr
        assert "equivocation proven" in checked.stdout
        # Presented again directly, the fork is refused with 409 and the size the witness
        # cosigned last; its state stays the honest log's.
        state = httpx.get(witness.url + "/v1/witness", timeout=30).json()
        [log] = state["logs"]
        request = AddCheckpointRequest(
            forked["tree_size"], (), forked["checkpoint"].encode()
        ).to_bytes()
        refused = httpx.post(witness.url + "/v1/witness/add-checkpoint", content=request)
        assert refused.status_code == 409
        assert refused.headers["content-type"] == SIZE_CONTENT_TYPE
        assert refused.text == f"{log['size']}\n"
        assert httpx.get(witness.url + "/v1/witness", timeout=30).json() == state
        audit = oblivio("audit", "--home", str(witness.home), "--json")
        assert audit.returncode == 0, audit.stderr
        assert "witness_equivocation" in audit.stdout
    for witness in (f.b, f.c):
        [log] = httpx.get(witness.url + "/v1/witness", timeout=30).json()["logs"]
        assert log["size"] == f.facts["a_size"]


def test_bad_input_over_http_gets_4xx_and_no_state_change(federation: Federation) -> None:
    f = federation
    before = httpx.get(f.b.url + "/v1/witness", timeout=30).json()
    url = f.b.url + "/v1/witness/add-checkpoint"
    cases = {
        b"": 400,
        b"old 0\n\n" + b"\xff" * 100: 400,
        b"old 1\n" + b"Zm9v\n" * 70 + b"\n": 400,
        b"old 1\n" + b"A" * 70_000: 413,
    }
    for body, status in cases.items():
        response = httpx.post(url, content=body, timeout=30)
        assert response.status_code == status, (body[:20], response.text)
    assert httpx.get(url, timeout=30).status_code == 405
    assert httpx.get(f.b.url + "/v1/witness", timeout=30).json() == before
