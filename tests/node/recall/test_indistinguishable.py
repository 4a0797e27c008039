"""Acceptance of issue 13 (seed 002 §23.3.3), property-tested on both stores.

For random stores of entities, facts, refs, derived facts, retractions and cards:

1. a store that held entity E and then tombstoned it answers every recall (entity and k-hop,
   text queries, every page of a paginated walk, totals, instruction blocks) byte-identically
   to a store that never held E, once ids and times are normalised;
2. after a legal-hold tombstone on E is revoked, a store answers exactly as one that always
   held E and was never tombstoned.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oblivio.node.api_keys import ApiKey
from oblivio.node.node import init_node
from oblivio.node.recall.model import parse_card, parse_fact
from oblivio.node.recall.query import make_query
from oblivio.node.services import NodeServices, open_services
from tests.conftest import _with_schema

E = "user:eve"
OTHERS = ("user:ann", "user:bo", "user:cy", "user:dee")
ENTITIES = (E, *OTHERS)
E_NAME = "Zorblax Quintus"
WORDS = ("tea", "chess", "sailing", "garden", "violin", "lyon")
SCOPES = ("local", "team")
KEY = ApiKey("test", "test", "admin")


@dataclass(frozen=True)
class FactOp:
    entity: str
    attribute: str
    literal: str | None
    ref: str | None
    scope: str
    derived: tuple[int, ...]  # indexes of earlier fact ops


@dataclass(frozen=True)
class CardOp:
    about: str
    related: tuple[str, ...]
    text: str
    scope: str


@dataclass(frozen=True)
class RetractOp:
    fact: int  # index of an earlier fact op


Op = FactOp | CardOp | RetractOp


def _fact_ops() -> st.SearchStrategy[FactOp]:
    literal = st.builds(
        lambda entity, attribute, words, scope: FactOp(
            entity, attribute, " ".join(words), None, scope, ()
        ),
        st.sampled_from(ENTITIES),
        st.sampled_from(("likes", "city", "note")),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
        st.sampled_from(SCOPES),
    )
    edge = st.builds(
        lambda entity, ref, scope: FactOp(entity, "knows", None, ref, scope, ()),
        st.sampled_from(ENTITIES),
        st.sampled_from(ENTITIES),
        st.sampled_from(SCOPES),
    )
    return st.one_of(literal, edge)


def _card_ops() -> st.SearchStrategy[CardOp]:
    return st.builds(
        lambda about, related, words, names, scope: CardOp(
            about,
            tuple(dict.fromkeys(r for r in related if r != about)),
            " ".join(words) + (" met " + E_NAME if names else ""),
            scope,
        ),
        st.sampled_from(ENTITIES),
        st.lists(st.sampled_from(ENTITIES), max_size=3),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
        st.booleans(),
        st.sampled_from(SCOPES),
    )


@st.composite
def worlds(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    if draw(st.booleans()):
        ops.append(FactOp(E, "name", E_NAME, None, "local", ()))
    facts: list[int] = [i for i, op in enumerate(ops) if isinstance(op, FactOp)]
    for _ in range(draw(st.integers(min_value=3, max_value=14))):
        kind = draw(st.sampled_from(("fact", "fact", "card", "derived", "retract")))
        if kind == "card":
            ops.append(draw(_card_ops()))
            continue
        if kind == "retract" and facts:
            ops.append(RetractOp(draw(st.sampled_from(facts))))
            continue
        op = draw(_fact_ops())
        if kind == "derived" and facts:
            sources = draw(st.lists(st.sampled_from(facts), min_size=1, max_size=3, unique=True))
            op = replace(op, derived=tuple(sources))
        facts.append(len(ops))
        ops.append(op)
    return ops


def _fact_body(op: FactOp, ops: list[Op]) -> dict[str, Any]:
    derived = []
    for index in op.derived:
        source = ops[index]
        assert isinstance(source, FactOp)
        derived.append(parse_fact(_fact_body(source, ops)).fact_hash())
    return {
        "entity_uri": op.entity,
        "attribute": op.attribute,
        "value": {"ref": op.ref} if op.ref is not None else {"literal": op.literal},
        "scope": op.scope,
        "derived_from": derived,
    }


def _names_e(ops: list[Op], text: str) -> bool:
    """Whether a card text names E by an alias the tombstone captured (§23.3.2 rule 3)."""
    has_name = any(isinstance(o, FactOp) and o.entity == E and o.attribute == "name" for o in ops)
    return has_name and E_NAME in text


def _about_e(op: Op, ops: list[Op], covered: tuple[str, ...]) -> bool:
    """Whether ``op`` writes data about E in a scope the tombstone covers."""
    if isinstance(op, FactOp):
        return op.scope in covered and E in (op.entity, op.ref)
    if isinstance(op, CardOp):
        return op.scope in covered and (op.about == E or _names_e(ops, op.text))
    return _about_e(ops[op.fact], ops, covered)


def _apply(services: NodeServices, ops: list[Op], *, without_e: tuple[str, ...] = ()) -> None:
    """Write ``ops`` in order, leaving out everything about E in the scopes ``without_e`` (as if
    it had never been held there): its facts, edges to it, cards about or naming it, its entries
    in related_entities."""
    fact_ids: dict[int, str] = {}
    for index, op in enumerate(ops):
        if _about_e(op, ops, without_e):
            continue
        if isinstance(op, FactOp):
            added = services.recall.add_facts(KEY, [parse_fact(_fact_body(op, ops))])
            fact_ids[index] = str(added[0]["id"])
        elif isinstance(op, CardOp):
            related = [r for r in op.related if not (op.scope in without_e and r == E)]
            card = {
                "about_entity": op.about,
                "related_entities": related,
                "text": op.text,
                "scope": op.scope,
            }
            services.recall.add_card(KEY, parse_card(card))
        else:
            services.recall.retract_fact(KEY, fact_ids[op.fact])


def _normalised(answer: object) -> str:
    """JCS-like text of an answer with ids numbered by first appearance and times blanked."""
    ids: dict[str, str] = {}

    def walk(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key in ("id", "fact_id") and isinstance(value, str):
            return ids.setdefault(value, f"#{len(ids)}")
        if key in ("created_at", "valid_from"):
            return "T"
        return value

    return json.dumps(walk(answer), sort_keys=True, separators=(",", ":"))


def _answers(services: NodeServices) -> list[str]:
    """Every recall this test compares, normalised."""
    recall = services.recall
    out: list[str] = []
    for entity in ENTITIES:
        for hops in range(4):
            out.append(
                _normalised(recall.recall(KEY, make_query(entity=entity, hops=hops)).to_dict())
            )
        block = recall.instruction(KEY, make_query(entity=entity, hops=2, token_budget=60))
        out.append(_normalised(block))
    for word in (*WORDS, "zorblax", "met"):
        out.append(_normalised(recall.recall(KEY, make_query(q=word)).to_dict()))
    for scopes in (["local"], ["team"]):
        out.append(
            _normalised(recall.recall(KEY, make_query(q="tea chess", scopes=scopes)).to_dict())
        )
    # A paginated walk, page by page (cursors included), with a token budget.
    cursor = None
    for _ in range(20):
        query = make_query(entity=OTHERS[0], hops=3, limit=2, token_budget=40, cursor=cursor)
        page = recall.recall(KEY, query).to_dict()
        out.append(_normalised(page))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return out


@contextlib.contextmanager
def _node(base: Path, backend: str, postgres: str | None) -> Iterator[NodeServices]:
    name = uuid.uuid4().hex[:12]
    schema = None
    if backend == "sqlite":
        uri = "sqlite:///" + str(base / f"{name}.db").lstrip("/")
    else:
        assert postgres is not None
        schema = "oblivio_prop_" + name
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        uri = _with_schema(postgres, schema)
    node = init_node(base / name, name="prop", store_uri=uri)
    try:
        yield open_services(node)
    finally:
        node.close()
        if schema is not None:
            assert postgres is not None
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return "sqlite", None
    server: str = request.getfixturevalue("postgres_server")
    return "postgresql", server


PROPERTY = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


PATTERNS: tuple[tuple[object, tuple[str, ...]], ...] = (
    ("*", SCOPES),
    ("team", ("team",)),
    ("local", ("local",)),
    (["local", "team"], SCOPES),
)
"""Tombstone scope patterns and the scopes of this test's records each covers."""


