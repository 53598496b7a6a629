"""``EttinReranker``: the local reranker. Construction, what was chosen, and routing of calls.

The public methods come from the contract (``contract.BaseReranker``); the stages a call runs
through are in ``pipeline/scoring.py``. This class decides only *how* a validated request reaches
the pipeline: directly, or merged with concurrent callers' requests by the micro-batcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import tracing
from .concurrency import forking, shared, workers
from .concurrency.microbatch import MicroBatcher
from .config import DEFAULT_MODEL, EngineConfig, options_docstring
from .contract import BaseReranker, PassListener
from .errors import InputTypeError, InvalidInputError
from .model.head_precision import HALF
from .model.loading import LoadedModel, shared_model
from .normalization import Normalization
from .pipeline.cut_rescoring import asettle_cut, cut_margin, settle_cut
from .pipeline.scoring import Batch, ScoringPipeline
from .pipeline.timings import StageTimes
from .pipeline.token_cache import TokenCache
from .pipeline.validation import ScoringRequest, check_query, validate_one
from .results import RequestCost, ScoreDetails

__all__ = ["DEFAULT_MODEL", "EttinReranker"]

logger = logging.getLogger("ettin_integrations")


class EttinReranker(BaseReranker):
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
                raise InputTypeError("Pass either config= or model and options, not both.")
            if not isinstance(config, EngineConfig):
                raise InputTypeError(f"config must be an EngineConfig, got {type(config).__name__}.")
        else:
            config = EngineConfig.create(model=DEFAULT_MODEL if model is None else model, **options)
        if config.cascade is not None:
            raise InvalidInputError(
                f"cascade={config.cascade!r} makes a reranker of several engines: build it with "
                "get_reranker(model, cascade=...), not EttinReranker."
            )
        self._config = config.resolved()
        # Pickles ship the options as given ("auto" stays "auto": another process picks its own device).
        self._given = config.model_copy(update={"model": self._config.model})
        _apply_num_threads(self._config.num_threads)
        self._loaded: LoadedModel = shared_model(self._config)
        self._timings = StageTimes()
        self._pipeline = ScoringPipeline.build(self._loaded, self._config, self._timings)
        self._batcher: MicroBatcher[list[ScoreDetails]] = MicroBatcher(self._score_merged, self._config.batch_wait_ms)
        self._cut_margin = cut_margin(self._config.float32_cut_margin, self.device.type, self.dtype in HALF)
        self._twin: EttinReranker | None = None

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
    def normalization(self) -> Normalization:
        return self._pipeline.normalization

    @property
    def normalize(self) -> str | None:
        return self._config.normalize

    @property
    def long_documents(self) -> str:
        return self._config.long_documents

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights really have (after any ``model_kwargs`` override)."""
        return self._loaded.dtype

    @property
    def float32_cut_margin(self) -> float:
        """Logits around a ``top_n`` cut that ``rank`` rescores in float32 (0.0: never; always 0.0 in float32)."""
        return self._cut_margin

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
        return self._pipeline.max_length

    @property
    def batch_tokens(self) -> int:
        """Current token budget per forward pass; halves (and stays halved) after a CUDA out-of-memory."""
        return self._pipeline.forward.batch_tokens

    @property
    def timings(self) -> StageTimes:
        """Cumulative seconds in tokenize / pack (+copy) / forward / wait; diff two ``snapshot()`` calls."""
        return self._timings

    @property
    def token_cache(self) -> TokenCache | None:
        """The document-token cache (``token_cache.stats``: hits, misses, tokens), or None when off."""
        return self._pipeline.pairs.cache

    @property
    def batching(self) -> MicroBatcher[list[ScoreDetails]]:
        """The cross-request batcher: ``batching.stats`` counts requests, passes and merged sizes."""
        return self._batcher

    @property
    def queued_pairs(self) -> int:
        return self._batcher.queued_items

    def add_pass_listener(self, listener: PassListener) -> None:
        self._batcher.add_listener(listener)

    def chunk_token_cap(self, query: str, max_chunks: int) -> int | None:
        if isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or max_chunks < 1:
            raise InvalidInputError(f"max_chunks must be a whole number >= 1, got {max_chunks!r}.")
        return self._pipeline.document_cap_for_windows(check_query(query), max_chunks)

    def cost(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> RequestCost | None:
        request = validate_one(query, documents, max_document_tokens)
        return self._pipeline.cost(request.queries[0], request.documents_per_query[0], request.max_document_tokens)

    @property
    def cross_encoder(self) -> Any:
        """The underlying sentence-transformers ``CrossEncoder`` (shared; do not modify)."""
        return self._loaded.cross_encoder

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "attention": self.attention,
            "forward_path": self.forward_path,
            "compile": self.compile_stats,
            "max_length": self.max_length,
            "float32_cut_margin": self._cut_margin,
            "parameters": self._loaded.parameters,
            "micro_batching": self._config.micro_batching,
            "options": self.options,
        }

    def __repr__(self) -> str:
        return (
            f"EttinReranker(model={self.model_name!r}, device={str(self.device)!r}, "
            f"dtype={str(self.dtype).replace('torch.', '')!r}, attention={self.attention!r}, "
            f"forward_path={self.forward_path!r}, max_length={self.max_length}, "
            f"batch_tokens={self.batch_tokens}, normalize={self.normalize!r})"
        )

    # ----------------------------------------------------------------- routing
    def _score_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        """Straight to the pipeline when a bar is wanted or merging is off, else through the micro-batcher."""
        batch = _batch(request)
        if show_progress_bar or not self._config.micro_batching:
            return self._pipeline.run(batch, show_progress_bar)
        return self._batcher.submit(batch, request.num_documents)

    async def _ascore_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        batch = _batch(request)
        if show_progress_bar or not self._config.micro_batching:
            return await asyncio.to_thread(self._pipeline.run, batch, show_progress_bar)
        # Waiting costs no thread; a cancelled caller whose pass has not started is dropped.
        return await self._batcher.submit_async(batch, request.num_documents)

    # ----------------------------------------------------------------- the top_n cut, settled in float32
    def _settle_cut(self, request: ScoringRequest, details: list[ScoreDetails], top_n: int) -> list[ScoreDetails]:
        return settle_cut(request, details, top_n, self._cut_margin, self._float32_twin)

    async def _asettle_cut(
        self, request: ScoringRequest, details: list[ScoreDetails], top_n: int
    ) -> list[ScoreDetails]:
        return await asettle_cut(request, details, top_n, self._cut_margin, self._float32_twin)

    def _float32_twin(self) -> EttinReranker:
        """The shared float32 engine with this engine's other options (loaded on first need, then kept)."""
        if self._twin is None:  # two threads racing here get the same engine from the registry
            options = {**self.options, "dtype": "float32", "float32_cut_margin": 0.0}
            self._twin = EttinReranker.shared(EngineConfig.create(**options))
        return self._twin

    def _score_merged(self, batches: Sequence[Batch], abandoned: Callable[[], bool]) -> list[list[ScoreDetails]]:
        """One pass over several callers' batches; each gets back its own slice. The pass stops at the next
        batch boundary once ``abandoned()`` says every caller in it has gone."""
        if len(batches) == 1:
            return [self._pipeline.run(batches[0], stop=abandoned)]
        merged = self._pipeline.run(
            Batch(
                [q for b in batches for q in b.queries],
                [d for b in batches for d in b.documents_per_query],
                [c for b in batches for c in b.caps],
                tuple(t for b in batches for t in b.traces),
                tuple(h for b in batches for h in b.query_handoffs()),
            ),
            stop=abandoned,
        )
        out, start = [], 0
        for b in batches:
            out.append(merged[start : start + len(b.queries)])
            start += len(b.queries)
        return out


def _batch(request: ScoringRequest) -> Batch:
    """The request as pipeline work, carrying the caller's trace context (when tracing) to the pass."""
    traces = (tracing.current_context(),) if tracing.enabled() else ()
    caps = [request.max_document_tokens] * len(request.queries)
    handoffs = (request.handoff,) * len(request.queries) if request.handoff is not None else ()
    return Batch(request.queries, request.documents_per_query, caps, traces, handoffs)


def _apply_num_threads(threads: int | None) -> None:
    """``num_threads`` when given; else the cores this process may use, divided among the workers sharing them."""
    if threads is None:
        choice = workers.choose_threads()
        if choice.threads < torch.get_num_threads():
            torch.set_num_threads(choice.threads)
            logger.info(
                "Using %d torch thread(s): %d usable core(s) shared by %d worker(s) (%s); pass num_threads=N "
                "(--num-threads N) to choose yourself.",
                choice.threads,
                choice.cores,
                choice.workers,
                choice.source,
            )
        return
    if forking.in_forked_child and threads > 1:
        # More than one thread in a forked child hangs in torch's thread pool (see forking.py).
        logger.warning("num_threads=%d ignored in a forked worker: torch runs single-threaded there.", threads)
        threads = 1
    torch.set_num_threads(threads)
