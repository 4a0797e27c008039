"""Token-budget packing (DESIGN.md §11 step 4) with a pluggable token counter.

A token counter is any ``Callable[[str], int]``; the default, ``approximate_tokens``, counts
word pieces and punctuation locally (no network, no model download). A deployment that wants
its model's exact count passes its own tokenizer's length function.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

TokenCounter = Callable[[str], int]

_PIECE = re.compile(r"[^\W_]{1,4}|[^\w\s]|_")
"""Runs of up to four letters or digits, and single punctuation marks: close to the token
counts of common BPE vocabularies for English text, and never lower than the word count."""

INSTRUCTION_HEADER: Final = "Relevant memory (facts and notes):"


def approximate_tokens(text: str) -> int:
    """A local, deterministic token estimate of ``text``."""
    return len(_PIECE.findall(text))


@dataclass(frozen=True)
class Page:
    """The items of one page (indexes into the ranked list) and where the next page starts."""

    taken: tuple[int, ...]
    skipped: tuple[int, ...]
    next_offset: int | None
    tokens: int


def pack_page(
    rendered: Callable[[int], str],
    total: int,
    *,
    offset: int,
    limit: int,
    budget: int | None,
    count: TokenCounter,
) -> Page:
    """Take ranked items from ``offset`` while the page holds fewer than ``limit`` and their
    rendered text fits ``budget``. An item that does not fit ends the page; one that alone
    exceeds the budget is skipped (listed in ``skipped``) so pagination always advances.
    ``rendered`` is called only for the items looked at."""
    taken: list[int] = []
    skipped: list[int] = []
    used = 0
    at = offset
    while at < total and len(taken) < limit:
        if budget is not None:
            cost = count(rendered(at))
            if cost > budget:
                skipped.append(at)
                at += 1
                continue
            if used + cost > budget:
                break
            used += cost
        taken.append(at)
        at += 1
    return Page(tuple(taken), tuple(skipped), at if at < total else None, used)


def pack_instruction(lines: Iterable[str], budget: int, count: TokenCounter) -> tuple[str, int]:
    """One text block: the header, then each line in rank order that still fits ``budget``
    (a line that does not fit is left out and the next ones are tried, until the budget is
    used up: ``lines`` may be lazy). Returns the block and how many lines it holds."""
    block = [INSTRUCTION_HEADER]
    used = count(INSTRUCTION_HEADER)
    if used > budget:
        return "", 0
    included = 0
    for line in lines:
        if used >= budget:
            break
        text = "- " + line
        cost = count(text)
        if used + cost <= budget:
            block.append(text)
            used += cost
            included += 1
    return ("\n".join(block) if included else ""), included
