"""Proof of Forgetting verification (DESIGN.md §9, §15; core/pof.py): every single mutation of a
real proof fails, with the failing link named.

The proofs come from a real node (SQLite), forgotten at level 2 among other artifacts so that
the SMT proof and both log inclusion proofs have non-empty paths. Each mutation is applied to a
fresh copy of the parsed document: every leaf value changed (strings by one character, hex kept
lower-case hex; integers + 1; null <-> a value), every list shortened by one element, every
field removed, an unknown field added to every object, and every character of the signed
checkpoint note flipped in turn.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oblivio.core.cosignature import WitnessSigner, append_signature_lines, note_body
from oblivio.core.pof import (
    BUNDLE_TYPE,
    POF_TYPE,
    ProofInputError,
    ProofLinkError,
    ProvenForgetting,
    parse_proof_document,
    verify_document,
    verify_proof,
)
from oblivio.core.signing import SigningKey
from oblivio.node.node import init_node
from oblivio.node.services import open_services
from oblivio.node.vault import ArtifactInput

HEX = frozenset("0123456789abcdef")

# The links a mutation under each top-level field may be reported as. A changed artifact id is
# first noticed by the forget event that no longer names it; a changed receipt by the record
# that binds its hash; a changed inclusion proof by the entry it should include.
ALLOWED_LINKS: dict[str, set[str]] = {
    "artifact_id": {"artifact_id", "forget_event"},
    "record": {"record"},
    "smt_proof": {"smt_proof"},
    "checkpoint": {"checkpoint"},
    "map_root": {"map_root"},
    "map_root_inclusion": {"map_root_inclusion", "map_root"},
    "forget_event": {"forget_event"},
    "log_inclusion": {"log_inclusion", "forget_event"},
    "destruction_receipt": {"record", "destruction_receipt"},
}


@dataclass(frozen=True)
class Proofs:
    """A verified single proof, a verified bundle of three, and the node's verifier key."""

    proof: dict[str, Any]
    bundle: dict[str, Any]
    other_checkpoint_proof: dict[str, Any]
    key: str


@pytest.fixture(scope="module")
def proofs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proofs]:
    home = tmp_path_factory.mktemp("pof") / "home"
    with init_node(home, name="pof.test") as node:
        services = open_services(node)
        vault = node.vault
        others = vault.put_many(
            [ArtifactInput(b"other %d" % i, {"i": i}, "user:bob", "local") for i in range(12)]
        )
        target = vault.put(b"Alice's address", {"kind": "address"}, "user:alice", "team")
        entity = vault.put_many(
            [ArtifactInput(b"carol %d" % i, {}, "user:carol", "company") for i in range(3)]
        )
        services.forgetting.commit_due()
        services.forgetting.forget(artifact_id=target, level=2, reason="erasure request")
        services.forgetting.commit_due()
        early = services.forgetting.prove(target)
        receipt = services.forgetting.forget(entity_uri="user:carol", level=2)
        # A later epoch, so that the single proof and the bundle are under different checkpoints.
        services.forgetting.forget(artifact_id=others[0], level=0)
        services.forgetting.commit_due()
        proof = services.forgetting.prove(target)
        bundle = services.forgetting.prove_request(receipt.request_id)
        assert {p["artifact_id"] for p in bundle["proofs"]} == set(entity)
        yield Proofs(proof, bundle, early, services.checkpoints.verifier_key)


def _round_trip(document: dict[str, Any]) -> dict[str, Any]:
    """The document as a verifier receives it: serialised and parsed again."""
    parsed = parse_proof_document(json.dumps(document).encode())
    return dict(parsed)


def _changed_string(text: str) -> list[str]:
    """One-character changes of ``text``: hex stays lower-case hex."""
    if not text:
        return ["0"]
    if set(text) <= HEX:
        return [
            ("1" if text[0] == "0" else "0") + text[1:],
            text[:-1] + ("e" if text[-1] == "f" else "f"),
        ]
    first = text[0]
    if first.isdigit():
        replacement = "1" if first == "0" else "0"
    elif first.islower():
        replacement = "b" if first == "a" else "a"
    elif first.isupper():
        replacement = "B" if first == "A" else "A"
    else:
        replacement = "x"
    return [replacement + text[1:]]