@PROPERTY
@given(ops=worlds(), commit_epoch=st.booleans(), pattern=st.sampled_from(PATTERNS))
def test_tombstoned_store_answers_like_one_that_never_held_e(
    backend: tuple[str, str | None],
    ops: list[Op],
    commit_epoch: bool,
    pattern: tuple[object, tuple[str, ...]],
) -> None:
    scope, covered = pattern
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with _node(base, *backend) as held, _node(base, *backend) as never:
            _apply(held, ops)
            held.compliance.tombstones.issue("admin", E, scope, "erase", False)
            if commit_epoch:
                held.forgetting.commit_due(force=True)
            _apply(never, ops, without_e=covered)
            assert _answers(held) == _answers(never)


@PROPERTY
@given(ops=worlds(), commit_epoch=st.booleans())
def test_revoked_legal_hold_answers_like_a_store_that_always_held_e(
    backend: tuple[str, str | None], ops: list[Op], commit_epoch: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with _node(base, *backend) as revoked, _node(base, *backend) as always:
            _apply(revoked, ops)
            record, _ = revoked.compliance.tombstones.issue("admin", E, "*", "hold", True)
            if commit_epoch:
                revoked.forgetting.commit_due(force=True)
            revoked.compliance.tombstones.revoke("admin", record.id, "court order")
            _apply(always, ops)
            assert _answers(revoked) == _answers(always)
