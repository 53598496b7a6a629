"""The reranking engine: the public API, composing loading, tokenization, windows and batched forwards."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import DEFAULT_MODEL, EngineConfig, options_docstring
from .results import RankResult, ScoreDetails, ranked, score_pairs_by_query
from .runtime import forking, shared
from .runtime.forward import BatchedForward
from .runtime.loading import LoadedModel, get_loaded_model
from .runtime.microbatch import MicroBatcher
from .runtime.normalization import normalize_score
from .runtime.placement import default_batch_tokens
from .runtime.timings import StageTimes
from .runtime.token_cache import TokenCache
from .runtime.tokenization import PairTokenizer
from .runtime.validation import (
    check_documents,
    check_many,
    check_positive,
    check_query,
    check_threshold,
    check_top_n,
)
from .runtime.windows import DocumentWindows, Unit, aggregate

__all__ = ["DEFAULT_MODEL", "EttinReranker"]

logger = logging.getLogger("ettin_integrations")

#: Token cache size when ``token_cache_tokens`` is None on CUDA (about 4 MB of ids, plus the texts' keys).
DEFAULT_CUDA_CACHE_TOKENS = 1_000_000
#: Documents tokenized per wave: while the model scores one wave, a worker thread tokenizes the next.
WAVE_DOCUMENTS = 2048
#: One caller's request as the micro-batcher carries it: queries, their documents, per-query token caps.
Payload = tuple[list[str], list[list[str]], list["int | None"]]
#: A chunked document with more windows than this is reported: its cost is that many pairs.
HEAVY_WINDOWS = 256


class EttinReranker:
    """Scores (query, document) pairs with an Ettin cross-encoder, exactly like ``CrossEncoder.predict``.

    The model is loaded once per process (engines with the same load options share it), placed on
    the best device and dtype, and driven with length-sorted batches capped by a token budget.
    Construction loads the model; use :func:`ettin_integrations.get_reranker` to share one engine
    per configuration.

    Example::

        from ettin_integrations import EttinReranker

        reranker = EttinReranker("cross-encoder/ettin-reranker-17m-v1", max_length=512)
        for hit in reranker.rank("Who wrote Hamlet?", ["Hamlet is a play by Shakespeare.", "Paris is in France."]):
            print(hit.index, hit.score)

    Args:
        model: Hub id or local directory of a sentence-transformers CrossEncoder (default: the 17m Ettin).
        config: A ready :class:`~ettin_integrations.config.EngineConfig` instead of ``model`` and options.
        **options: Any engine option (unknown names raise ``TypeError`` naming the closest option):
    """

    __doc__ = (__doc__ or "") + "\n" + options_docstring("            ") + "\n"

    def __init__(self, model: str | None = None, *, config: EngineConfig | None = None, **options: Any) -> None:
        if config is not None:
            if model is not None or options:
                raise TypeError("Pass either config= or model and options, not both.")
            if not isinstance(config, EngineConfig):
                raise TypeError(f"config must be an EngineConfig, got {type(config).__name__}.")
        else:
            config = EngineConfig.create(model=DEFAULT_MODEL if model is None else model, **options)
        self._config = config.resolved()
        # Pickles ship the options as given ("auto" stays "auto": another process picks its own device).
        self._given = config.model_copy(update={"model": self._config.model})
        if self._config.num_threads is not None:
            threads = self._config.num_threads
            if forking.in_forked_child and threads > 1:
                # More than one thread in a forked child hangs in torch's thread pool (see forking.py).
                logger.warning("num_threads=%d ignored in a forked worker: torch runs single-threaded there.", threads)
                threads = 1
            torch.set_num_threads(threads)
        self._loaded: LoadedModel = get_loaded_model(self._config)
        cfg = self._config
        self._max_length = min(cfg.max_length, self._loaded.max_length) if cfg.max_length else self._loaded.max_length
        cache_tokens = cfg.token_cache_tokens
        if cache_tokens is None:
            cache_tokens = DEFAULT_CUDA_CACHE_TOKENS if self._loaded.device.type == "cuda" else 0
        self._pairs = PairTokenizer(
            self._loaded.tokenizer,
            self._max_length,
            cfg.keep_query_tokens,
            lowercase=self._loaded.lowercase,
            special_tokens_as_text=cfg.special_tokens_as_text,
            cache=TokenCache(cache_tokens) if cache_tokens else None,
        )
        largest_window = min(cfg.chunk_tokens or self._pairs.text_budget, self._pairs.text_budget - 1)
        if cfg.long_documents == "chunk" and cfg.chunk_overlap is not None and cfg.chunk_overlap >= largest_window:
            raise ValueError(
                f"chunk_overlap={cfg.chunk_overlap} must be smaller than the window ({largest_window} tokens at "
                f"max_length={self._max_length}), or consecutive windows would repeat each other."
            )
        self._windows = DocumentWindows(self._pairs, cfg.long_documents == "chunk", cfg.chunk_tokens, cfg.chunk_overlap)
        self._timings = StageTimes()
        budget = cfg.batch_tokens or default_batch_tokens(self._loaded.device)
        self._forward = BatchedForward(self._loaded, budget, self._timings)
        self._batcher: MicroBatcher[list[ScoreDetails]] = MicroBatcher(self._score_merged, wait_ms=cfg.batch_wait_ms)

    @classmethod
    def shared(cls, config: EngineConfig) -> EttinReranker:
        """The process-wide engine for ``config``, created on first use (see :func:`get_reranker`).

        Example::

            a = EttinReranker.shared(EngineConfig.create(model="/models/ettin-17m"))
            assert a is EttinReranker.shared(EngineConfig.create(model="/models/ettin-17m/"))
        """
        resolved = config.resolved()
        return shared.engines.get_or_create(resolved.key(), lambda: cls(config=resolved))

    @classmethod
    def _from_options(cls, options: dict[str, Any]) -> EttinReranker:
        return cls.shared(EngineConfig.create(**options))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the configuration, never the weights: the receiving process loads (or reuses) its own.
        return (EttinReranker._from_options, (self.options,))

    # ----------------------------------------------------------------- what was chosen
    @property
    def config(self) -> EngineConfig:
        """The resolved options this engine runs with (device and dtype decided, paths absolute)."""
        return self._config

    @property
    def options(self) -> dict[str, Any]:
        """The options as given (``"auto"`` kept, local paths absolute): what pickling ships."""
        return self._given.engine_options()

    @property
    def model_name(self) -> str:
        return self._config.model

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights really have (after any ``model_kwargs`` override)."""
        return self._loaded.dtype

    @property
    def attention(self) -> str:
        """The attention implementation the model actually runs with (e.g. ``"sdpa"``, ``"ettin_varlen"``)."""
        return self._loaded.attention

    @property
    def forward_path(self) -> str:
        """What runs the forward pass: ``"eager"``, ``"torch.compile(mode='default')"``,
        ``"torch.compile(mode='reduce-overhead', CUDA graphs)"``, or ``"eager (torch.compile failed: ...)"``."""
        compilation = self._loaded.compilation
        return "eager" if compilation is None else compilation.path

    @property
    def compile_stats(self) -> dict[str, Any] | None:
        """What compiling cost (seconds, CUDA graphs recorded, their memory); None when ``compile="off"``."""
        compilation = self._loaded.compilation
        return None if compilation is None else compilation.stats()

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_tokens(self) -> int:
        """Current token budget per forward pass; halves (and stays halved) after a CUDA out-of-memory."""
        return self._forward.batch_tokens

    @property
    def normalize(self) -> str | None:
        return self._config.normalize

    @property
    def long_documents(self) -> str:
        return self._config.long_documents

    @property
    def timings(self) -> StageTimes:
        """Cumulative seconds in tokenize / pack (+copy) / forward / wait; diff two ``snapshot()`` calls."""
        return self._timings

    @property
    def token_cache(self) -> TokenCache | None:
        """The document-token cache (``token_cache.stats``: hits, misses, tokens), or None when off."""
        return self._pairs.cache

    @property
    def batching(self) -> MicroBatcher[list[ScoreDetails]]:
        """The cross-request batcher: ``batching.stats`` counts requests, passes and merged sizes."""
        return self._batcher

    @property
    def cross_encoder(self) -> Any:
        """The underlying sentence-transformers ``CrossEncoder`` (shared; do not modify)."""
        return self._loaded.cross_encoder

    def __repr__(self) -> str:
        return (
            f"EttinReranker(model={self.model_name!r}, device={str(self.device)!r}, "
            f"dtype={str(self.dtype).replace('torch.', '')!r}, attention={self.attention!r}, "
            f"forward_path={self.forward_path!r}, max_length={self.max_length}, "
            f"batch_tokens={self.batch_tokens}, normalize={self.normalize!r})"
        )

    # ----------------------------------------------------------------- public API
    def score(self, query: str, documents: Sequence[str], *, show_progress_bar: bool = False) -> list[float]:
        """Score each document for ``query``.

        Args:
            query: The search query.
            documents: Document texts (a list or tuple; order is kept).
            show_progress_bar: Show a tqdm bar.

        Returns:
            One float per document, in input order (raw logits, or 0..1 with ``normalize="sigmoid"``).

        Example::

            reranker.score("capital of France", ["Paris is the capital of France.", "Berlin"])
        """
        return self.score_details(query, documents, show_progress_bar=show_progress_bar).scores

    def score_details(self, query: str, documents: Sequence[str], *, show_progress_bar: bool = False) -> ScoreDetails:
        """Like :meth:`score`, plus raw logits and what truncation or chunking did to each document.

        Args:
            query: The search query.
            documents: Document texts.
            show_progress_bar: Show a tqdm bar.

        Returns:
            A :class:`ScoreDetails` with ``scores``, ``raw_scores``, ``truncated`` and ``windows``, in input order.

        Example::

            details = reranker.score_details("q", ["a long document ..."])
            details.truncated[0], details.windows[0]
        """
        query = check_query(query)
        documents = check_documents(documents)
        return self._score([query], [documents], show_progress_bar)[0]

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        show_progress_bar: bool = False,
    ) -> list[RankResult]:
        """Documents sorted by relevance, best first.

        Args:
            query: The search query.
            documents: Document texts.
            top_n: Keep the best ``top_n``; ``None`` keeps all.
            score_threshold: Drop documents whose ``score`` is below it (a 0..1 value when
                normalizing), applied before ``top_n``.
            show_progress_bar: Show a tqdm bar.

        Returns:
            :class:`RankResult` objects (``index`` into ``documents``, ``score``, ``raw_score``,
            ``truncated``, ``windows``). Equal scores are ordered by raw logit, then input order.

        Example::

            hits = reranker.rank("Who wrote Hamlet?", docs, top_n=3)
            [docs[h.index] for h in hits]
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        details = self.score_details(query, documents, show_progress_bar=show_progress_bar)
        return ranked(details, top_n, score_threshold)

    def rank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        show_progress_bar: bool | None = None,
    ) -> list[list[RankResult]]:
        """Rank each query's own documents; all pairs of all queries share one batched pass.

        Args:
            queries: The queries.
            documents_per_query: One list of documents per query.
            top_n: As in :meth:`rank`, per query.
            score_threshold: As in :meth:`rank`, per query.
            show_progress_bar: ``None`` shows a bar only for long work (over 1000 documents).

        Returns:
            One ranked list per query, in query order.

        Example::

            reranker.rank_many(["q1", "q2"], [docs_for_q1, docs_for_q2], top_n=10)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        all_details = self.score_many(queries, documents_per_query, show_progress_bar=show_progress_bar)
        return [ranked(details, top_n, score_threshold) for details in all_details]

    def score_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        show_progress_bar: bool | None = None,
        max_document_tokens: int | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_details` for many queries at once, in one batched pass over all pairs.

        Args:
            queries: The queries.
            documents_per_query: One list of documents per query.
            show_progress_bar: ``None`` shows a bar only for long work (over 1000 documents).
            max_document_tokens: Cut every document to this many tokens first (Cohere's
                ``max_tokens_per_doc``); cut documents are reported as truncated.

        Returns:
            One :class:`ScoreDetails` per query, in query order.

        Example::

            [d.scores for d in reranker.score_many(["q1", "q2"], [["a", "b"], ["c"]])]
        """
        checked_queries, checked_docs = check_many(queries, documents_per_query)
        cap = check_positive("max_document_tokens", max_document_tokens)
        if show_progress_bar is None:
            show_progress_bar = sum(len(d) for d in checked_docs) > 1000
        return self._score(checked_queries, checked_docs, show_progress_bar, cap)

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> list[float]:
        """Scores of ``(queries[i], documents[i])`` pairs, in order; each distinct query is tokenized once.

        Args:
            queries: One query per pair (repeats are grouped).
            documents: One document per pair.

        Returns:
            One score per pair.

        Example::

            reranker.score_pairs(["q1", "q2", "q1"], ["a", "b", "c"])
        """
        return score_pairs_by_query(self.score_many, queries, documents)

    async def ascore(self, query: str, documents: Sequence[str]) -> list[float]:
        """:meth:`score` without blocking the event loop; cancelling the task drops work not yet started.

        Example::

            scores = await reranker.ascore("q", docs)
        """
        return (await self.ascore_details(query, documents)).scores

    async def ascore_details(self, query: str, documents: Sequence[str]) -> ScoreDetails:
        """:meth:`score_details` without blocking the event loop.

        Example::

            details = await reranker.ascore_details("q", docs)
        """
        return (await self._ascore([check_query(query)], [check_documents(documents)]))[0]

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[RankResult]:
        """:meth:`rank` without blocking the event loop; concurrent calls share forward passes.

        Example::

            hits = await reranker.arank("q", docs, top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        return ranked(await self.ascore_details(query, documents), top_n, score_threshold)

    async def ascore_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        max_document_tokens: int | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_many` without blocking the event loop.

        Example::

            per_query = await reranker.ascore_many(["q1", "q2"], [docs1, docs2])
        """
        cap = check_positive("max_document_tokens", max_document_tokens)
        return await self._ascore(*check_many(queries, documents_per_query), cap)

    async def arank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[list[RankResult]]:
        """:meth:`rank_many` without blocking the event loop.

        Example::

            per_query = await reranker.arank_many(["q1", "q2"], [docs1, docs2], top_n=5)
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        details = await self.ascore_many(queries, documents_per_query)
        return [ranked(d, top_n, score_threshold) for d in details]

    # ----------------------------------------------------------------- orchestration
    def _score(
        self, queries: list[str], documents_per_query: list[list[str]], show_progress_bar: bool, cap: int | None = None
    ) -> list[ScoreDetails]:
        """Validated input -> details; through the micro-batcher unless a progress bar is wanted."""
        caps: list[int | None] = [cap] * len(queries)
        if show_progress_bar or not self._config.micro_batching:
            return self._score_many(queries, documents_per_query, show_progress_bar, caps)
        return self._batcher.submit((queries, documents_per_query, caps), sum(len(d) for d in documents_per_query))

    async def _ascore(
        self, queries: list[str], documents_per_query: list[list[str]], cap: int | None = None
    ) -> list[ScoreDetails]:
        caps: list[int | None] = [cap] * len(queries)
        if not self._config.micro_batching:
            return await asyncio.to_thread(self._score_many, queries, documents_per_query, False, caps)
        # Waiting costs no thread; a cancelled caller whose pass has not started is dropped.
        return await self._batcher.submit_async(
            (queries, documents_per_query, caps), sum(len(d) for d in documents_per_query)
        )

    def _score_merged(self, payloads: Sequence[Payload]) -> list[list[ScoreDetails]]:
        """One pass over several callers' requests; each gets back its own slice."""
        if len(payloads) == 1:
            queries, documents, caps = payloads[0]
            return [self._score_many(queries, documents, False, caps)]
        merged = self._score_many(
            [q for qs, _, _ in payloads for q in qs],
            [d for _, ds, _ in payloads for d in ds],
            False,
            [c for _, _, cs in payloads for c in cs],
        )
        out, start = [], 0
        for qs, _, _ in payloads:
            out.append(merged[start : start + len(qs)])
            start += len(qs)
        return out

    def _score_many(
        self,
        queries: list[str],
        documents_per_query: list[list[str]],
        show_progress_bar: bool,
        caps: list[int | None] | None = None,
    ) -> list[ScoreDetails]:
        flat_docs = [doc for docs in documents_per_query for doc in docs]
        if not flat_docs:
            return [ScoreDetails([], [], [], []) for _ in queries]
        owner = [q for q, docs in enumerate(documents_per_query) for _ in docs]
        # Nothing past the window can reach the model in truncate mode: tokenize only that much.
        limit = self._pairs.text_budget if self._config.long_documents == "truncate" else None
        with self._timings.stage("tokenize"):
            query_ids = self._pairs.encode_documents(queries, self._pairs.text_budget)

        windows: list[list[float]] = [[] for _ in flat_docs]
        truncated = [False] * len(flat_docs)

        def prepare(start: int, end: int) -> list[Unit]:
            with self._timings.stage("tokenize"):
                doc_ids = self._pairs.encode_documents(flat_docs[start:end], limit)
                units: list[Unit] = []
                for offset, ids in enumerate(doc_ids):
                    doc = start + offset
                    cap = caps[owner[doc]] if caps else None
                    if cap is not None and len(ids) > cap:
                        ids, truncated[doc] = ids[:cap], True
                    units.extend(self._windows.units(query_ids[owner[doc]], ids, doc))
                return units

        def score_units(units: list[Unit]) -> None:
            for unit, s in zip(units, self._forward([u.pair for u in units])):
                windows[unit.doc].append(s)
                truncated[unit.doc] |= unit.pair.truncated
            bar.update(len({u.doc for u in units}))

        waves = [(s, min(s + WAVE_DOCUMENTS, len(flat_docs))) for s in range(0, len(flat_docs), WAVE_DOCUMENTS)]
        with tqdm(total=len(flat_docs), disable=not show_progress_bar, desc="Reranking", unit="doc") as bar:
            if len(waves) == 1:
                score_units(prepare(*waves[0]))
            else:
                # Tokenize wave i+1 (the Rust tokenizer releases the GIL) while wave i is scored.
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ettin-tokenize") as pool:
                    upcoming = pool.submit(prepare, *waves[0])
                    for next_wave in [*waves[1:], None]:
                        units = upcoming.result()
                        if next_wave is not None:
                            upcoming = pool.submit(prepare, *next_wave)
                        score_units(units)

        raw = [aggregate(w, self._config.chunk_aggregate) for w in windows]
        heavy = [len(w) for w in windows if len(w) > HEAVY_WINDOWS]
        if heavy:
            logger.warning(
                "Chunked %d very long document(s) into %d windows (up to %d for one): each window is a full "
                "forward pass. Split such documents upstream, or use long_documents='truncate'.",
                len(heavy),
                sum(heavy),
                max(heavy),
            )
        if any(truncated):
            logger.info(
                "Truncated %d of %d pairs to max_length=%d (documents cut first).",
                sum(truncated),
                len(flat_docs),
                self._max_length,
            )
        cfg = self._config
        results, start = [], 0
        for docs in documents_per_query:
            end = start + len(docs)
            raw_part = raw[start:end]
            results.append(
                ScoreDetails(
                    scores=[
                        normalize_score(x, cfg.normalize, cfg.normalize_shift, cfg.normalize_temperature)
                        for x in raw_part
                    ],
                    raw_scores=raw_part,
                    truncated=truncated[start:end],
                    windows=[len(w) for w in windows[start:end]],
                )
            )
            start = end
        return results
