"""The memory store's records (DESIGN.md §11): facts, memory cards, and their validation.

Pure: no I/O, no clock. A fact's value and a card's text are stored as artifacts (encrypted,
forgettable); what is here is what the node keeps in clear beside them (entity URIs,
attributes, scopes, times, hashes) and the rules input must meet before anything is stored.

Errors (all ``InvalidInputError``, HTTP 400, nothing stored)::

    RecallInputError              recall_invalid_input
    ├── FactInvalidError          fact_invalid
    ├── FactTooLargeError         fact_too_large
    ├── RecallScopeError          recall_scope_unknown
    ├── HopsOutOfRangeError       recall_hops_out_of_range
    ├── TokenBudgetError          recall_token_budget_invalid
    ├── CursorInvalidError        recall_cursor_invalid
    └── RecallEntityUriError      recall_entity_uri_invalid
    ScopeNotPermittedError        recall_scope_forbidden (403: the key may not use that scope)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from oblivio.core.canonical import JsonValue, canonical_json
from oblivio.core.errors import AccessDeniedError, InvalidEntityUriError, InvalidInputError
from oblivio.core.hashing import sha256
from oblivio.core.identifiers import FACT_SCOPES, format_time, parse_time, validate_entity_uri

FACT_HASH_PREFIX: Final = b"oblivio/fact/v1"
"""DESIGN.md §11: ``fact_hash = H("oblivio/fact/v1" || JCS(fact without id and times))``."""
ALIAS_TOKEN_PREFIX: Final = b"oblivio/alias-token/v1"
"""Domain of the keyed hashes of alias word tokens kept beside a tombstone."""

MAX_HOPS: Final = 3
MAX_LITERAL_BYTES: Final = 16 * 1024
"""A fact's literal value, canonical JSON."""
MAX_CARD_TEXT_BYTES: Final = 32 * 1024
MAX_RELATED_ENTITIES: Final = 64
MAX_DERIVED_FROM: Final = 64
MAX_FACTS_PER_BATCH: Final = 500
MAX_TOKEN_BUDGET: Final = 1_000_000
MAX_LIMIT: Final = 500
MAX_QUERY_CHARS: Final = 1000
MAX_TOKEN_CHARS: Final = 64
"""Longer word tokens are cut to this length before indexing and matching."""
ALIAS_ATTRIBUTES: Final = ("name", "alias")
"""The facts whose literal text names an entity (DESIGN.md §11 entity aliases)."""

_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_HASH = re.compile(r"[0-9a-f]{64}")
_WORD = re.compile(r"[^\W_]+")
_FACT_FIELDS = ("entity_uri", "attribute", "value", "scope", "derived_from", "valid_from")


class RecallInputError(InvalidInputError):
    """Bad input to the memory store; nothing was stored."""

    code = "recall_invalid_input"


class FactInvalidError(RecallInputError):
    """A fact or card that does not meet DESIGN.md §11."""

    code = "fact_invalid"


class FactTooLargeError(RecallInputError):
    """A literal value, card text or batch over its size limit."""

    code = "fact_too_large"


class RecallScopeError(RecallInputError):
    """A scope that is not one of local, team, company, public."""

    code = "recall_scope_unknown"


class HopsOutOfRangeError(RecallInputError):
    """``hops`` outside 0..3."""

    code = "recall_hops_out_of_range"


class TokenBudgetError(RecallInputError):
    """A token budget that is negative, zero or over ``MAX_TOKEN_BUDGET``."""

    code = "recall_token_budget_invalid"


class CursorInvalidError(RecallInputError):
    """A cursor this node did not issue for this query."""

    code = "recall_cursor_invalid"


class RecallEntityUriError(RecallInputError, InvalidEntityUriError):
    """An entity URI that is not ``namespace:local-part`` (wildcards included)."""

    code = "recall_entity_uri_invalid"


class ScopeNotPermittedError(AccessDeniedError):
    """The caller's key may not read or write that scope: 403."""

    code = "recall_scope_forbidden"


RecordKind = Literal["fact", "card"]


@dataclass(frozen=True)
class FactInput:
    """A fact as written, validated: exactly one of ``literal`` / ``ref`` is meaningful."""

    entity_uri: str
    attribute: str
    value: Mapping[str, JsonValue]
    scope: str
    derived_from: tuple[str, ...]
    valid_from: str | None

    @property
    def ref(self) -> str | None:
        """The entity this fact points to, when it is an edge of the graph."""
        ref = self.value.get("ref")
        return ref if isinstance(ref, str) else None

    def content(self) -> dict[str, JsonValue]:
        """The fact without id and times: what ``fact_hash`` covers."""
        return {
            "entity_uri": self.entity_uri,
            "attribute": self.attribute,
            "value": dict(self.value),
            "scope": self.scope,
            "derived_from": list(self.derived_from),
        }

    def fact_hash(self) -> str:
        """``H("oblivio/fact/v1" || JCS(fact without id and times))`` in hex."""
        return sha256(FACT_HASH_PREFIX + canonical_json(self.content())).hex()

    def value_bytes(self) -> bytes:
        """The artifact payload: the value's canonical JSON."""
        return canonical_json(dict(self.value))


@dataclass(frozen=True)
class CardInput:
    """A memory card as written, validated."""

    about_entity: str
    related_entities: tuple[str, ...]
    text: str
    scope: str


def entity_uri(value: object, what: str = "entity_uri") -> str:
    """An entity URI of DESIGN.md §3 (no wildcards); raise RecallEntityUriError."""
    try:
        return validate_entity_uri(value)
    except InvalidEntityUriError as e:
        raise RecallEntityUriError(f"{what}: {e}") from e