MutationPath = tuple[str | int, ...]
REMOVE = object()


def mutations(value: Any, path: MutationPath = ()) -> Iterator[tuple[MutationPath, str, Any]]:
    """(path of the changed value, what changed, the new value or a marker) for every single
    mutation of ``value``'s tree. ``REMOVE`` removes a field or list element."""
    if isinstance(value, dict):
        yield path, "add unknown field", {**value, "unexpected": "x"}
        for key, item in value.items():
            yield (*path, key), "remove field", REMOVE
            yield from mutations(item, (*path, key))
    elif isinstance(value, list):
        for index in range(len(value)):
            yield (*path, index), "drop list element", REMOVE
        if value:
            yield path, "null instead of list", None
        for index, item in enumerate(value):
            yield from mutations(item, (*path, index))
    elif value is None:
        yield path, "value instead of null", "00" * 32
        yield path, "object instead of null", {}
    elif isinstance(value, bool):
        yield path, "flip bool", not value
    elif isinstance(value, int):
        yield path, "int + 1", value + 1
        yield path, "null instead of int", None
    elif isinstance(value, str):
        for changed in _changed_string(value):
            yield path, "change one character", changed
        yield path, "null instead of string", None
    else:  # pragma: no cover - proofs hold JSON values only
        raise AssertionError(f"unexpected value {value!r} at {path}")


def apply_mutation(document: dict[str, Any], path: MutationPath, new: Any) -> dict[str, Any]:
    """A copy of ``document`` with the value at ``path`` replaced by ``new`` (or removed)."""
    mutated = copy.deepcopy(document)
    if not path:
        assert isinstance(new, dict)
        return new
    parent: Any = mutated
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if new is REMOVE:
        del parent[last]
    else:
        parent[last] = new
    return mutated


def note_mutations(note: str) -> Iterator[str]:
    """The note with each character in turn changed (its low bit flipped)."""
    for index, char in enumerate(note):
        flipped = chr(ord(char) ^ 1)
        yield note[:index] + flipped + note[index + 1 :]


def _assert_rejected(document: dict[str, Any], key: str, area: str | None, what: str) -> str:
    """Verification must raise; a link failure must name the area. Returns the link (or
    ``input`` for an unusable document)."""
    link: str
    try:
        proven = verify_document(document, key)
    except ProofInputError:
        return "input"
    except ProofLinkError as e:
        link = e.link
    else:
        pytest.fail(f"{what}: the mutated proof verified: {[p.statement() for p in proven]}")
    assert link, what
    if area is not None:
        assert link in ALLOWED_LINKS[area], f"{what}: link {link!r} for a change in {area}"
    return link


def test_the_unmutated_proof_verifies(proofs: Proofs) -> None:
    proven = verify_document(_round_trip(proofs.proof), proofs.key)
    assert len(proven) == 1
    assert proven[0].artifact_id == proofs.proof["artifact_id"]
    assert proven[0].level == 2
    assert proven[0].destruction_backend == "software"
    assert proven[0].node == "pof.test"
    # The mutation test below needs non-empty paths to drop elements from.
    assert proofs.proof["smt_proof"]["siblings"]
    assert proofs.proof["log_inclusion"]["path"]
    assert proofs.proof["map_root_inclusion"]["path"]
    assert proofs.proof["destruction_receipt"] is not None


def test_every_single_mutation_fails_verification_naming_the_link(proofs: Proofs) -> None:
    document = _round_trip(proofs.proof)
    links: dict[str, set[str]] = {}
    count = 0
    for path, what, new in mutations(document):
        mutated = apply_mutation(document, path, new)
        if mutated == document:
            continue
        area = str(path[0]) if path else None
        description = f"{what} at {'.'.join(map(str, path)) or '(document)'}"
        link = _assert_rejected(mutated, proofs.key, area, description)
        links.setdefault(area or "(document)", set()).add(link)
        if path and len(path) > 1 and area != "type":
            # A change inside a link's data is that link's failure, not an unusable document.
            assert link != "input", f"{description}: reported as unusable input"
        count += 1
    assert count > 200, count
    # Every top-level field was reached by some mutation.
    assert set(ALLOWED_LINKS) <= set(links), sorted(links)


