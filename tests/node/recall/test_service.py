"""The recall pipeline on both stores: traversal, full text, scopes, time travel, pagination,
packing, and derived data that forgets with its source."""

from __future__ import annotations

import itertools
import sqlite3
import time
from pathlib import Path

import pytest

from oblivio.core.identifiers import format_time
from oblivio.node.api_keys import ApiKey
from oblivio.node.recall.model import FactTooLargeError, ScopeNotPermittedError, parse_fact
from oblivio.node.recall.query import make_query
from oblivio.node.services import NodeServices
from oblivio.store.database import Database
from oblivio.store.sqlite import SqliteDatabase
from tests.node.recall.conftest import add_card, add_fact, recall_json
from tests.processes import poll


def test_hops_bound_the_traversal(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    chain = ["user:a", "user:b", "user:c", "user:d", "user:e"]
    for here, there in itertools.pairwise(chain):
        add_fact(r, agent, here, "next", ref=there)
    for uri in chain:
        add_fact(r, agent, uri, "label", uri.upper())
    for hops in range(4):
        page = recall_json(r, agent, entity="user:a", hops=hops, limit=100)
        reached = {f["entity_uri"] for f in page["facts"]}
        assert reached == set(chain[: hops + 1]), hops
        assert max(f["hop"] for f in page["facts"]) == hops


def test_traversal_follows_edges_both_ways(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    add_fact(r, agent, "user:b", "knows", ref="user:a")
    add_fact(r, agent, "user:b", "city", "Graz")
    page = recall_json(r, agent, entity="user:a", hops=1)
    assert "Graz" in str(page["facts"])


def test_text_query_ranks_by_bm25_and_intersects_with_entity(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_card(r, agent, "user:a", "walnut walnut cake")
    add_card(r, agent, "user:b", "a walnut among many other long words in this card")
    add_card(r, agent, "user:c", "nothing relevant")
    page = recall_json(r, agent, q="walnut")
    assert [c["about_entity"] for c in page["cards"]] == ["user:a", "user:b"]
    assert page["cards"][0]["score"] > page["cards"][1]["score"] > 0
    only_b = recall_json(r, agent, q="walnut", entity="user:b", hops=0)
    assert [c["about_entity"] for c in only_b["cards"]] == ["user:b"]


def test_scope_filter_uses_the_keys_read_scopes(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    add_fact(r, agent, "user:a", "secret", "s3cr3t", scope="company")
    public = add_fact(r, agent, "user:a", "motto", "hello", scope="public")
    reader, _ = services.compliance.api_keys.create(
        "reader-1", "agent", read_scopes=["public"], write_scopes=["public"]
    )
    page = recall_json(r, reader, entity="user:a", hops=0)
    assert [f["id"] for f in page["facts"]] == [public["id"]]
    assert page["total"] == 1
    with pytest.raises(ScopeNotPermittedError):
        recall_json(r, reader, entity="user:a", scopes=["company"])
    with pytest.raises(ScopeNotPermittedError):
        add_fact(r, reader, "user:a", "x", 1, scope="team")
    narrowed = recall_json(r, agent, entity="user:a", hops=0, scopes=["public"])
    assert narrowed["total"] == 1


def test_as_of_answers_from_facts_valid_and_not_retracted_then(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    old = add_fact(r, agent, "user:a", "city", "Rome", valid_from="2020-01-01T00:00:00Z")
    time.sleep(0.01)
    middle = format_time(services.compliance.clock())
    time.sleep(0.01)
    new = add_fact(r, agent, "user:a", "city", "Oslo")
    r.retract_fact(agent, old["id"])
    now_page = recall_json(r, agent, entity="user:a", hops=0)
    assert [f["id"] for f in now_page["facts"]] == [new["id"]]
    then_page = recall_json(r, agent, entity="user:a", hops=0, as_of=middle)
    assert [f["id"] for f in then_page["facts"]] == [old["id"]]
    before_valid = recall_json(r, agent, entity="user:a", hops=0, as_of="2019-01-01T00:00:00Z")
    assert before_valid["total"] == 0
    # The retraction log holds ids and times, never values.
    with services.node.db.transaction(write=False) as tx:
        rows = tx.fetchall("SELECT * FROM fact_retractions")
    assert len(rows) == 1
    assert "Rome" not in str(rows)


def test_retraction_is_idempotent_and_hides_nothing_else(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    fact = add_fact(r, agent, "user:a", "city", "Rome")
    first = r.retract_fact(agent, fact["id"])
    assert r.retract_fact(agent, fact["id"]) == first


def test_pagination_walks_the_whole_filtered_set(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    r.add_facts(
        agent,
        [
            parse_fact({"entity_uri": "user:a", "attribute": f"n{i}", "value": {"literal": i}})
            for i in range(7)
        ],
    )
    seen: list[str] = []
    cursor = None
    while True:
        page = recall_json(r, agent, entity="user:a", hops=0, limit=3, cursor=cursor)
        assert page["total"] == 7
        seen += [f["id"] for f in page["facts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7


def test_token_budget_limits_a_page_and_the_instruction(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    for i in range(10):
        add_card(r, agent, "user:a", f"note number {i} about the garden and the roses")
    page = recall_json(r, agent, entity="user:a", hops=0, token_budget=40)
    assert 0 < len(page["cards"]) < 10
    assert page["tokens"] <= 40
    block = r.instruction(agent, make_query(entity="user:a", hops=0, token_budget=40))
    assert block["tokens"] <= 40
    assert block["total"] == 10
    assert 0 < block["included"] < 10


def test_oversize_batch_is_refused_and_nothing_is_stored(
    services: NodeServices, agent: ApiKey
) -> None:
    facts = [
        parse_fact({"entity_uri": "user:a", "attribute": "n", "value": {"literal": i}})
        for i in range(501)
    ]
    with pytest.raises(FactTooLargeError):
        services.recall.add_facts(agent, facts)
    assert recall_json(services.recall, agent, entity="user:a", hops=0)["total"] == 0


def test_forgetting_a_facts_artifact_deletes_its_full_text_entry(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:a", "motto", "zebracorn")
    add_fact(r, agent, "user:b", "motto", "zebracorn")
    services.forgetting.forget(entity_uri="user:a", level=1, requestor="t", authority="t")
    assert recall_json(r, agent, q="zebracorn")["total"] == 1  # suppressed at once
    with services.node.db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM recall_documents") == (2,)
    services.forgetting.commit_due(force=True)
    with services.node.db.transaction(write=False) as tx:
        assert tx.fetchone("SELECT COUNT(*) FROM recall_documents") == (1,)


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


def _scan(paths: list[Path], needles: list[bytes]) -> list[tuple[str, bytes]]:
    found = []
    for path in paths:
        if path.exists():
            data = path.read_bytes()
            found += [(path.name, n) for n in needles if n in data]
    return found


@pytest.mark.parametrize("store_uri", ["sqlite"], indirect=True)  # a byte scan of its files
def test_level_2_tombstone_leaves_no_plaintext_in_the_sqlite_files(
    services: NodeServices, agent: ApiKey
) -> None:
    db = services.node.db
    assert isinstance(db, SqliteDatabase)
    r = services.recall
    secrets = ["Qwyxzzlefact", "Vorpalblade7", "Jabberwockcard"]
    add_fact(r, agent, "user:victim", "name", f"{secrets[0]} Smith")
    add_fact(r, agent, "user:victim", "motto", {"said": secrets[1]})
    add_card(r, agent, "user:victim", f"The {secrets[2]} lives in the wood")
    add_fact(r, agent, "user:other", "motto", "ordinary words")
    add_card(r, agent, "user:other", "an ordinary card about ordinary things")
    paths = [db.path, Path(f"{db.path}-wal")]
    _checkpoint(db.path)
    needles = [s.encode() for s in secrets] + [s.lower().encode() for s in secrets]
    assert _scan(paths, needles)  # the scan can see plaintext: the full-text index holds it
    services.compliance.tombstones.issue("admin", "user:victim", "*", "erase", False)
    services.forgetting.commit_due(force=True)
    _checkpoint(db.path)
    assert _scan(paths, needles) == []
    assert recall_json(r, agent, q="ordinary")["total"] == 2


def test_as_of_never_answers_from_forgotten_data(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    add_fact(r, agent, "user:a", "city", "Rome")
    time.sleep(0.01)
    before = format_time(services.compliance.clock())
    assert recall_json(r, agent, entity="user:a", hops=0, as_of=before)["total"] == 1
    services.forgetting.forget(entity_uri="user:a", level=2, requestor="t", authority="t")
    services.forgetting.commit_due(force=True)
    assert recall_json(r, agent, entity="user:a", hops=0, as_of=before)["total"] == 0
    assert recall_json(r, agent, q="rome", as_of=before)["total"] == 0


def test_subscription_batches_never_skip_a_record(services: NodeServices, agent: ApiKey) -> None:
    r = services.recall
    start = "2000-01-01T00:00:00.000Z"
    written = [add_fact(r, agent, "user:a", f"n{i}", i)["id"] for i in range(3)]
    written.append(add_card(r, agent, "user:a", "a card after the facts")["id"])
    delivered: list[str] = []
    mark = start
    for _ in range(5):
        events, mark = r.events_after(agent, None, None, mark, batch=2)
        delivered += [str(e["id"]) for e in events]
    assert delivered == written


def test_subscription_events_are_filtered_again_at_send_time(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    start = "2000-01-01T00:00:00.000Z"
    add_fact(r, agent, "user:alice", "motto", "carpe diem")
    add_fact(r, agent, "user:bob", "knows", ref="user:alice")
    add_card(r, agent, "user:bob", "Bob met a friend", related=["user:alice", "user:carol"])
    add_fact(r, agent, "user:bob", "city", "Graz")
    events, _ = r.events_after(agent, None, None, start)
    assert len(events) == 4
    # The tombstone arrives after the batch was read and before its events are sent.
    services.compliance.tombstones.issue("admin", "user:alice", "*", "test", False)
    sent = [e for e in map(r.deliverable, events) if e is not None]
    assert [(e["kind"], e.get("value")) for e in sent] == [
        ("card", None),
        ("fact", {"literal": "Graz"}),
    ]
    assert sent[0]["related_entities"] == ["user:carol"]
    assert "carpe" not in str(sent)


def _tuples(db: Database, table: str) -> list[bytes]:
    """Every tuple of ``table`` as PostgreSQL's pageinspect reads its pages: live ones and dead
    ones not yet pruned."""
    with db.transaction() as tx:
        tx.execute("CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA public")
        rows = tx.fetchall(
            "SELECT i.t_data FROM generate_series(0, pg_relation_size(?::regclass) / "
            "current_setting('block_size')::int - 1) AS b, "
            "public.heap_page_items(public.get_raw_page(?, b::int)) AS i "
            "WHERE i.t_data IS NOT NULL",
            (table, table),
        )
    return [bytes(r[0]) for r in rows]


def _vacuums(db: Database) -> int:
    with db.transaction(write=False) as tx:
        row = tx.fetchone(
            "SELECT vacuum_count FROM pg_stat_user_tables "
            "WHERE relid = 'recall_documents'::regclass"
        )
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("store_uri", ["postgresql"], indirect=True)  # its pages, by pageinspect
def test_level_2_tombstone_leaves_no_tuple_of_the_text_in_postgresql(
    services: NodeServices, agent: ApiKey
) -> None:
    """ADR 0029: the epoch that deletes full-text rows runs a plain VACUUM after its commit,
    so their dead tuples are pruned, not left until autovacuum's threshold."""
    db = services.node.db
    r = services.recall
    secrets = [b"qwyxzzlefact", b"vorpalblade7", b"jabberwockcard"]
    add_fact(r, agent, "user:victim", "name", "Qwyxzzlefact Smith")
    add_fact(r, agent, "user:victim", "motto", {"said": "Vorpalblade7"})
    add_card(r, agent, "user:victim", "The Jabberwockcard lives in the wood")
    add_fact(r, agent, "user:other", "motto", "ordinary words")

    def seen() -> list[bytes]:
        return [s for s in secrets if any(s in t for t in _tuples(db, "recall_documents"))]

    assert seen() == secrets
    services.compliance.tombstones.issue("admin", "user:victim", "*", "erase", False)
    services.forgetting.commit_due(force=True)
    assert _vacuums(db) == 1  # the epoch's, after its commit

    def pruned() -> bool:
        # A transaction of another test, older than the deletion, keeps its dead tuples
        # visible and unprunable; each later epoch vacuums again while any are counted dead.
        services.forgetting.commit_due(force=True)
        return seen() == []

    poll("the deleted tuples pruned by an epoch's VACUUM", pruned, deadline=120, every=0.5)
    assert recall_json(r, agent, q="ordinary")["total"] == 1
