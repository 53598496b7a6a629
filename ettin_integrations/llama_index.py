"""LlamaIndex adapter: ``EttinRerank`` node postprocessor.

Example::

    from ettin_integrations.llama_index import EttinRerank

    query_engine = index.as_query_engine(similarity_top_k=50, node_postprocessors=[EttinRerank(top_n=5)])

All scoring happens in the shared engine; this module only translates nodes to texts and back, and
reports the work through LlamaIndex's instrumentation (dispatcher events and the callback manager).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from typing_extensions import Self

try:
    from llama_index.core.bridge.pydantic import ConfigDict, Field
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.llama_index needs llama-index-core: pip install 'ettin-integrations[llamaindex]'"
    ) from exc

from .adapter_options import RAW_SCORE_KEY, TRUNCATED_KEY, WINDOWS_KEY, EngineOptions
from .config import FiniteFloat, Flag, WholeNumber
from .contract import Reranker
from .errors import InputTypeError, InvalidInputError
from .results import RankResult

__all__ = ["EttinRerank"]

RETRIEVAL_SCORE_KEY = "retrieval_score"
dispatcher = get_dispatcher(__name__)


class EttinRerank(EngineOptions, BaseNodePostprocessor):
    """Reranks retrieved nodes with an Ettin cross-encoder and keeps the best ``top_n``.

    Returns new ``NodeWithScore`` objects (float scores, best first) over deep copies of the nodes;
    the caller's nodes, scores and anything nested in them are never modified or shared. Each
    copy's metadata gains ``rerank_truncated`` and ``rerank_windows`` (and ``rerank_raw_score`` when
    normalizing, ``retrieval_score`` with ``keep_retrieval_score``), all excluded from the embed and
    LLM text so they never leak into what gets scored or generated. The model loads on first use;
    a local ``model`` path is checked at construction. Unknown arguments are rejected, naming the
    option you probably meant (``top_k`` -> ``top_n``; ``SentenceTransformerRerank``'s
    ``cross_encoder_kwargs`` -> ``max_length`` / ``model_kwargs``).

    Args:
        model: Hub id or local directory (positional or keyword).
        top_n: Nodes to return; ``None`` returns all, reranked.
        score_threshold: Drop nodes scoring below this, before ``top_n``.
        keep_retrieval_score: Keep each node's previous score in metadata ``retrieval_score``.
        metadata_mode: Which metadata goes into the text the reranker scores.
        reranker: A reranker to use instead of options (an engine, a ``RemoteReranker``, any
            implementation of the reranker contract).
        **options: Any engine option (see :class:`~ettin_integrations.EttinReranker`).

    Example::

        from llama_index.core.schema import NodeWithScore, TextNode
        from ettin_integrations.llama_index import EttinRerank

        rerank = EttinRerank("cross-encoder/ettin-reranker-17m-v1", top_n=1)
        nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in ("Hamlet is by Shakespeare.", "Paris.")]
        rerank.postprocess_nodes(nodes, query_str="Who wrote Hamlet?")[0].node.text
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    top_n: WholeNumber | None = Field(default=2, ge=0, description="Nodes to return; None returns all, reranked.")
    score_threshold: FiniteFloat | None = Field(
        default=None, description="Drop nodes scoring below this (applied before top_n)."
    )
    keep_retrieval_score: Flag = Field(
        default=False, description="Keep each node's previous (retrieval) score in metadata 'retrieval_score'."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata is included in the text the reranker scores."
    )

    def __init__(self, model: str | None = None, /, *, reranker: Reranker | None = None, **options: Any) -> None:
        # Spelled out so type checkers see the positional model and reranker= (pydantic would hide them).
        super().__init__(model, reranker=reranker, **options)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this component under."""
        return "EttinRerank"

    @classmethod
    def from_dict(cls, data: dict[str, Any], **kwargs: Any) -> Self:
        """Rebuild from :meth:`to_dict` output; unknown keys are rejected.

        A stored config never turns on ``trust_remote_code`` by itself (configs travel between
        people and machines): pass ``trust_remote_code=True`` here explicitly to allow it.

        Example::

            EttinRerank.from_dict(EttinRerank(top_n=3).to_dict())
        """
        data = dict(data)
        if data.get("trust_remote_code") and "trust_remote_code" not in kwargs:
            raise InvalidInputError(
                "This EttinRerank config enables trust_remote_code, which a loaded config may not do on its own; "
                "review the model, then pass trust_remote_code=True to from_dict explicitly."
            )
        data.update(kwargs)
        data.pop("class_name", None)
        return cls(**data)

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        bundle, texts = self._inputs(nodes, query_bundle)
        with self._instrumented(nodes, bundle) as finish:
            results = self.reranker.rank(bundle.query_str, texts, self.top_n, self.score_threshold) if texts else []
            return finish(results)

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        bundle, texts = self._inputs(nodes, query_bundle)
        with self._instrumented(nodes, bundle) as finish:
            results = (
                await self.reranker.arank(bundle.query_str, texts, self.top_n, self.score_threshold) if texts else []
            )
            return finish(results)

    def _inputs(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None) -> tuple[QueryBundle, list[str]]:
        if query_bundle is None:
            raise InvalidInputError(
                "EttinRerank needs a query: call postprocess_nodes(nodes, query_str=...) or pass a QueryBundle."
            )
        texts = []
        for i, item in enumerate(nodes):
            if not isinstance(item, NodeWithScore):
                raise InputTypeError(f"nodes[{i}] is {type(item).__name__}, expected NodeWithScore.")
            texts.append(item.node.get_content(metadata_mode=self.metadata_mode))
        return query_bundle, texts

    @contextmanager
    def _instrumented(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle
    ) -> Iterator[Callable[[list[RankResult]], list[NodeWithScore]]]:
        """Emit start events, yield a function that builds the output and emits the end events."""
        top_n = len(nodes) if self.top_n is None else self.top_n
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model))
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: top_n,
            },
        ) as event:

            def finish(results: list[RankResult]) -> list[NodeWithScore]:
                reranked = [self._rescored(nodes[r.index], r) for r in results]
                event.on_end(payload={EventPayload.NODES: reranked})
                dispatcher.event(ReRankEndEvent(nodes=reranked))
                return reranked

            yield finish

    def _rescored(self, item: NodeWithScore, result: RankResult) -> NodeWithScore:
        node = item.node
        extra: dict[str, Any] = {TRUNCATED_KEY: result.truncated, WINDOWS_KEY: result.windows}
        if self.normalize is not None:
            extra[RAW_SCORE_KEY] = result.raw_score
        if self.keep_retrieval_score:
            extra[RETRIEVAL_SCORE_KEY] = item.score
        hidden = list(extra)
        # One deep copy (nested metadata and relationships must not be the caller's), then set the
        # new values on it: model_copy(update=...) would not copy what it is given.
        copy = node.model_copy(deep=True)
        copy.metadata.update(extra)
        copy.excluded_embed_metadata_keys = _merged(node.excluded_embed_metadata_keys, hidden)
        copy.excluded_llm_metadata_keys = _merged(node.excluded_llm_metadata_keys, hidden)
        return NodeWithScore(node=copy, score=result.score)


def _merged(existing: list[str], extra: list[str]) -> list[str]:
    return [*existing, *(k for k in extra if k not in existing)]
