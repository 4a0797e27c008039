"""The memory store's HTTP routes (DESIGN.md §11), included by ``http.create_app``.

``POST /v1/facts`` (one fact or ``{"facts": [...]}``), ``POST /v1/facts/{id}/retract``,
``POST /v1/cards``, ``GET /v1/recall`` (``X-Total-Count``), ``POST /v1/recall/instruction`` and
``GET /v1/subscribe`` (server-sent events through ``sse-starlette``, filtered at send time).
Admin and agent keys only; each key reads and writes the scopes it was given. Bad input is 400
with the codes of ``node/recall/model.py`` and stores nothing; a scope the key may not use is
403 ``recall_scope_forbidden``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from oblivio.core.identifiers import format_time
from oblivio.interfaces.http.common import AllServices, ForbiddenError, Reader
from oblivio.node.recall.model import (
    FactInvalidError,
    RecallInputError,
    ScopeNotPermittedError,
    parse_card,
    parse_fact,
    scope_list,
)
from oblivio.node.recall.query import make_query

T = TypeVar("T")

SUBSCRIBE_MAX_SECONDS = 300
SUBSCRIBE_POLL_SECONDS = 0.5
SUBSCRIBE_PING_SECONDS = 15

recall_routes = APIRouter()


class RecallScopeForbiddenError(ForbiddenError):
    """The caller's key may not read or write a scope it asked for: 403."""

    code = "recall_scope_forbidden"


def _scoped(work: Callable[[], T]) -> T:
    try:
        return work()
    except ScopeNotPermittedError as e:
        raise RecallScopeForbiddenError(str(e)) from e


def _scopes_param(scopes: str | None) -> list[str] | None:
    return None if scopes is None else [s.strip() for s in scopes.split(",")]


@recall_routes.post("/v1/facts", status_code=201, summary="Write facts (one or a batch)")
def post_facts(
    services: AllServices, key: Reader, body: Annotated[Any, Body()] = None
) -> dict[str, Any]:
    """A fact object, or ``{"facts": [...]}`` (at most 500, all or none). 201 with the new
    ids, hashes and times."""
    if isinstance(body, dict) and set(body) == {"facts"}:
        items = body["facts"]
        if not isinstance(items, list) or not items:
            raise FactInvalidError("facts: expected a non-empty list of facts")
    else:
        items = [body]
    facts = [parse_fact(item) for item in items]
    return {"facts": _scoped(lambda: services.recall.add_facts(key, facts))}


@recall_routes.post("/v1/facts/{fact_id}/retract", summary="Retract a fact (time travel keeps it)")
def post_retract(fact_id: str, services: AllServices, key: Reader) -> dict[str, Any]:
    """Append a retraction (ids and times only); 404 for a fact the key cannot see."""
    return _scoped(lambda: services.recall.retract_fact(key, fact_id))


@recall_routes.post("/v1/cards", status_code=201, summary="Write a memory card")
def post_card(
    services: AllServices, key: Reader, body: Annotated[Any, Body()] = None
) -> dict[str, Any]:
    """``{"about_entity", "related_entities"?, "text", "scope"?}``; 201 with its id."""
    card = parse_card(body)
    return _scoped(lambda: services.recall.add_card(key, card))


@recall_routes.get("/v1/recall", summary="Recall facts, cards and edges (seed 002 §23.3)")
def get_recall(
    *,
    services: AllServices,
    key: Reader,
    entity: str | None = None,
    q: str | None = None,
    hops: int | None = None,
    scopes: Annotated[str | None, Query(description="comma-separated scopes")] = None,
    as_of: str | None = None,
    token_budget: int | None = None,
    limit: int | None = None,
    cursor: str | None = None,
) -> JSONResponse:
    """One page of the filtered, ranked, packed result; ``X-Total-Count`` is the filtered
    total."""
    query = make_query(
        entity=entity,
        q=q,
        hops=hops,
        scopes=_scopes_param(scopes),
        as_of=as_of,
        token_budget=token_budget,
        limit=limit,
        cursor=cursor,
    )
    result = _scoped(lambda: services.recall.recall(key, query))
    return JSONResponse(result.to_dict(), headers={"X-Total-Count": str(result.total)})


@recall_routes.post("/v1/recall/instruction", summary="One packed text block for a prompt")
def post_instruction(
    services: AllServices, key: Reader, body: Annotated[Any, Body()] = None
) -> dict[str, Any]:
    """``{"entity"?, "q"?, "hops"?, "scopes"?, "as_of"?, "token_budget"}`` -> ``{"text",
    "tokens", "included", "total"}``."""
    if not isinstance(body, dict):
        raise RecallInputError("body: expected a JSON object")
    allowed = {"entity", "q", "hops", "scopes", "as_of", "token_budget"}
    if set(body) - allowed:
        raise RecallInputError(f"body: unknown fields {sorted(set(body) - allowed)}")
    if "token_budget" not in body:
        raise RecallInputError("token_budget: required")
    for name in ("hops", "token_budget"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise RecallInputError(f"{name}: expected an integer")
    for name in ("entity", "q", "as_of"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RecallInputError(f"{name}: expected a string")
    if body.get("scopes") is not None and not isinstance(body["scopes"], list):
        raise RecallInputError("scopes: expected a list of scopes")
    query = make_query(
        entity=body.get("entity"),
        q=body.get("q"),
        hops=body.get("hops"),
        scopes=body.get("scopes"),
        as_of=body.get("as_of"),
        token_budget=body["token_budget"],
    )
    return _scoped(lambda: services.recall.instruction(key, query))


# Left out of /openapi.json: a stream held open for ``seconds`` is not a request/response
# operation, and the schema fuzzer (tests/interfaces/test_http_fuzz.py) would hold each of its
# calls open that long. tests/interfaces/test_http_recall.py covers it.
@recall_routes.get(
    "/v1/subscribe",
    summary="New facts and cards as server-sent events",
    include_in_schema=False,
)
def get_subscribe(
    *,
    services: AllServices,
    key: Reader,
    entity: str | None = None,
    scopes: Annotated[str | None, Query(description="comma-separated scopes")] = None,
    after: str | None = None,
    seconds: Annotated[int, Query(ge=1, le=SUBSCRIBE_MAX_SECONDS)] = 30,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events ``fact`` and ``card`` (``id`` = the mark to resume from, sent back
    as ``Last-Event-ID``) for records written after ``after`` (default: now). Each event passes
    the scope and tombstone filter when its batch is read and the tombstone filter again just
    before it is sent, so a tombstone that arrives in between applies. The stream ends after
    ``seconds``; clients reconnect with the last id."""
    chosen = scope_list(_scopes_param(scopes))
    if entity is not None:
        make_query(entity=entity)  # validates the URI
    mark = last_event_id or after or format_time(datetime.now(UTC))
    _scoped(lambda: services.recall.readable_scopes(key, chosen))
    recall = services.recall

    async def stream() -> AsyncIterator[ServerSentEvent]:
        nonlocal mark
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        yield ServerSentEvent(comment="subscribed")
        while loop.time() < deadline:
            events, mark = await run_in_threadpool(recall.events_after, key, chosen, entity, mark)
            for event in events:
                sent = await run_in_threadpool(recall.deliverable, event)
                if sent is not None:
                    yield ServerSentEvent(
                        data=json.dumps(sent, sort_keys=True, separators=(",", ":")),
                        event=str(sent["kind"]),
                        id=f"{sent['created_at']}|{sent['id']}",
                    )
            await asyncio.sleep(SUBSCRIBE_POLL_SECONDS)

    return EventSourceResponse(stream(), ping=SUBSCRIBE_PING_SECONDS)
