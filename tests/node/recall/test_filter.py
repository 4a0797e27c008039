"""Seed 002 §23.3: the recall-time tombstone filter, one named test per rule, on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from oblivio.node.api_keys import ApiKey
from oblivio.node.recall.query import make_query
from oblivio.node.recall.service import RecallService, load_alias_key
from oblivio.node.services import NodeServices
from tests.node.recall.conftest import add_card, add_fact, recall_json


def _tombstone(services: NodeServices, entity: str, scope: object = "*", hold: bool = False) -> str:
    record, _ = services.compliance.tombstones.issue("admin", entity, scope, "test", hold)
    return record.id


def _ids(page: dict[str, object], kind: str) -> list[str]:
    return [item["id"] for item in page[kind]]  # type: ignore[attr-defined,index]


def test_rule_23_3_1_2_facts_of_a_tombstoned_entity_are_dropped(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:alice", "email", "alice@example.org")
    kept = add_fact(r, agent, "user:bob", "email", "bob@example.org")
    _tombstone(services, "user:alice")
    assert recall_json(r, agent, entity="user:alice", hops=0)["total"] == 0
    assert _ids(recall_json(r, agent, q="example"), "facts") == [kept["id"]]


def test_rule_23_3_1_2_scope_of_the_tombstone_decides(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    team = add_fact(r, agent, "user:alice", "email", "a@team.example", scope="team")
    add_fact(r, agent, "user:alice", "email", "a@local.example", scope="local")
    _tombstone(services, "user:alice", "local")
    assert _ids(recall_json(r, agent, entity="user:alice", hops=0), "facts") == [team["id"]]


def test_rule_23_3_2_1_traversal_never_passes_a_tombstoned_node(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:bob", "knows", ref="user:alice")
    add_fact(r, agent, "user:alice", "knows", ref="user:carol")
    add_fact(r, agent, "user:carol", "city", "Lyon")
    before = recall_json(r, agent, entity="user:bob", hops=2)
    assert "Lyon" in str(before["facts"])
    _tombstone(services, "user:alice")
    after = recall_json(r, agent, entity="user:bob", hops=3)
    assert after["total"] == 0
    assert after["edges"] == []


def test_rule_23_3_2_2_ref_facts_to_a_tombstoned_entity_are_dropped(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:bob", "knows", ref="user:alice")
    kept = add_fact(r, agent, "user:bob", "city", "Oslo")
    _tombstone(services, "user:alice")
    page = recall_json(r, agent, entity="user:bob", hops=0)
    assert _ids(page, "facts") == [kept["id"]]
    assert page["edges"] == []


def test_rule_23_3_2_3_card_about_a_tombstoned_entity_is_dropped(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_card(r, agent, "user:alice", "Alice prefers green tea")
    _tombstone(services, "user:alice")
    assert recall_json(r, agent, q="green tea")["total"] == 0


def test_rule_23_3_2_3_related_entity_entry_is_omitted(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    card = add_card(r, agent, "user:bob", "Bob plays chess", related=["user:alice", "user:carol"])
    _tombstone(services, "user:alice")
    page = recall_json(r, agent, entity="user:bob", hops=0)
    assert _ids(page, "cards") == [card["id"]]
    assert page["cards"][0]["related_entities"] == ["user:carol"]
    # Reached only through the tombstoned entity: not a candidate at all.
    assert recall_json(r, agent, entity="user:alice", hops=0)["total"] == 0


def test_rule_23_3_2_3_card_whose_text_names_a_tombstoned_entity_is_dropped(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:alice", "name", "Alice Quimby")
    add_fact(r, agent, "user:alice", "alias", "Ally")
    add_card(r, agent, "user:bob", "Bob had lunch with Alice Quimby")
    add_card(r, agent, "user:bob", "Bob and ally went hiking")
    kept = add_card(r, agent, "user:bob", "Bob met Alice Jones")  # another Alice
    _tombstone(services, "user:alice")
    assert _ids(recall_json(r, agent, entity="user:bob", hops=0), "cards") == [kept["id"]]
    # The node keeps keyed hashes of the alias words, never the words.
    with services.node.db.transaction(write=False) as tx:
        stored = str(tx.fetchall("SELECT token_hashes FROM tombstone_alias_tokens"))
    assert "quimby" not in stored.lower()
    assert "ally" not in stored.lower()


def test_rule_23_3_2_3_alias_added_after_the_tombstone_is_hashed_too(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:alice", "name", "Alice Quimby")
    before = add_card(r, agent, "user:bob", "Bob wrote to Zed Marlowe")
    kept = add_card(r, agent, "user:bob", "Bob met Zed")
    _tombstone(services, "user:alice")
    # The cache holds the tombstone's aliases (only "Alice Quimby") before the late alias.
    assert _ids(recall_json(r, agent, entity="user:bob", hops=0), "cards") == [
        before["id"],
        kept["id"],
    ]
    add_fact(r, agent, "user:alice", "alias", "Zed Marlowe")
    after = add_card(r, agent, "user:bob", "Marlowe, Zed: lunch at noon")
    page = recall_json(r, agent, entity="user:bob", hops=0)
    assert _ids(page, "cards") == [kept["id"]]
    assert after["id"] not in _ids(recall_json(r, agent, q="lunch"), "cards")
    # The late alias's value is forgotten with the entity; only keyed hashes of it are kept.
    with services.node.db.transaction(write=False) as tx:
        stored = str(tx.fetchall("SELECT token_hashes FROM tombstone_alias_tokens"))
        late = tx.fetchone(
            "SELECT COUNT(*) FROM facts f JOIN artifact_states s "
            "ON s.artifact_id = f.value_artifact_id WHERE f.attribute = 'alias'"
        )
    assert "marlowe" not in stored.lower()
    assert late is not None
    assert late[0] == 1


def test_rule_23_3_2_4_derived_from_a_tombstoned_fact_does_not_exist(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    source = add_fact(r, agent, "user:alice", "birthday", "1990-01-01")
    other = add_fact(r, agent, "user:bob", "birthday", "1991-02-02")
    derived = add_fact(
        r,
        agent,
        "team:x",
        "average_age",
        35,
        derived_from=[source["fact_hash"], other["fact_hash"]],
    )
    _tombstone(services, "user:alice")
    page = recall_json(r, agent, entity="team:x", hops=0)
    assert _ids(page, "facts") == [derived["id"]]
    assert page["facts"][0]["derived_from"] == [
        {"hash": source["fact_hash"], "exists": False},
        {"hash": other["fact_hash"], "exists": True},
    ]


def test_rule_23_3_3_totals_and_cursors_come_from_the_filtered_set(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    for n in range(4):
        add_fact(r, agent, "user:alice", f"note{n}", f"walnut {n}")
    for n in range(3):
        add_fact(r, agent, "user:bob", f"note{n}", f"walnut {n}")
    _tombstone(services, "user:alice")
    first = recall_json(r, agent, q="walnut", limit=2)
    assert first["total"] == 3
    second = recall_json(r, agent, q="walnut", limit=2, cursor=first["next_cursor"])
    assert second["total"] == 3
    assert second["next_cursor"] is None
    assert [f["rank"] for f in first["facts"] + second["facts"]] == [0, 1, 2]


def test_rule_23_3_3_revocation_re_exposes_what_was_suppressed(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:alice", "email", "alice@example.org")
    add_fact(r, agent, "user:bob", "knows", ref="user:alice")
    add_card(r, agent, "user:bob", "Bob plays chess", related=["user:alice"])
    before = recall_json(r, agent, entity="user:bob", hops=1)
    assert before["total"] == 3
    tomb = _tombstone(services, "user:alice", hold=True)
    during = recall_json(r, agent, entity="user:bob", hops=1)
    assert during["total"] == 1
    assert during["cards"][0]["related_entities"] == []
    services.forgetting.commit_due(force=True)  # a hold keeps the keys through epochs
    services.compliance.tombstones.revoke("admin", tomb, "court order")
    assert recall_json(r, agent, entity="user:bob", hops=1) == before


def test_revocation_does_not_re_expose_what_was_erased(
    services: NodeServices, agent: ApiKey
) -> None:
    r = services.recall
    add_fact(r, agent, "user:alice", "email", "alice@example.org")
    edge = add_fact(r, agent, "user:bob", "knows", ref="user:alice")
    tomb = _tombstone(services, "user:alice")
    services.forgetting.commit_due(force=True)
    services.compliance.tombstones.revoke("admin", tomb, "mistake")
    # Alice's own facts were erased (level >= 1); Bob's edge was only suppressed.
    assert recall_json(r, agent, entity="user:alice", hops=0)["total"] == 0
    assert _ids(recall_json(r, agent, entity="user:bob", hops=0), "facts") == [edge["id"]]


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now


def test_tombstone_cache_refreshes_within_60_seconds_and_own_tombstones_at_once(
    services: NodeServices, agent: ApiKey
) -> None:
    clock = _Clock()
    # Another process's recall service on the same store: it learns of a tombstone issued
    # elsewhere only by refreshing its cache.
    other = RecallService(
        services.node.db, services.node.vault, load_alias_key(services.node.home), clock=clock
    )
    add_card(services.recall, agent, "user:bob", "Bob met Alice", related=["user:alice"])
    query = make_query(entity="user:bob", hops=0)
    assert other.recall(agent, query).items[0]["related_entities"] == ["user:alice"]
    # Both caches are loaded before the tombstone is issued.
    assert services.recall.recall(agent, query).items[0]["related_entities"] == ["user:alice"]
    _tombstone(services, "user:alice")
    # Own service: at once.
    own = services.recall.recall(agent, query)
    assert own.items[0]["related_entities"] == []
    clock.now += timedelta(seconds=59)
    assert other.recall(agent, query).items[0]["related_entities"] == ["user:alice"]
    clock.now += timedelta(seconds=1)
    assert other.recall(agent, query).items[0]["related_entities"] == []


def test_received_tombstone_applies_at_once(services: NodeServices, agent: ApiKey) -> None:
    from oblivio.core.identifiers import format_time
    from oblivio.core.manifest import signer_uri
    from oblivio.core.tombstones import TOMBSTONE_PREFIX, sign_tombstone
    from oblivio.node.ids import new_record_id

    r = services.recall
    add_card(r, agent, "user:bob", "Bob met Alice", related=["user:alice"])
    cached = recall_json(r, agent, entity="user:bob", hops=0)  # loads the tombstone cache
    assert cached["cards"][0]["related_entities"] == ["user:alice"]
    org = services.compliance.org
    record = sign_tombstone(
        services.node.signing_key,
        record_id=new_record_id(TOMBSTONE_PREFIX),
        entity_uri="user:alice",
        scope="*",
        reason=None,
        signed_by=signer_uri(org, "admin"),
        created_at=format_time(datetime.now(UTC)),
        legal_hold=False,
    )
    services.compliance.tombstones.receive(record.to_dict(), "peer-1")
    page = recall_json(r, agent, entity="user:bob", hops=0)
    assert page["cards"][0]["related_entities"] == []
