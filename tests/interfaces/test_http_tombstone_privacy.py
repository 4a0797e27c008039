"""What a tombstone shows to those who may not see it (seed 002 §23.6.2; ADR 0017, ADR 0018).

An agent and an anonymous caller read every route they can reach after a tombstone and a
legal-hold tombstone, and after an operator's forget and an operator's hold and forget of other
entities: the answers must be the same once what differs between any two requests (ids, hashes,
times) is blanked, and no answer may name a tombstone, its entity or its reason. On both stores.
"""

from __future__ import annotations

import re
from typing import Any

from oblivio.core.canonical import parse_json
from oblivio.core.encoding import b64url_encode
from oblivio.core.pof import verify_document
from tests.interfaces.conftest import Api

_OPAQUE = (
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"[0-9a-f]{64}"), "<hex32>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<time>"),
)
SECRETS = (
    "tomb_",
    "tombstone",
    "legal-hold",
    "user:",
    "GDPR",
    "court",
    "erasure #42",
    "litigation",
)
"""Case-sensitive: "TOMBSTONE" is the SMT leaf state of every level-2 forget (DESIGN.md §9)."""


def _blank(value: Any) -> Any:
    """``value`` with every id, hash and time replaced by a mark of its kind."""
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_blank(v) for v in value]
    if isinstance(value, str):
        for pattern, mark in _OPAQUE:
            value = pattern.sub(mark, value)
    return value


def _text(value: Any) -> str:
    """The words of ``value`` a person could read: signatures and signed notes (base64, where
    any four letters may occur by chance) left out."""
    if isinstance(value, dict):
        return " ".join(
            _text(v) for k, v in value.items() if not k.endswith("_b64") and k != "checkpoint"
        )
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value)
    return str(value)


def _assert_says_nothing(value: Any) -> None:
    text = _text(value)
    for secret in SECRETS:
        assert secret not in text, (secret, value)


def _proof_view(answer: tuple[int, Any]) -> tuple[int, Any]:
    """A proof answer with what differs between any two artifacts' proofs (their SMT paths,
    log positions and receipts) left out; an error as it is."""
    status, body = answer
    if status != 200:
        return status, body
    return status, {
        "fields": sorted(body),
        "record": body["record"],
        "forget_event": body["forget_event"],
    }


def _answer(api: Api, path: str, headers: dict[str, str] | None) -> tuple[int, Any]:
    response = api.client.get(path, headers=headers or {})
    return response.status_code, response.json()


def _put(api: Api, entity: str, scope: str) -> str:
    body = {
        "plaintext_b64url": b64url_encode(f"a memory about {entity}".encode()),
        "metadata": {"kind": "memory"},
        "entity_uri": entity,
        "scope": scope,
    }
    response = api.client.post("/v1/artifacts", json=body, headers=api.agent)
    assert response.status_code == 201, response.text
    artifact_id: str = response.json()["artifact_id"]
    return artifact_id


