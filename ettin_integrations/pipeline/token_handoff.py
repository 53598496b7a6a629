"""Token ids one model made, handed to the next model of a cascade that reads the same tokenizer.

The Ettin family shares one tokenizer, so when a small model has pruned a query's candidates the
large model that rescores the survivors needs no tokenizing of its own. A handoff lives for one
cascade call (a :class:`~ettin_integrations.pipeline.validation.ScoringRequest` carries it) and is
keyed by the tokenizer's fingerprint: ids made by one tokenizer are never given to another.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TokenHandoff"]


class TokenHandoff:
    """Per text, the ids a tokenizer made and the limit it made them under (``None``: the whole text).

    ``encode_documents`` returns ``limit + 1`` ids for a text longer than ``limit`` (the marker that
    it was longer) and every id otherwise, so ids made under one limit serve any smaller limit, and
    ids of a whole text serve every limit.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], tuple[Sequence[int], int | None]] = {}

    def lookup(self, fingerprint: str, text: str, limit: int | None) -> Sequence[int] | None:
        """The ids ``encode_documents(text, limit)`` would return, when known; else None."""
        entry = self._ids.get((fingerprint, text))
        if entry is None:
            return None
        ids, made_under = entry
        whole = made_under is None or len(ids) <= made_under
        if not whole and (limit is None or limit > made_under):  # type: ignore[operator]
            return None  # made from a prefix shorter than this limit needs
        return ids if limit is None or len(ids) <= limit + 1 else ids[: limit + 1]

    def record(self, fingerprint: str, text: str, limit: int | None, ids: Sequence[int]) -> None:
        """Keep ``ids`` (from ``encode_documents(text, limit)``) unless ids serving more limits are known."""
        key = (fingerprint, text)
        known = self._ids.get(key)
        if known is not None and (known[1] is None or (limit is not None and known[1] >= limit)):
            return
        self._ids[key] = (ids, limit)
