"""Facts and cards as written (DESIGN.md §11): validation, fact hashes, cursors, packing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oblivio.core.canonical import canonical_json
from oblivio.core.hashing import sha256
from oblivio.node.recall.model import (
    MAX_LITERAL_BYTES,
    CursorInvalidError,
    FactInvalidError,
    FactTooLargeError,
    HopsOutOfRangeError,
    RecallEntityUriError,
    RecallInputError,
    RecallScopeError,
    TokenBudgetError,
    parse_card,
    parse_fact,
    word_tokens,
)
from oblivio.node.recall.packing import approximate_tokens, pack_instruction, pack_page
from oblivio.node.recall.query import bm25_scores, cursor_offset, encode_cursor, make_query


def _fact(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "entity_uri": "user:alice",
        "attribute": "email",
        "value": {"literal": "alice@example.org"},
        "scope": "team",
    }
    body.update(changes)
    return body


def test_fact_hash_is_the_named_prefix_over_jcs_without_id_and_times() -> None:
    fact = parse_fact(_fact(valid_from="2026-01-01T00:00:00Z"))
    expected = sha256(
        b"oblivio/fact/v1"
        + canonical_json(
            {
                "entity_uri": "user:alice",
                "attribute": "email",
                "value": {"literal": "alice@example.org"},
                "scope": "team",
                "derived_from": [],
            }
        )
    ).hex()
    assert fact.fact_hash() == expected
    assert fact.valid_from == "2026-01-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"entity_uri": "user:*"}, RecallEntityUriError),
        ({"entity_uri": "nocolon"}, RecallEntityUriError),
        ({"attribute": "Email"}, FactInvalidError),
        ({"value": {"literal": 1, "ref": "user:bob"}}, FactInvalidError),
        ({"value": {"ref": "user:b*"}}, RecallEntityUriError),
        ({"value": "plain"}, FactInvalidError),
        ({"scope": "galaxy"}, RecallScopeError),
        ({"derived_from": ["abc"]}, FactInvalidError),
        ({"valid_from": "yesterday"}, FactInvalidError),
        ({"extra": 1}, FactInvalidError),
        ({"value": {"literal": "x" * MAX_LITERAL_BYTES}}, FactTooLargeError),
    ],
)
def test_bad_facts_are_refused_with_their_code(
    changes: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_fact(_fact(**changes))


def test_bad_cards_are_refused() -> None:
    with pytest.raises(FactInvalidError):
        parse_card({"about_entity": "user:a", "text": "  "})
    with pytest.raises(FactInvalidError):
        parse_card({"about_entity": "user:a", "text": "t", "related_entities": ["user:b"] * 2})
    with pytest.raises(RecallEntityUriError):
        parse_card({"about_entity": "user:a", "text": "t", "related_entities": ["*"]})


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({}, RecallInputError),
        ({"entity": "user:a", "hops": 4}, HopsOutOfRangeError),
        ({"entity": "user:a", "hops": -1}, HopsOutOfRangeError),
        ({"entity": "user:a", "token_budget": -5}, TokenBudgetError),
        ({"entity": "user:a", "token_budget": 0}, TokenBudgetError),
        ({"entity": "user:a", "token_budget": 10**9}, TokenBudgetError),
        ({"entity": "user:a", "scopes": ["team", "galaxy"]}, RecallScopeError),
        ({"entity": "user:*"}, RecallEntityUriError),
        ({"entity": "user:a", "cursor": "!!"}, CursorInvalidError),
        ({"q": "..."}, RecallInputError),
    ],
)
def test_bad_queries_are_refused_with_their_code(
    query: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        make_query(**query)  # type: ignore[arg-type]


def test_a_cursor_works_only_for_its_own_query() -> None:
    query = make_query(entity="user:a", hops=2)
    cursor = encode_cursor(query, 7)
    assert cursor_offset(make_query(entity="user:a", hops=2, cursor=cursor)) == 7
    with pytest.raises(CursorInvalidError):
        make_query(entity="user:a", hops=1, cursor=cursor)


@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_cursor_round_trips(offset: int) -> None:
    query = make_query(q="tea")
    assert cursor_offset(make_query(q="tea", cursor=encode_cursor(query, offset))) == offset


@given(st.binary(max_size=80))
def test_arbitrary_cursor_bytes_are_refused_or_parsed_never_crash(raw: bytes) -> None:
    from oblivio.core.encoding import b64url_encode

    with contextlib.suppress(CursorInvalidError):
        make_query(q="tea", cursor=b64url_encode(raw))


def test_word_tokens_fold_case_and_split_on_punctuation() -> None:
    assert word_tokens("Alice-Smith, ÉCOLE_42!") == ["alice", "smith", "école", "42"]


def test_bm25_uses_only_the_documents_it_is_given() -> None:
    docs = {"a": ["tea", "tea", "milk"], "b": ["tea", "coffee", "cake", "pie"]}
    alone = bm25_scores(["tea"], docs)
    assert alone["a"] > alone["b"] > 0
    # Adding a document changes the others' scores: the filter must run before ranking.
    assert bm25_scores(["tea"], {**docs, "c": ["tea"]})["a"] != alone["a"]


def test_pack_page_respects_limit_and_budget_and_skips_what_never_fits() -> None:
    lines = ["one two", "three " * 50, "four", "five six"]
    page = pack_page(
        lambda i: lines[i], len(lines), offset=0, limit=10, budget=6, count=approximate_tokens
    )
    assert page.taken == (0, 2, 3)
    assert page.skipped == (1,)
    assert page.next_offset is None
    limited = pack_page(
        lambda i: lines[i], len(lines), offset=0, limit=1, budget=None, count=approximate_tokens
    )
    assert limited.taken == (0,)
    assert limited.next_offset == 1


def test_instruction_stays_within_budget() -> None:
    lines = ["alpha beta", "gamma " * 40, "delta"]
    text, included = pack_instruction(lines, 20, approximate_tokens)
    assert approximate_tokens(text) <= 20
    assert included == 2
    assert "gamma" not in text