def _admin_post(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.client.post(path, json=body, headers=api.admin)
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    return answer


def _log(api: Api) -> list[dict[str, Any]]:
    """Every log entry, as an anonymous caller reads them (up to the first index that is not
    there yet)."""
    entries = []
    while True:
        status, body = _answer(api, f"/v1/log/entries/{len(entries)}", None)
        if status == 404:
            return entries
        assert status == 200, body
        entries.append(parse_json(body["entry"]))


def _entry_of(entries: list[dict[str, Any]], kind: str, artifact_id: str) -> dict[str, Any]:
    [entry] = [e for e in entries if e["type"] == kind and artifact_id in e.get("artifacts", [])]
    return entry


def _reachable_answers(api: Api, ids: dict[str, list[str]]) -> dict[str, list[Any]]:
    """Per entity and caller ("x agent", "x anonymous"), the answers of every route an agent or
    an anonymous caller reaches about each artifact: read, proof, the entity's tombstones."""
    answers: dict[str, list[Any]] = {}
    for entity, artifact_ids in ids.items():
        for artifact_id in artifact_ids:
            for who, headers in (("agent", api.agent), ("anonymous", None)):
                read = _answer(api, f"/v1/artifacts/{artifact_id}", headers)
                proof = _answer(api, f"/v1/artifacts/{artifact_id}/proof", headers)
                status = _answer(api, f"/v1/tombstones/user:{entity}", headers)
                # The status route's own error names it, the same for every entity (compared).
                _assert_says_nothing(read)
                _assert_says_nothing(proof)
                answers.setdefault(f"{entity} {who}", []).append((read, _proof_view(proof), status))
    return answers


def test_agent_sees_no_trace_of_tombstone(api: Api) -> None:
    scopes = ("local", "team")
    # x: a tombstone; y: an operator's entity forget; z: a legal-hold tombstone; w: an
    # operator's hold and forget.
    ids = {e: [_put(api, f"user:{e}", s) for s in scopes] for e in ("x", "y", "z", "w")}
    _admin_post(
        api, "/v1/tombstones", {"entity_uri": "user:x", "scope": "*", "reason": "erasure #42"}
    )
    _admin_post(
        api,
        "/v1/tombstones",
        {"entity_uri": "user:z", "scope": "*", "reason": "litigation", "legal_hold": True},
    )
    _admin_post(api, "/v1/holds", {"entity_uri": "user:w", "authority": "court order 7"})
    _admin_post(api, "/v1/forget", {"entity_uri": "user:w", "level": 2, "authority": "GDPR-17"})
    # Waits for the epoch: the tombstone's forgets are executed by it too.
    _admin_post(api, "/v1/forget", {"entity_uri": "user:y", "level": 2, "authority": "GDPR-17"})

    # The public log: the tombstone's entries are an operator's, and say nothing.
    entries = _log(api)
    for entry in entries:
        _assert_says_nothing(entry)
    for tombstoned, operated in (("x", "y"), ("z", "w")):
        for mine, theirs in zip(ids[tombstoned], ids[operated], strict=True):
            assert _blank(_entry_of(entries, "forget", mine)) == _blank(
                _entry_of(entries, "forget", theirs)
            )
    assert _blank(_entry_of(entries, "legal_hold", ids["z"][0])) == _blank(
        _entry_of(entries, "legal_hold", ids["w"][0])
    )

    answers = _reachable_answers(api, ids)
    # The routes about no artifact in particular say nothing either.
    for path in ("/v1/manifest", "/v1/checkpoint", "/v1/checkpoints"):
        for headers in (api.agent, None):
            _assert_says_nothing(_answer(api, path, headers))
    # A suppressed artifact answers exactly as a forgotten one: all eight read the same.
    reads = {str(_blank(answers[f"{e} agent"][i][0])) for e in ids for i in range(len(scopes))}
    assert len(reads) == 1, reads
    [read] = reads
    assert "410" in read
    for tombstoned, operated in (("x", "y"), ("z", "w")):
        for who in ("agent", "anonymous"):
            mine = [_blank(a) for a in answers[f"{tombstoned} {who}"]]
            theirs = [_blank(a) for a in answers[f"{operated} {who}"]]
            assert mine == theirs, (tombstoned, who)
    # Forgotten at level 2 and committed: proofs, which a verifier checks, equal in all but ids.
    key = api.client.get("/v1/checkpoint").json()["verifier_key"]
    for artifact_id in ids["x"] + ids["y"]:
        status, proof = _answer(api, f"/v1/artifacts/{artifact_id}/proof", api.agent)
        assert status == 200
        [proven] = verify_document(proof, key)
        assert proven.artifact_id == artifact_id
    # Held: no proof yet, for the tombstone's and the operator's alike.
    for artifact_id in ids["z"] + ids["w"]:
        assert _answer(api, f"/v1/artifacts/{artifact_id}/proof", api.agent)[0] == 409


def test_put_after_tombstone_answers_as_a_forgotten_artifact(api: Api) -> None:
    """ADR 0018: the put succeeds, and the artifact answers as any forgotten one does."""
    _admin_post(api, "/v1/tombstones", {"entity_uri": "user:carol", "scope": "*"})
    before = _put(api, "user:dan", "team")
    _admin_post(api, "/v1/forget", {"entity_uri": "user:dan", "level": 2})
    after = api.client.post(
        "/v1/artifacts",
        json={
            "plaintext_b64url": b64url_encode(b"a memory about user:dan"),
            "metadata": {"kind": "memory"},
            "entity_uri": "user:carol",
            "scope": "team",
        },
        headers=api.agent,
    )
    assert after.status_code == 201, after.text
    late = after.json()["artifact_id"]
    assert set(after.json()) == {"artifact_id", "size"}

    assert _blank(_answer(api, f"/v1/artifacts/{late}", api.agent)) == _blank(
        _answer(api, f"/v1/artifacts/{before}", api.agent)
    )
    # Executed by the next epoch like any forget (this request waits for one): a proof.
    _admin_post(api, "/v1/forget", {"entity_uri": "user:dan", "level": 2})
    status, proof = _answer(api, f"/v1/artifacts/{late}/proof", api.agent)
    assert status == 200, proof
    key = api.client.get("/v1/checkpoint").json()["verifier_key"]
    [proven] = verify_document(proof, key)
    assert (proven.artifact_id, proven.level) == (late, 2)
    assert _blank(proof["forget_event"]) == _blank(
        _answer(api, f"/v1/artifacts/{before}/proof", api.agent)[1]["forget_event"]
    )
