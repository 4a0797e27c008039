"""A recall query, its opaque cursor, and ranking (DESIGN.md §11 steps 1 and 4).

Pure: no I/O. Scores come from the filtered set only (seed 002 §23.3.3): BM25's document
count, document frequencies and average length are those of the candidates that passed the
scope and tombstone filters, so a suppressed document changes no other document's score.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from oblivio.core.canonical import JsonValue, canonical_json, parse_json
from oblivio.core.encoding import b64url_decode, b64url_encode
from oblivio.core.errors import InvalidInputError
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import format_time, parse_time
from oblivio.node.recall.model import (
    MAX_HOPS,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    MAX_TOKEN_BUDGET,
    CursorInvalidError,
    HopsOutOfRangeError,
    RecallInputError,
    TokenBudgetError,
    entity_uri,
    scope_list,
    word_tokens,
)

BM25_K1: Final = 1.2
BM25_B: Final = 0.75
DEFAULT_LIMIT: Final = 50
MAX_QUERY_TERMS: Final = 32
_CURSOR_VERSION: Final = 1


@dataclass(frozen=True)
class RecallQuery:
    """What a caller asks: an entity (with ``hops`` of ``ref`` traversal) and/or a text query,
    in some scopes, as of a time, within a token budget, one page at a time."""

    entity: str | None = None
    q: str | None = None
    hops: int = 1
    scopes: tuple[str, ...] | None = None
    as_of: str | None = None
    token_budget: int | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None

    @property
    def terms(self) -> tuple[str, ...]:
        """The distinct word tokens of ``q``, in order, at most ``MAX_QUERY_TERMS``."""
        if self.q is None:
            return ()
        return tuple(dict.fromkeys(word_tokens(self.q)))[:MAX_QUERY_TERMS]

    def fingerprint(self) -> str:
        """What a cursor is bound to: every parameter but the cursor, limit and budget."""
        body: dict[str, JsonValue] = {
            "entity": self.entity,
            "q": self.q,
            "hops": self.hops,
            "scopes": list(self.scopes) if self.scopes is not None else None,
            "as_of": self.as_of,
        }
        return sha256(b"oblivio/recall-cursor/v1" + canonical_json(body)).hex()[:32]


def make_query(
    *,
    entity: str | None = None,
    q: str | None = None,
    hops: int | None = None,
    scopes: Sequence[str] | None = None,
    as_of: str | None = None,
    token_budget: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> RecallQuery:
    """Validate a recall query. Raises RecallInputError (and its kinds) naming the problem."""
    if entity is None and (q is None or not q.strip()):
        raise RecallInputError("recall: name an entity, a text query q, or both")
    checked_entity = None if entity is None else entity_uri(entity, "entity")
    if q is not None and len(q) > MAX_QUERY_CHARS:
        raise RecallInputError(f"q: expected at most {MAX_QUERY_CHARS} characters")
    if q is not None and not word_tokens(q):
        raise RecallInputError("q: expected at least one word")
    chosen_hops = 1 if hops is None else hops
    if not 0 <= chosen_hops <= MAX_HOPS:
        raise HopsOutOfRangeError(f"hops: expected 0 to {MAX_HOPS}, got {chosen_hops}")
    if token_budget is not None and not 1 <= token_budget <= MAX_TOKEN_BUDGET:
        raise TokenBudgetError(
            f"token_budget: expected 1 to {MAX_TOKEN_BUDGET}, got {token_budget}"
        )
    chosen_limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= chosen_limit <= MAX_LIMIT:
        raise RecallInputError(f"limit: expected 1 to {MAX_LIMIT}, got {chosen_limit}")
    moment = None
    if as_of is not None:
        try:
            moment = format_time(parse_time(as_of))
        except Exception as e:
            raise RecallInputError(f"as_of: expected an RFC 3339 time, got {as_of!r}") from e
    query = RecallQuery(
        checked_entity,
        q,
        chosen_hops,
        scope_list(scopes),
        moment,
        token_budget,
        chosen_limit,
        cursor,
    )
    if cursor is not None:
        cursor_offset(query)
    return query


def encode_cursor(query: RecallQuery, offset: int) -> str:
    """The opaque cursor of the page starting at ``offset`` of the filtered ranked list."""
    body: dict[str, JsonValue] = {"v": _CURSOR_VERSION, "o": offset, "k": query.fingerprint()}
    return b64url_encode(canonical_json(body))


def cursor_offset(query: RecallQuery) -> int:
    """Where ``query.cursor`` starts (0 without one); raise CursorInvalidError for a cursor that
    is malformed or was issued for another query."""
    if query.cursor is None:
        return 0
    if len(query.cursor) > 200:
        raise CursorInvalidError("cursor: not a cursor this node issued")
    try:
        body = parse_json(b64url_decode(query.cursor))
    except (InvalidInputError, ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise CursorInvalidError("cursor: not a cursor this node issued") from e
    if (
        not isinstance(body, dict)
        or body.get("v") != _CURSOR_VERSION
        or body.get("k") != query.fingerprint()
    ):
        raise CursorInvalidError("cursor: not a cursor this node issued for this query")
    offset = body.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**31:
        raise CursorInvalidError("cursor: not a cursor this node issued")
    return offset


def bm25_scores(terms: Sequence[str], documents: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """BM25 (k1 = 1.2, b = 0.75) of each document for ``terms``, with the document count,
    document frequencies and average length taken from ``documents`` alone (the filtered
    candidates). Documents are token lists keyed by record id."""
    count = len(documents)
    if count == 0:
        return {}
    lengths = {key: len(tokens) for key, tokens in documents.items()}
    average = sum(lengths.values()) / count or 1.0
    wanted = set(terms)
    # Only the query's terms are counted (``list.count`` per term: queries hold few terms).
    frequencies = {
        key: {t: n for t in wanted if (n := tokens.count(t))} for key, tokens in documents.items()
    }
    scores: dict[str, float] = {}
    for term in terms:
        having = sum(1 for f in frequencies.values() if term in f)
        if having == 0:
            continue
        idf = math.log((count - having + 0.5) / (having + 0.5) + 1.0)
        for key, f in frequencies.items():
            tf = f.get(term, 0)
            if tf:
                norm = tf + BM25_K1 * (1 - BM25_B + BM25_B * lengths[key] / average)
                scores[key] = scores.get(key, 0.0) + idf * tf * (BM25_K1 + 1) / norm
    return {key: round(value, 6) for key, value in scores.items()}