def test_every_character_of_the_checkpoint_note_matters(proofs: Proofs) -> None:
    document = _round_trip(proofs.proof)
    note = document["checkpoint"]
    assert isinstance(note, str)
    for index, mutated_note in enumerate(note_mutations(note)):
        mutated = {**document, "checkpoint": mutated_note}
        link = _assert_rejected(mutated, proofs.key, "checkpoint", f"note character {index}")
        assert link == "checkpoint"
    # Dropping or adding a line, and a note signed for another log size, fail too.
    lines = note.split("\n")
    for index in range(len(lines)):
        shorter = "\n".join(lines[:index] + lines[index + 1 :])
        mutated = {**document, "checkpoint": shorter}
        _assert_rejected(mutated, proofs.key, "checkpoint", f"note without line {index}")
    extended = note.replace("\n\n", "\nextension line\n\n", 1)
    mutated = {**document, "checkpoint": extended}
    _assert_rejected(mutated, proofs.key, "checkpoint", "note with an extension line")


def test_a_valid_checkpoint_of_another_epoch_does_not_fit(proofs: Proofs) -> None:
    # Both notes verify under the key; only the links to the log tell them apart.
    document = _round_trip(proofs.proof)
    mutated = {**document, "checkpoint": proofs.other_checkpoint_proof["checkpoint"]}
    assert _assert_rejected(mutated, proofs.key, None, "older checkpoint") in {
        "map_root",
        "forget_event",
    }


def test_pieces_of_another_valid_proof_do_not_fit(proofs: Proofs) -> None:
    document = _round_trip(proofs.proof)
    other = _round_trip(proofs.bundle["proofs"][0])
    for field in sorted(ALLOWED_LINKS):
        if document[field] == other[field]:
            continue
        mutated = {**document, field: other[field]}
        _assert_rejected(mutated, proofs.key, None, f"{field} of another proof")


def test_another_nodes_key_fails_at_the_checkpoint(proofs: Proofs, tmp_path: Path) -> None:
    with init_node(tmp_path / "other", name="pof.test") as other:
        other_key = open_services(other).checkpoints.verifier_key
    with pytest.raises(ProofLinkError) as raised:
        verify_document(_round_trip(proofs.proof), other_key)
    assert raised.value.link == "checkpoint"


@pytest.mark.parametrize(
    "key", ["", "pof.test", "pof.test+00000000+AQ", "not a key at all", "pof.test+zz+AAAA"]
)
def test_an_unusable_key_is_an_input_error(proofs: Proofs, key: str) -> None:
    with pytest.raises(ProofInputError):
        verify_document(_round_trip(proofs.proof), key)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b'"proof"', b"{", b"null"])
def test_bytes_that_are_no_json_object_are_input_errors(data: bytes) -> None:
    with pytest.raises(ProofInputError):
        parse_proof_document(data)


@pytest.mark.parametrize(
    "document",
    [{}, {"type": POF_TYPE}, {"type": "something else"}, {"type": BUNDLE_TYPE, "proofs": []}],
)
def test_documents_of_the_wrong_shape_are_input_errors(
    proofs: Proofs, document: dict[str, Any]
) -> None:
    with pytest.raises(ProofInputError):
        verify_document(document, proofs.key)


def test_the_bundle_verifies_under_one_checkpoint(proofs: Proofs) -> None:
    bundle = _round_trip(proofs.bundle)
    proven = verify_document(bundle, proofs.key)
    assert [p.artifact_id for p in proven] == [p["artifact_id"] for p in bundle["proofs"]]
    assert len({(p.checkpoint_size, p.epoch) for p in proven}) == 1
    assert all(p.level == 2 for p in proven)


def test_a_mutation_inside_a_bundle_names_the_proof_and_its_link(proofs: Proofs) -> None:
    bundle = _round_trip(proofs.bundle)
    mutated = copy.deepcopy(bundle)
    record = mutated["proofs"][1]["record"]
    record["forget_event_hash"] = _changed_string(record["forget_event_hash"])[0]
    with pytest.raises(ProofLinkError) as raised:
        verify_document(mutated, proofs.key)
    assert raised.value.link == "proofs[1].record"

    dropped = copy.deepcopy(bundle)
    del dropped["proofs"][2]["smt_proof"]
    with pytest.raises(ProofInputError):
        verify_document(dropped, proofs.key)

    extra = {**copy.deepcopy(bundle), "unexpected": 1}
    with pytest.raises(ProofInputError):
        verify_document(extra, proofs.key)


