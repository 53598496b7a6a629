"""Haystack adapter: ``EttinRanker``, a ranker component.

Example::

    from haystack import Pipeline
    from ettin_integrations.haystack import EttinRanker

    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component("ranker", EttinRanker(top_k=5))
    pipeline.connect("retriever.documents", "ranker.documents")

It behaves as Haystack's ``SentenceTransformersSimilarityRanker`` does (``warm_up``, ``run`` /
``run_async``, ``top_k``, ``scale_score``, ``score_threshold``, ``meta_fields_to_embed``,
duplicates kept once with their best score, ``to_dict`` / ``from_dict``), over the shared engine:
Ettin's 8K context, chunk mode and token-budget batching, or a rerank service (``url=``). All
scoring happens in the engine; this module only translates Documents to texts and back.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import Secret, deserialize_secrets_inplace
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.haystack needs haystack-ai: pip install 'ettin-integrations[haystack]'"
    ) from exc

from pydantic import Field

from .adapter_options import RAW_SCORE_KEY, TRUNCATED_KEY, WINDOWS_KEY, EngineOptions
from .config import EngineFields, FiniteFloat, Flag, WholeNumber, check_flag
from .contract import Reranker
from .errors import InputTypeError, InvalidInputError
from .normalization import sigmoid
from .pipeline.validation import check_query
from .remote import RemoteReranker
from .results import RankResult

__all__ = ["EttinRanker"]

#: The environment variable a serialized ``url=`` ranker reads its service key from (never stored).
API_KEY_ENV = "ETTIN_API_KEY"
#: The default ``api_key``: read from ``ETTIN_API_KEY`` at warm-up, if set (Haystack's convention).
DEFAULT_API_KEY = Secret.from_env_var(API_KEY_ENV, strict=False)


class RankerOptions(EngineOptions):
    """The ranker's own fields beside every engine option (one declaration, ``config.py``)."""

    owner_name: ClassVar[str] = "EttinRanker"

    top_k: WholeNumber | None = Field(default=10, ge=1, description="Documents to return; None returns all.")
    score_threshold: FiniteFloat | None = Field(
        default=None, description="Drop documents scoring below this (on the returned scale), before top_k."
    )
    scale_score: Flag = Field(
        default=True, description="Scores as sigmoid((logit - normalize_shift) / normalize_temperature); else logits."
    )
    meta_fields_to_embed: list[str] = Field(default_factory=list, description="Meta fields scored with the content.")
    embedding_separator: str = Field(default="\n", description="Joins the meta fields and the content.")


