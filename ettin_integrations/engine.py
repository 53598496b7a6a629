"""The reranking engine: one class that composes loading, placement, tokenization and batching."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from .batching import collate, plan_batches
from .loading import LoadedModel, LoadSpec, get_loaded_model
from .normalization import DEFAULT_SHIFT, DEFAULT_TEMPERATURE, normalize_score, validate_normalize
from .placement import PACKED_ATTENTION, default_batch_tokens, resolve_device, resolve_dtype
from .results import RankResult, ScoreDetails
from .tokenization import EncodedPair, PairTokenizer
from .validation import check_documents, check_query, check_threshold, check_top_n
from .varlen import pack

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "cross-encoder/ettin-reranker-17m-v1"
LongDocuments = Literal["truncate", "chunk"]
ChunkAggregate = Literal["max", "mean", "first"]
_AGGREGATES = ("max", "mean", "first")
#: Documents tokenized per wave: while the model scores one wave, a worker thread tokenizes the next.
WAVE_DOCUMENTS = 2048


@dataclass(frozen=True)
class _Unit:
    """One model input: a (query, document window) pair and the document it scores."""

    doc: int
    pair: EncodedPair


class EttinReranker:
    """Scores (query, document) pairs with an Ettin cross-encoder, exactly like ``CrossEncoder.predict``.

    The model is loaded once per process (engines with the same load options share it), placed on
    the best device and dtype, and driven with length-sorted batches capped by a padded-token budget.

    Example::

        from ettin_integrations import EttinReranker

        reranker = EttinReranker("cross-encoder/ettin-reranker-17m-v1")
        for hit in reranker.rank("Who wrote Hamlet?", ["Hamlet is a play by Shakespeare.", "Paris is in France."]):
            print(hit.index, hit.score)

    Args:
        model: Hub id or local directory of a sentence-transformers CrossEncoder.
        device: ``"auto"`` (cuda, then mps, then cpu) or a torch device string.
        dtype: ``"auto"`` (bfloat16 on CUDA GPUs that support it, else float16; float32 on CPU/MPS),
            or ``"float32"``, ``"bfloat16"``, ``"float16"``.
        max_length: Longest pair in tokens; default the model's own limit (7999 for Ettin).
        batch_tokens: Padded tokens per forward pass; default depends on the device.
        normalize: ``None`` for raw logits (Ettin's native scale, about -12..22) or ``"sigmoid"`` for
            ``sigmoid((x - normalize_shift) / normalize_temperature)`` in 0..1. Raw scores stay on
            every :class:`RankResult` as ``raw_score``.
        revision: Hub revision (branch, tag or commit) to load.
        local_files_only: Never touch the network; load from the local cache or directory.
        trust_remote_code: Allow custom model code from the hub (Ettin does not need it).
        model_kwargs: Extra keyword arguments for the transformers model (override the chosen
            ``dtype`` / ``attn_implementation`` if you must).
        attention: ``"auto"`` (flash-attention when it really loads, else sdpa) or an explicit
            transformers ``attn_implementation``.
        keep_query_tokens: When a pair is too long the document is cut first; the query keeps at
            least this many of its first tokens.
        long_documents: ``"truncate"`` cuts documents to fit ``max_length``; ``"chunk"`` scores
            overlapping windows of long documents and aggregates them to one score.
        chunk_tokens: Document tokens per window in chunk mode; default whatever the window leaves
            after the query.
        chunk_overlap: Tokens shared by consecutive windows; default ``min(64, chunk_tokens // 4)``.
        chunk_aggregate: ``"max"`` (default), ``"mean"`` or ``"first"`` of the window scores.
        normalize_shift: Logit mapped to 0.5 by ``normalize="sigmoid"`` (6.0, as Ettin's teacher).
        normalize_temperature: Divides the shifted logit before the sigmoid.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int | None = None,
        batch_tokens: int | None = None,
        normalize: Literal["sigmoid"] | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        attention: str = "auto",
        keep_query_tokens: int = 256,
        long_documents: LongDocuments = "truncate",
        chunk_tokens: int | None = None,
        chunk_overlap: int | None = None,
        chunk_aggregate: ChunkAggregate = "max",
        normalize_shift: float = DEFAULT_SHIFT,
        normalize_temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise TypeError(f"model must be a hub id or a local directory path, got {model!r}.")
        validate_normalize(normalize, normalize_temperature)
        _check_positive_int("max_length", max_length)
        _check_positive_int("batch_tokens", batch_tokens)
        _check_positive_int("keep_query_tokens", keep_query_tokens)
        _check_positive_int("chunk_tokens", chunk_tokens)
        if chunk_overlap is not None and (not isinstance(chunk_overlap, int) or chunk_overlap < 0):
            raise ValueError(f"chunk_overlap must be a non-negative int, got {chunk_overlap!r}.")
        if long_documents not in ("truncate", "chunk"):
            raise ValueError(f"long_documents must be 'truncate' or 'chunk', got {long_documents!r}.")
        if chunk_aggregate not in _AGGREGATES:
            raise ValueError(f"chunk_aggregate must be one of {_AGGREGATES}, got {chunk_aggregate!r}.")

        self._options: dict[str, Any] = {
            "model": model,
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "max_length": max_length,
            "batch_tokens": batch_tokens,
            "normalize": normalize,
            "revision": revision,
            "local_files_only": local_files_only,
            "trust_remote_code": trust_remote_code,
            "model_kwargs": dict(model_kwargs or {}),
            "attention": attention,
            "keep_query_tokens": keep_query_tokens,
            "long_documents": long_documents,
            "chunk_tokens": chunk_tokens,
            "chunk_overlap": chunk_overlap,
            "chunk_aggregate": chunk_aggregate,
            "normalize_shift": float(normalize_shift),
            "normalize_temperature": float(normalize_temperature),
        }
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        spec = LoadSpec(
            model=model,
            device=str(resolved_device),
            dtype=str(resolved_dtype),
            attention=attention,
            revision=revision,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
            model_kwargs=json.dumps(self._options["model_kwargs"], sort_keys=True, default=str),
        )
        self._loaded: LoadedModel = get_loaded_model(spec, resolved_device, resolved_dtype)
        self._max_length = min(max_length, self._loaded.max_length) if max_length else self._loaded.max_length
        self._pairs = PairTokenizer(
            self._loaded.tokenizer, self._max_length, keep_query_tokens, lowercase=self._loaded.lowercase
        )
        self._batch_tokens = batch_tokens or default_batch_tokens(resolved_device)
        self._normalize = normalize
        self._shift = float(normalize_shift)
        self._temperature = float(normalize_temperature)
        self._long_documents = long_documents
        self._chunk_tokens = chunk_tokens
        self._chunk_overlap = chunk_overlap
        self._chunk_aggregate = chunk_aggregate
        # Packed (unpadded) batches when the attention kernel takes variable-length sequences.
        self._packed = self._loaded.attention in PACKED_ATTENTION

    # ----------------------------------------------------------------- what was chosen
    @property
    def model_name(self) -> str:
        return self._options["model"]

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

    @property
    def attention(self) -> str:
        """The attention implementation the model actually runs with (e.g. ``"sdpa"``)."""
        return self._loaded.attention

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_tokens(self) -> int:
        """Current padded-token budget; halves (and stays halved) after a CUDA out-of-memory."""
        return self._batch_tokens

    @property
    def normalize(self) -> str | None:
        return self._normalize

    @property
    def long_documents(self) -> str:
        return self._long_documents

    @property
    def cross_encoder(self) -> Any:
        """The underlying sentence-transformers ``CrossEncoder`` (shared; do not modify)."""
        return self._loaded.cross_encoder

    @property
    def options(self) -> dict[str, Any]:
        """The constructor arguments, as given (used for sharing and pickling)."""
        return dict(self._options)

    def __repr__(self) -> str:
        return (
            f"EttinReranker(model={self.model_name!r}, device={str(self.device)!r}, "
            f"dtype={str(self.dtype).replace('torch.', '')!r}, attention={self.attention!r}, "
            f"max_length={self.max_length}, batch_tokens={self.batch_tokens}, normalize={self.normalize!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle the configuration, never the weights: the receiving process loads (or reuses) its own.
        from .registry import _restore_reranker

        return (_restore_reranker, (self.options,))

    # ----------------------------------------------------------------- public API
    def score(self, query: str, documents: Sequence[str], *, show_progress_bar: bool = False) -> list[float]:
        """Scores of ``documents`` for ``query`` as Python floats, in input order.

        Example::

            reranker.score("capital of France", ["Paris is the capital of France.", "Berlin"])
        """
        return self.score_details(query, documents, show_progress_bar=show_progress_bar).scores

    def score_details(
        self, query: str, documents: Sequence[str], *, show_progress_bar: bool = False
    ) -> ScoreDetails:
        """Like :meth:`score`, plus raw logits and per-document truncation / window counts."""
        query = check_query(query)
        documents = check_documents(documents)
        return self._score_many([query], [documents], show_progress_bar)[0]

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
        *,
        show_progress_bar: bool = False,
    ) -> list[RankResult]:
        """Documents sorted by score, best first (ties keep input order).

        ``score_threshold`` drops results scoring below it (compared with ``score``, so with
        ``normalize="sigmoid"`` it is a 0..1 value); then ``top_n`` keeps the best ``top_n``.
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        details = self.score_details(query, documents, show_progress_bar=show_progress_bar)
        return _ranked(details, top_n, score_threshold)

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

        ``show_progress_bar=None`` shows a tqdm bar only for long work (over 1000 pairs).
        """
        top_n, score_threshold = check_top_n(top_n), check_threshold(score_threshold)
        all_details = self.score_many(queries, documents_per_query, show_progress_bar=show_progress_bar)
        return [_ranked(details, top_n, score_threshold) for details in all_details]

    def score_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        *,
        show_progress_bar: bool | None = None,
    ) -> list[ScoreDetails]:
        """:meth:`score_details` for many queries at once, in one batched pass over all pairs."""
        queries, documents_per_query = self._check_many(queries, documents_per_query)
        if show_progress_bar is None:
            show_progress_bar = sum(len(d) for d in documents_per_query) > 1000
        return self._score_many(queries, documents_per_query, show_progress_bar)

    async def ascore(self, query: str, documents: Sequence[str]) -> list[float]:
        """:meth:`score` in a worker thread, so the running event loop stays responsive."""
        return await asyncio.to_thread(self.score, query, documents)

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[RankResult]:
        """:meth:`rank` in a worker thread, so the running event loop stays responsive."""
        return await asyncio.to_thread(self.rank, query, documents, top_n, score_threshold)

    async def arank_many(
        self,
        queries: Sequence[str],
        documents_per_query: Sequence[Sequence[str]],
        top_n: int | None = None,
        score_threshold: float | None = None,
    ) -> list[list[RankResult]]:
        """:meth:`rank_many` in a worker thread."""
        return await asyncio.to_thread(self.rank_many, queries, documents_per_query, top_n, score_threshold)

    # ----------------------------------------------------------------- internals
    @staticmethod
    def _check_many(queries: Any, documents_per_query: Any) -> tuple[list[str], list[list[str]]]:
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise TypeError("queries must be a list of strings.")
        if isinstance(documents_per_query, str) or not isinstance(documents_per_query, Sequence):
            raise TypeError("documents_per_query must be a list with one list of documents per query.")
        if len(queries) != len(documents_per_query):
            raise ValueError(
                f"Got {len(queries)} queries but {len(documents_per_query)} document lists; pass one list per query."
            )
        checked_queries = [check_query(q, f"queries[{i}]") for i, q in enumerate(queries)]
        checked_docs = [check_documents(d, f"documents_per_query[{i}]") for i, d in enumerate(documents_per_query)]
        return checked_queries, checked_docs

    def _units_for(self, query_ids: list[int], doc_ids: list[int], doc: int) -> list[_Unit]:
        """The model inputs for one document: one pair, or its windows in chunk mode."""
        pairs = self._pairs
        if self._long_documents == "truncate" or len(query_ids) + len(doc_ids) <= pairs.text_budget:
            return [_Unit(doc, pairs.assemble(query_ids, doc_ids))]
        query_keep, _ = pairs.split_budget(len(query_ids), len(doc_ids))
        room = pairs.text_budget - query_keep
        window = min(self._chunk_tokens or room, room)
        overlap = self._chunk_overlap if self._chunk_overlap is not None else min(64, window // 4)
        step = max(1, window - min(overlap, window - 1))
        starts = [0]
        while starts[-1] + window < len(doc_ids):
            starts.append(starts[-1] + step)
        return [_Unit(doc, pairs.assemble(query_ids[:query_keep], doc_ids[s : s + window])) for s in starts]

    def _score_many(
        self, queries: list[str], documents_per_query: list[list[str]], show_progress_bar: bool
    ) -> list[ScoreDetails]:
        flat_docs = [doc for docs in documents_per_query for doc in docs]
        if not flat_docs:
            return [ScoreDetails([], [], [], []) for _ in queries]
        owner = [q for q, docs in enumerate(documents_per_query) for _ in docs]
        query_ids = self._pairs.encode_texts(queries)

        def prepare(start: int, end: int) -> list[_Unit]:
            doc_ids = self._pairs.encode_texts(flat_docs[start:end])
            units: list[_Unit] = []
            for offset, ids in enumerate(doc_ids):
                units.extend(self._units_for(query_ids[owner[start + offset]], ids, start + offset))
            return units

        windows: list[list[float]] = [[] for _ in flat_docs]
        truncated = [False] * len(flat_docs)
        waves = [(s, min(s + WAVE_DOCUMENTS, len(flat_docs))) for s in range(0, len(flat_docs), WAVE_DOCUMENTS)]
        with tqdm(total=len(flat_docs), disable=not show_progress_bar, desc="Reranking", unit="doc") as bar:
            if len(waves) == 1:
                self._score_units(prepare(*waves[0]), windows, truncated, bar)
            else:
                # Tokenize wave i+1 (the Rust tokenizer releases the GIL) while wave i is scored.
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ettin-tokenize") as pool:
                    upcoming = pool.submit(prepare, *waves[0])
                    for next_wave in [*waves[1:], None]:
                        units = upcoming.result()
                        if next_wave is not None:
                            upcoming = pool.submit(prepare, *next_wave)
                        self._score_units(units, windows, truncated, bar)

        raw = [self._aggregate(w) for w in windows]
        num_truncated = sum(truncated)
        if num_truncated:
            logger.info(
                "Truncated %d of %d pairs to max_length=%d (documents cut first).",
                num_truncated,
                len(flat_docs),
                self._max_length,
            )

        results, start = [], 0
        for docs in documents_per_query:
            end = start + len(docs)
            raw_part = raw[start:end]
            results.append(
                ScoreDetails(
                    scores=[normalize_score(x, self._normalize, self._shift, self._temperature) for x in raw_part],
                    raw_scores=raw_part,
                    truncated=truncated[start:end],
                    windows=[len(w) for w in windows[start:end]],
                )
            )
            start = end
        return results

    def _score_units(self, units: list[_Unit], windows: list[list[float]], truncated: list[bool], bar: Any) -> None:
        scores = self._forward([u.pair for u in units])
        for unit, s in zip(units, scores):
            windows[unit.doc].append(s)
            truncated[unit.doc] |= unit.pair.truncated
        bar.update(len({u.doc for u in units}))

    def _aggregate(self, scores: list[float]) -> float:
        if len(scores) == 1 or self._chunk_aggregate == "first":
            return scores[0]
        if self._chunk_aggregate == "max":
            return max(scores)
        return math.fsum(scores) / len(scores)

    def _forward(self, pairs: list[EncodedPair]) -> list[float]:
        """Raw scores for encoded pairs, batched by token budget, backing off on CUDA out-of-memory.

        Scores stay on the device until every batch is queued, so the CPU prepares batch i+1 while
        the GPU runs batch i; one synchronisation per call.
        """
        lengths = [len(p.input_ids) for p in pairs]
        pending = list(range(len(pairs)))
        outputs: list[tuple[list[int], Any]] = []
        with self._loaded.lock:
            while pending:
                budget = self._batch_tokens
                done: list[int] = []
                try:
                    for batch in plan_batches([lengths[i] for i in pending], budget, padded=not self._packed):
                        indices = [pending[j] for j in batch]
                        outputs.append((indices, self._forward_batch([pairs[i] for i in indices])))
                        done.extend(indices)
                    pending = []
                except torch.OutOfMemoryError:
                    finished = set(done)
                    longest = max(lengths[i] for i in pending if i not in finished)
                    if budget <= longest:
                        raise
                    self._batch_tokens = max(longest, budget // 2)
                    logger.warning(
                        "CUDA out of memory at batch_tokens=%d; retrying with %d.", budget, self._batch_tokens
                    )
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    pending = [i for i in pending if i not in finished]
        scores: list[float] = [0.0] * len(pairs)
        for indices, batch_scores in outputs:
            values = batch_scores.tolist() if isinstance(batch_scores, torch.Tensor) else list(batch_scores)
            for i, s in zip(indices, values):
                scores[i] = s
        return scores

    def _forward_batch(self, pairs: list[EncodedPair]) -> torch.Tensor:
        """Scores of one batch as a float32 tensor, left on the device."""
        loaded = self._loaded
        if self._packed:
            features = pack([p.input_ids for p in pairs], loaded.device)
        else:
            types = [p.token_type_ids for p in pairs] if pairs[0].token_type_ids is not None else None
            features = collate([p.input_ids for p in pairs], loaded.pad_token_id, types)
            non_blocking = loaded.device.type == "cuda"
            features = {k: v.to(loaded.device, non_blocking=non_blocking) for k, v in features.items()}
        with torch.inference_mode():
            scores = loaded.cross_encoder(features)["scores"]
            if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
                scores = scores.float()
            if loaded.activation is not None and not isinstance(loaded.activation, torch.nn.Identity):
                scores = loaded.activation(scores)
            return scores.reshape(len(pairs))


def _ranked(details: ScoreDetails, top_n: int | None, score_threshold: float | None) -> list[RankResult]:
    results = [
        RankResult(index=i, score=s, raw_score=r, truncated=t, windows=w)
        for i, (s, r, t, w) in enumerate(
            zip(details.scores, details.raw_scores, details.truncated, details.windows)
        )
    ]
    # sorted() is stable, so equal scores keep input order.
    results.sort(key=lambda r: -r.score)
    if score_threshold is not None:
        results = [r for r in results if r.score >= score_threshold]
    return results if top_n is None else results[:top_n]


def _check_positive_int(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}.")