def test_a_bundle_mixing_checkpoints_fails(proofs: Proofs) -> None:
    bundle = _round_trip(proofs.bundle)
    mixed = {**bundle, "proofs": [*bundle["proofs"], _round_trip(proofs.other_checkpoint_proof)]}
    with pytest.raises(ProofLinkError) as raised:
        verify_document(mixed, proofs.key)
    assert raised.value.link == "checkpoint"


def test_verify_proof_rejects_a_bundle(proofs: Proofs) -> None:
    with pytest.raises(ProofInputError):
        verify_proof(_round_trip(proofs.bundle), proofs.key)


@pytest.mark.parametrize(
    ("capabilities", "claim"),
    [
        (("decrypt", "prove", "recover"), "holds no capability to decrypt artifact"),
        (("decrypt", "recover"), "holds no capability to decrypt artifact"),
        # The recover escrow holds a copy of K_data: with it alive the node can still decrypt.
        (("decrypt",), "holds no decrypt capability for artifact"),
        (("decrypt", "prove"), "holds no decrypt, prove capability for artifact"),
        (("recover",), "holds no recover capability for artifact"),
    ],
)
def test_statement_claims_no_way_to_decrypt_only_when_decrypt_and_recover_are_gone(
    capabilities: tuple[str, ...], claim: str
) -> None:
    proven = ProvenForgetting("node", "ab" * 32, 5, 2, 2, "event", None, capabilities)
    statement = proven.statement()
    assert claim in statement
    assert f"(forgotten: {', '.join(capabilities)})" in statement


# -- cosigned checkpoints (DESIGN.md §17) --------------------------------------------------------


def _cosigned(proof: dict[str, Any], *signers: WitnessSigner) -> dict[str, Any]:
    cosigned = copy.deepcopy(proof)
    body = note_body(proof["checkpoint"].encode())
    lines = [s.cosign(body, 1_790_000_000 + i).to_line() for i, s in enumerate(signers)]
    cosigned["checkpoint"] = append_signature_lines(proof["checkpoint"], lines)
    return cosigned


WITNESSES = [WitnessSigner(f"w{i}.example", SigningKey(bytes([40 + i]) * 32)) for i in range(3)]


def test_cosigned_proof_verifies_without_witnesses(proofs: Proofs) -> None:
    """Cosignature lines are note signatures by unknown keys to a verifier that knows none."""
    cosigned = _round_trip(_cosigned(proofs.proof, *WITNESSES))
    [proven] = verify_document(cosigned, proofs.key)
    assert proven.cosigned_by == ()


def test_cosigned_proof_meets_a_quorum_and_names_the_missing(proofs: Proofs) -> None:
    cosigned = _round_trip(_cosigned(proofs.proof, WITNESSES[0], WITNESSES[2]))
    verifiers = [w.verifier for w in WITNESSES]
    [proven] = verify_document(cosigned, proofs.key, verifiers, 2)
    assert proven.cosigned_by == (verifiers[0].key_id, verifiers[2].key_id)
    assert "cosigned by w0.example" in proven.statement()
    with pytest.raises(ProofLinkError, match=r"missing: w1\.example\+") as err:
        verify_document(cosigned, proofs.key, verifiers, 3)
    assert err.value.link == "cosignatures"
    with pytest.raises(ProofInputError):
        verify_document(cosigned, proofs.key, verifiers, 4)


def test_a_cosignature_of_another_checkpoint_does_not_count(proofs: Proofs) -> None:
    early = _cosigned(proofs.other_checkpoint_proof, WITNESSES[0])
    moved = copy.deepcopy(proofs.proof)
    moved["checkpoint"] = append_signature_lines(
        proofs.proof["checkpoint"], [early["checkpoint"].splitlines()[-1]]
    )
    [proven] = verify_document(_round_trip(moved), proofs.key)
    with pytest.raises(ProofLinkError, match="present but invalid"):
        verify_document(_round_trip(moved), proofs.key, [WITNESSES[0].verifier], 1)
    assert proven.checkpoint_size > 0