@component
class EttinRanker:
    """Ranks Documents by an Ettin cross-encoder's relevance to the query; keeps the best ``top_k``.

    Returns new Documents (same ``id``, everything deep-copied) with ``score`` set, best first, and
    ``meta`` gaining ``rerank_raw_score`` (the logit), ``rerank_truncated`` and ``rerank_windows``.
    The caller's Documents are never modified. Documents with the same ``id`` are ranked once, as
    the one with the highest incoming score (Haystack's rule).

    ``scale_score=True`` (Haystack's default) returns ``sigmoid((logit - normalize_shift) /
    normalize_temperature)``: shift 6, temperature 1 unless calibrated (``ettin-rerank calibrate``
    prints values fitted to your data). Haystack's own ranker uses a plain sigmoid, which on Ettin's
    logit scale (about -12..22) puts most passages near 1.0. ``scale_score=False`` returns logits.

    Args:
        model: Hub id or local directory (positional or keyword).
        top_k: Documents to return; ``None`` returns all, reranked.
        score_threshold: Drop documents scoring below this, on the returned scale, before ``top_k``.
        scale_score: Sigmoid-scaled scores (``True``) or raw logits (``False``).
        meta_fields_to_embed: ``meta`` fields put before the content in the scored text.
        embedding_separator: Joins those fields and the content.
        url: A rerank service (``ettin-rerank serve``) to score with instead of a local model; its
            key comes from ``api_key`` (default: the ``ETTIN_API_KEY`` environment variable).
        reranker: Any implementation of the reranker contract (an engine, a ``RemoteReranker``).
        **options: Any engine option (see :class:`~ettin_integrations.EttinReranker`).

    Example::

        from haystack import Document
        from ettin_integrations.haystack import EttinRanker

        ranker = EttinRanker("cross-encoder/ettin-reranker-17m-v1", top_k=1)
        ranker.warm_up()
        docs = [Document(content="Hamlet is by Shakespeare."), Document(content="Paris.")]
        ranker.run(query="Who wrote Hamlet?", documents=docs)["documents"][0].content
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        top_k: int | None = 10,
        score_threshold: float | None = None,
        scale_score: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        url: str | None = None,
        api_key: Secret | None = DEFAULT_API_KEY,
        reranker: Reranker | None = None,
        **options: Any,
    ) -> None:
        if "normalize" in options:
            raise InvalidInputError("EttinRanker scales scores with scale_score=True/False; it has no normalize=.")
        if url is not None:
            if reranker is not None or (set(options) - {"normalize_shift", "normalize_temperature"}) or model:
                raise InvalidInputError(
                    "EttinRanker(url=...) scores with the service's model and options: pass url= alone "
                    "(with normalize_shift/normalize_temperature if you calibrated), not model, options or reranker."
                )
            reranker = None
        self.url = url
        self.api_key = api_key
        self._options = RankerOptions(  # type: ignore[call-arg]  # EngineOptions' own __init__ takes these
            model,  # type: ignore[arg-type]
            reranker=reranker,
            top_k=top_k,
            score_threshold=score_threshold,
            scale_score=scale_score,
            meta_fields_to_embed=[] if meta_fields_to_embed is None else meta_fields_to_embed,
            embedding_separator=embedding_separator,
            **options,
        )
        self._given_options = dict(options)
        self._given_reranker = reranker
        self._reranker: Reranker | None = reranker

    def __getattr__(self, name: str) -> Any:
        """The validated options as read-only attributes (``ranker.top_k``, ``ranker.model``, ...)."""
        options = self.__dict__.get("_options")
        if options is not None and name in RankerOptions.model_fields:
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def reranker(self) -> Reranker | None:
        """The reranker this component scores with; ``None`` until :meth:`warm_up` (or the first run)."""
        return self._reranker

    def warm_up(self) -> None:
        """Load the model through the shared engine (one copy per process for the same options), or
        connect to the service for ``url=``. Runs once; ``run`` calls it when a pipeline did not."""
        if self._reranker is not None:
            return
        if self.url is not None:
            key = self.api_key.resolve_value() if self.api_key is not None else None
            self._reranker = RemoteReranker(self.url, api_key=key)
        else:
            self._reranker = self._options.reranker

    def to_dict(self) -> dict[str, Any]:
        """Serialize: the ranker's fields and the engine options given, never a key's value."""
        url = self.url
        if self._given_reranker is not None:
            if not isinstance(self._given_reranker, RemoteReranker):
                raise InvalidInputError(
                    "An EttinRanker built with reranker=<object> cannot be serialized: build it from options "
                    "(model=..., dtype=...) or url=..., which a pipeline file can describe."
                )
            if self._given_reranker.api_key:
                raise InvalidInputError(
                    "This EttinRanker's RemoteReranker holds an API key, which must not be written to a file: use "
                    f"EttinRanker(url=..., api_key=Secret.from_env_var({API_KEY_ENV!r})) instead."
                )
            url = self._given_reranker.url
        o = self._options
        where = {"url": url} if url else {"model": o.model}
        return default_to_dict(
            self,
            **where,
            top_k=o.top_k,
            score_threshold=o.score_threshold,
            scale_score=o.scale_score,
            meta_fields_to_embed=o.meta_fields_to_embed,
            embedding_separator=o.embedding_separator,
            api_key=self.api_key.to_dict() if self.api_key is not None and url else None,
            **self._given_options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> EttinRanker:
        """Rebuild from :meth:`to_dict` output (a pipeline YAML). Unknown keys are rejected.

        A stored config never turns on ``trust_remote_code`` by itself (pipeline files travel
        between people and machines): pass ``trust_remote_code=True`` here explicitly to allow it.
        """
        data = copy.deepcopy(data)
        params = data.setdefault("init_parameters", {})
        if params.get("trust_remote_code") and "trust_remote_code" not in overrides:
            raise InvalidInputError(
                "This EttinRanker config enables trust_remote_code, which a loaded config may not do on its own; "
                "review the model, then pass trust_remote_code=True to from_dict explicitly."
            )
        params.update(overrides)
        deserialize_secrets_inplace(params, keys=["api_key"])
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """``{"documents": [...]}``: new Documents, best first, at most ``top_k``.

        ``top_k``, ``scale_score`` and ``score_threshold`` override the component's own for this call.
        """
        unique, texts, settings = self._inputs(query, documents, top_k, scale_score, score_threshold)
        # top_k goes to rank, which settles that cut (float32 near it in half precision). The threshold
        # drops a tail of the ranking, so cutting first and thresholding after keeps the same documents.
        results = self._ready().rank(query, texts, settings[0]) if texts else []
        return {"documents": self._outputs(unique, results, *settings)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """:meth:`run` for ``AsyncPipeline``: the model runs off the event loop."""
        unique, texts, settings = self._inputs(query, documents, top_k, scale_score, score_threshold)
        results = await self._ready().arank(query, texts, settings[0]) if texts else []
        return {"documents": self._outputs(unique, results, *settings)}

    def _ready(self) -> Reranker:
        self.warm_up()
        assert self._reranker is not None
        return self._reranker

    # ----------------------------------------------------------------- translation
    def _inputs(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None,
        scale_score: bool | None,
        score_threshold: float | None,
    ) -> tuple[list[Document], list[str], tuple[int | None, bool, float | None]]:
        check_query(query)
        if not isinstance(documents, list):
            raise InputTypeError(f"documents must be a list of Document, got {type(documents).__name__}.")
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise InputTypeError(f"documents[{i}] is {type(doc).__name__}, expected a haystack Document.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise InvalidInputError(f"top_k must be a whole number >= 1 or None, got {top_k!r}.")
        if score_threshold is not None and (
            isinstance(score_threshold, bool)
            or not isinstance(score_threshold, (int, float))
            or not math.isfinite(score_threshold)
        ):
            raise InvalidInputError(f"score_threshold must be a finite number, got {score_threshold!r}.")
        o = self._options
        settings = (
            o.top_k if top_k is None else top_k,
            o.scale_score if scale_score is None else check_flag(scale_score, "scale_score"),
            o.score_threshold if score_threshold is None else float(score_threshold),
        )
        unique = _deduplicated(documents)
        return unique, [self._text(doc) for doc in unique], settings

    def _text(self, doc: Document) -> str:
        fields = [str(doc.meta[key]) for key in self._options.meta_fields_to_embed if doc.meta.get(key) is not None]
        return self._options.embedding_separator.join([*fields, doc.content or ""])

    def _outputs(
        self,
        documents: list[Document],
        results: list[RankResult],
        top_k: int | None,
        scale_score: bool,
        threshold: float | None,
    ) -> list[Document]:
        o = self._options
        ranked = []
        for result in results:
            raw = result.raw_score
            score = sigmoid(raw, o.normalize_shift, o.normalize_temperature) if scale_score else raw
            if threshold is not None and score < threshold:
                continue
            ranked.append(_rescored(documents[result.index], result, score))
            if top_k is not None and len(ranked) == top_k:
                break
        return ranked


def _deduplicated(documents: list[Document]) -> list[Document]:
    """One Document per ``id``: the one with the highest incoming score (Haystack's own rule)."""
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        score = -math.inf if doc.score is None else doc.score
        if kept is None or score > (-math.inf if kept.score is None else kept.score):
            best[doc.id] = doc
    return list(best.values())


def _rescored(doc: Document, result: RankResult, score: float) -> Document:
    copied = copy.deepcopy(doc)  # nothing nested (meta, embedding, blob) may be the caller's
    meta = {**copied.meta, RAW_SCORE_KEY: result.raw_score, TRUNCATED_KEY: result.truncated}
    meta[WINDOWS_KEY] = result.windows
    return dataclasses.replace(copied, score=score, meta=meta)


# The engine options this component accepts, for docs and tests (the same names as every adapter's).
ENGINE_OPTION_NAMES = [name for name in EngineFields.option_names() if name != "normalize"]