def fact_scope(value: object) -> str:
    """One of the four fact scopes; raise RecallScopeError."""
    if not isinstance(value, str) or value not in FACT_SCOPES:
        raise RecallScopeError(f"scope: expected one of {', '.join(FACT_SCOPES)}, got {value!r}")
    return value


def scope_list(values: Sequence[object] | None) -> tuple[str, ...] | None:
    """A list of fact scopes in canonical order (None stays None); raise RecallScopeError."""
    if values is None:
        return None
    chosen = {fact_scope(v) for v in values}
    if not chosen:
        raise RecallScopeError("scopes: expected at least one scope")
    return tuple(s for s in FACT_SCOPES if s in chosen)


def _time(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FactInvalidError(f"{what}: expected an RFC 3339 time, got {value!r}")
    try:
        return format_time(parse_time(value))
    except (InvalidInputError, ValueError) as e:
        raise FactInvalidError(f"{what}: expected an RFC 3339 time, got {value!r}") from e


def parse_fact(data: object) -> FactInput:
    """Validate one fact as sent: ``{"entity_uri", "attribute", "value": {"literal": JSON} |
    {"ref": URI}, "scope"?, "derived_from"?, "valid_from"?}``.

    Raises FactInvalidError, FactTooLargeError, RecallEntityUriError or RecallScopeError.
    """
    if not isinstance(data, Mapping):
        raise FactInvalidError("fact: expected a JSON object")
    unknown = set(data) - {
        "entity_uri",
        "attribute",
        "value",
        "scope",
        "derived_from",
        "valid_from",
    }
    if unknown:
        raise FactInvalidError(f"fact: unknown fields {sorted(unknown)}")
    uri = entity_uri(data.get("entity_uri"))
    attribute = data.get("attribute")
    if not isinstance(attribute, str) or not _ATTRIBUTE.fullmatch(attribute):
        raise FactInvalidError(f"attribute: expected [a-z][a-z0-9_.-]{{0,63}}, got {attribute!r}")
    value = data.get("value")
    if not isinstance(value, Mapping) or len(value) != 1 or not {"literal", "ref"} & set(value):
        raise FactInvalidError('value: expected {"literal": JSON} or {"ref": entity_uri}')
    checked: dict[str, JsonValue]
    if "ref" in value:
        checked = {"ref": entity_uri(value["ref"], "value.ref")}
    else:
        try:
            encoded = canonical_json(value["literal"])
        except Exception as e:
            raise FactInvalidError(f"value.literal: not canonical JSON: {e}") from e
        if len(encoded) > MAX_LITERAL_BYTES:
            raise FactTooLargeError(
                f"value.literal: expected at most {MAX_LITERAL_BYTES} bytes canonical, "
                f"got {len(encoded)}"
            )
        checked = {"literal": value["literal"]}
    derived = data.get("derived_from", [])
    if not isinstance(derived, list) or len(derived) > MAX_DERIVED_FROM:
        raise FactInvalidError(
            f"derived_from: expected a list of at most {MAX_DERIVED_FROM} fact hashes"
        )
    for item in derived:
        if not isinstance(item, str) or not _HASH.fullmatch(item):
            raise FactInvalidError(f"derived_from: expected 64-hex fact hashes, got {item!r}")
    return FactInput(
        uri,
        attribute,
        checked,
        fact_scope(data.get("scope", "local")),
        tuple(derived),
        _time(data.get("valid_from"), "valid_from"),
    )


def parse_card(data: object) -> CardInput:
    """Validate one memory card: ``{"about_entity", "related_entities"?, "text", "scope"?}``.

    Raises FactInvalidError, FactTooLargeError, RecallEntityUriError or RecallScopeError.
    """
    if not isinstance(data, Mapping):
        raise FactInvalidError("card: expected a JSON object")
    unknown = set(data) - {"about_entity", "related_entities", "text", "scope"}
    if unknown:
        raise FactInvalidError(f"card: unknown fields {sorted(unknown)}")
    about = entity_uri(data.get("about_entity"), "about_entity")
    related = data.get("related_entities", [])
    if not isinstance(related, list) or len(related) > MAX_RELATED_ENTITIES:
        raise FactInvalidError(
            f"related_entities: expected a list of at most {MAX_RELATED_ENTITIES} entity URIs"
        )
    related_uris = tuple(entity_uri(r, "related_entities") for r in related)
    if len(set(related_uris)) != len(related_uris):
        raise FactInvalidError("related_entities: an entity is listed twice")
    text = data.get("text")
    if not isinstance(text, str) or not text.strip():
        raise FactInvalidError("text: expected a non-empty string")
    if len(text.encode("utf-8")) > MAX_CARD_TEXT_BYTES:
        raise FactTooLargeError(f"text: expected at most {MAX_CARD_TEXT_BYTES} bytes UTF-8")
    return CardInput(about, related_uris, text, fact_scope(data.get("scope", "local")))


def word_tokens(text: str) -> list[str]:
    """The word tokens of a text, as indexed and matched: NFKC, case-folded runs of letters
    and digits, each cut to ``MAX_TOKEN_CHARS``."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return [t[:MAX_TOKEN_CHARS] for t in _WORD.findall(folded)]


def literal_text(value: JsonValue) -> str:
    """The words of a literal value: its strings and numbers, in order (keys included)."""
    parts: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, bool) or item is None:
            return
        elif isinstance(item, int | float):
            parts.append(str(item))
        elif isinstance(item, list):
            for element in item:
                walk(element)
        elif isinstance(item, dict):
            for key, element in item.items():
                parts.append(str(key))
                walk(element)

    walk(value)
    return " ".join(parts)
