"""The memory store (DESIGN.md §11): facts, memory cards, the entity graph, and recall that
answers as if the forgotten had never been there (seed 002 §23.3)."""

from oblivio.node.recall.service import RecallResult, RecallService, load_alias_key

__all__ = ["RecallResult", "RecallService", "load_alias_key"]
