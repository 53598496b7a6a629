"""The scoring pipeline, in the order a call travels it.

1. **validate** (``validation.py``): every public method of a reranker checks its input first
   (``contract.BaseReranker``), before anything is queued.
2. **tokenize** (``tokenization.py``): queries once each, documents only as far as the window can
   use; a document-token cache (``token_cache.py``) on CUDA.
3. **window** (``windows.py``): a document becomes one pair cut to fit, or, in chunk mode, one pair
   per overlapping window.
4. **plan batches** (``batching.py``): pairs sorted by length and cut into batches by a token budget.
5. **forward** (``forward.py``): each batch through the model, padded or packed, with CUDA
   out-of-memory back-off.
6. **aggregate** (``windows.aggregate``): window scores become one document score.
7. **normalize** (``normalization.py``): raw logits, or their sigmoid, per the options.
8. **rank** (``results.ranked``): the contract sorts and cuts for ``rank`` / ``rank_many``.

Steps 2-7 run in :meth:`ScoringPipeline.run` below. Tokenizing overlaps the model: the next wave
of documents is tokenized while the current one is scored (``waves.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import tracing
from ..config import EngineConfig, check_chunk_overlap
from ..model.loading import LoadedModel
from ..model.placement import default_batch_tokens
from ..normalization import Normalization
from ..results import RequestCost, ScoreDetails
from .forward import BatchedForward
from .timings import StageTimes, progress_bar
from .token_cache import TokenCache
from .token_handoff import TokenHandoff
from .tokenization import PairTokenizer
from .waves import overlapped, wave_spans
from .windows import DocumentWindows, Unit, aggregate

__all__ = ["DEFAULT_CUDA_CACHE_TOKENS", "HEAVY_WINDOWS", "Batch", "ScoringPipeline"]

logger = logging.getLogger("ettin_integrations")

#: Token cache size when ``token_cache_tokens`` is None on CUDA (about 4 MB of ids, plus the texts' keys).
DEFAULT_CUDA_CACHE_TOKENS = 1_000_000
#: A chunked document with more windows than this is reported: its cost is that many pairs.
HEAVY_WINDOWS = 256


@dataclass(frozen=True)
class Batch:
    """Validated work for one pass: queries, their documents, and a token cap per query (None: no cap).

    Several callers' requests merge into one batch (cross-request micro-batching); caps stay per query.
    """

    queries: list[str]
    documents_per_query: list[list[str]]
    caps: list[int | None]
    #: Trace contexts of the requests this batch serves (empty without OpenTelemetry): the pass span's
    #: parent is the first, and it links the others.
    traces: tuple[Any, ...] = ()
    #: Per query, a cascade's token handoff (empty when no query has one): ids earlier stages made.
    handoffs: tuple[TokenHandoff | None, ...] = ()

    def query_handoffs(self) -> tuple[TokenHandoff | None, ...]:
        """One entry per query (None where there is no handoff), for merging batches."""
        return self.handoffs or (None,) * len(self.queries)


@dataclass
class _Scored:
    """Window scores and truncation flags per flat document, filled in as waves are scored."""

    windows: list[list[float]]
    truncated: list[bool] = field(default_factory=list)

    def add(self, units: list[Unit], scores: list[float]) -> None:
        for unit, score in zip(units, scores):
            self.windows[unit.doc].append(score)
            self.truncated[unit.doc] |= unit.pair.truncated


class ScoringPipeline:
    """Steps 2-7 for one loaded model and one set of options (see the module docstring)."""

    def __init__(
        self,
        pairs: PairTokenizer,
        windows: DocumentWindows,
        forward: BatchedForward,
        *,
        truncate: bool,
        aggregate: str,
        normalization: Normalization,
        timings: StageTimes,
    ) -> None:
        self.pairs, self.windows, self.forward = pairs, windows, forward
        self.truncate, self.aggregate, self.normalization, self.timings = truncate, aggregate, normalization, timings

    @classmethod
    def build(cls, loaded: LoadedModel, config: EngineConfig, timings: StageTimes) -> ScoringPipeline:
        """The stages for ``loaded`` under a resolved ``config`` (window size, cache, batch budget)."""
        max_length = min(config.max_length, loaded.max_length) if config.max_length else loaded.max_length
        cache_tokens = config.token_cache_tokens
        if cache_tokens is None:
            cache_tokens = DEFAULT_CUDA_CACHE_TOKENS if loaded.device.type == "cuda" else 0
        pairs = PairTokenizer(
            loaded.tokenizer,
            max_length,
            config.keep_query_tokens,
            lowercase=loaded.lowercase,
            special_tokens_as_text=config.special_tokens_as_text,
            cache=TokenCache(cache_tokens) if cache_tokens else None,
        )
        chunk = config.long_documents == "chunk"
        if chunk:
            largest = min(config.chunk_tokens or pairs.text_budget, pairs.text_budget - 1)
            check_chunk_overlap(config.chunk_overlap, largest, f"{largest} tokens at max_length={max_length}")
        budget = config.batch_tokens or default_batch_tokens(loaded.device)
        return cls(
            pairs,
            DocumentWindows(pairs, chunk, config.chunk_tokens, config.chunk_overlap),
            BatchedForward(loaded, budget, timings, share_cores=config.num_threads is None),
            truncate=not chunk,
            aggregate=config.chunk_aggregate,
            normalization=Normalization.from_options(config.engine_options()),
            timings=timings,
        )

    @property
    def max_length(self) -> int:
        return self.pairs.max_length

    def run(
        self, batch: Batch, show_progress_bar: bool = False, stop: Callable[[], bool] | None = None
    ) -> list[ScoreDetails]:
        """One :class:`ScoreDetails` per query of ``batch``, in order; raises ``Cancelled`` at the next
        forward batch once ``stop()`` is true (every caller of the pass has gone)."""
        if not batch.traces:
            return self._run(batch, show_progress_bar, stop)
        before = self.timings.snapshot()
        with tracing.span("ettin.pass", parent=batch.traces[0], links=batch.traces[1:]) as span:
            results = self._run(batch, show_progress_bar, stop, span)
            after = self.timings.snapshot()
            tracing.attach_attributes(span, {
                "ettin.pass.requests": len(batch.traces),
                "ettin.pass.queries": len(batch.queries),
                "ettin.pass.tokenize_seconds": after["tokenize"] - before["tokenize"],
                "ettin.pass.forward_seconds": after["forward"] - before["forward"],
            })  # fmt: skip
            return results

    def _run(
        self, batch: Batch, show_progress_bar: bool, stop: Callable[[], bool] | None, span: Any = None
    ) -> list[ScoreDetails]:
        flat = [doc for docs in batch.documents_per_query for doc in docs]
        if not flat:
            return [ScoreDetails([], [], [], []) for _ in batch.queries]
        owner = [q for q, docs in enumerate(batch.documents_per_query) for _ in docs]
        handoffs = batch.handoffs if any(h is not None for h in batch.handoffs) else None
        with self.timings.stage("tokenize"):
            query_ids = self.pairs.encode_documents(batch.queries, self.pairs.text_budget, handoffs)
        scored = _Scored([[] for _ in flat], [False] * len(flat))
        tokens = pairs = 0
        # Nothing past the window can reach the model in truncate mode: tokenize only that much.
        limit = self.pairs.text_budget if self.truncate else None

        def tokenize_and_window(start: int, end: int) -> list[Unit]:
            with self.timings.stage("tokenize"):
                units: list[Unit] = []
                wave_handoffs = None if handoffs is None else [handoffs[owner[d]] for d in range(start, end)]
                for doc, ids in enumerate(self.pairs.encode_documents(flat[start:end], limit, wave_handoffs), start):
                    cap = batch.caps[owner[doc]]
                    if cap is not None and len(ids) > cap:
                        ids, scored.truncated[doc] = ids[:cap], True
                    units.extend(self.windows.units(query_ids[owner[doc]], ids, doc))
                return units

        with (
            progress_bar(len(flat), show_progress_bar, "doc") as bar,
            overlapped(tokenize_and_window, wave_spans(len(flat))) as waves,
        ):
            for units in waves:
                scored.add(units, self.forward([u.pair for u in units], stop))  # plan batches + forward
                bar.update(len({u.doc for u in units}))
                if span is not None:
                    tokens += sum(len(u.pair.input_ids) for u in units)
                    pairs += len(units)
        raw = [aggregate(w, self.aggregate) for w in scored.windows]
        tracing.attach_attributes(span, {
            "gen_ai.usage.input_tokens": tokens,
            "ettin.pass.pairs": pairs,
            "ettin.pass.documents": len(flat),
            "ettin.pass.truncated": sum(scored.truncated),
        })  # fmt: skip
        self._report(scored)
        return self._per_query(batch, raw, scored)

    def document_cap_for_windows(self, query: str, windows: int) -> int | None:
        """The ``max_document_tokens`` that scores a long document in at most ``windows`` windows (chunk mode)."""
        query_ids = self.pairs.encode_documents([query], self.pairs.text_budget)[0]
        return self.windows.cap_for_windows(len(query_ids), windows)

    def cost(self, query: str, documents: list[str], cap: int | None = None) -> RequestCost:
        """Tokens and pairs scoring ``documents`` would take (tokenizing only, no model work)."""
        query_ids = self.pairs.encode_documents([query], self.pairs.text_budget)[0]
        limit = self.pairs.text_budget if self.truncate else None
        tokens = pairs = 0
        truncated = []
        for doc, ids in enumerate(self.pairs.encode_documents(documents, limit)):
            cut = cap is not None and len(ids) > cap
            units = self.windows.units(query_ids, ids[:cap] if cut else ids, doc)
            tokens += sum(len(u.pair.input_ids) for u in units)
            pairs += len(units)
            truncated.append(cut or any(u.pair.truncated for u in units))
        return RequestCost(tokens, pairs, truncated)

    def _per_query(self, batch: Batch, raw: list[float], scored: _Scored) -> list[ScoreDetails]:
        results, start = [], 0
        for docs in batch.documents_per_query:
            end = start + len(docs)
            windows = [len(w) for w in scored.windows[start:end]]
            results.append(self.normalization.details(raw[start:end], scored.truncated[start:end], windows))
            start = end
        return results

    def _report(self, scored: _Scored) -> None:
        heavy = [len(w) for w in scored.windows if len(w) > HEAVY_WINDOWS]
        if heavy:
            logger.warning(
                "Chunked %d very long document(s) into %d windows (up to %d for one): each window is a full "
                "forward pass. Split such documents upstream, or use long_documents='truncate'.",
                len(heavy),
                sum(heavy),
                max(heavy),
            )
        if any(scored.truncated):
            logger.info(
                "Truncated %d of %d pairs to max_length=%d (documents cut first).",
                sum(scored.truncated),
                len(scored.truncated),
                self.max_length,
            )
