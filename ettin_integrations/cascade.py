"""``CascadeReranker``: a reranker made of rerankers, a small model prunes and a large one rescores.

The Ettin family shares one tokenizer and one logit scale, so a cascade across it is cheap to run
(later stages reuse the earlier stages' token ids) and its scores are comparable from stage to stage.
Each stage scores the candidates that reach it and passes on its best ``keep``; the last stage's
scores are final. Because it implements the reranker contract, a cascade works wherever a reranker
does: behind every adapter, in the service, in Ray, in the CLI.

What ``score()`` returns for a document a stage pruned (the rule every caller can rely on):

- every document that reached stage ``s + 1`` scores above every document stage ``s`` pruned;
- a pruned document keeps the raw score its stage gave it, the pruned block moved down as a whole
  only as far as needed (plus :data:`TIER_GAP`) to sit below the documents passed on, so the order
  within it is that stage's order and the gaps between its scores are kept;
- ``score_details`` returns :class:`CascadeScoreDetails`: which stage scored each document last
  (``stages``) and every stage's raw score (``stage_raw_scores``, ``None`` where a stage never saw it);
- normalization and ``score_threshold`` apply to these final scores.

Example::

    from ettin_integrations import get_reranker

    reranker = get_reranker("150m", cascade="17m:30")     # 17m keeps 30 of the candidates, 150m rescores them
    reranker.rank("Who wrote Hamlet?", candidates, top_n=5)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .config import check_flag
from .contract import BaseReranker, PassListener, Reranker
from .errors import EttinError, InputTypeError, InvalidInputError, ServiceError
from .normalization import Normalization
from .pipeline.token_handoff import TokenHandoff
from .pipeline.validation import ScoringRequest
from .remote import RemoteReranker
from .results import RequestCost, ScoreDetails

__all__ = ["TIER_GAP", "CascadeReranker", "CascadeScoreDetails", "CascadeStage"]

logger = logging.getLogger("ettin_integrations")

#: Logits between the lowest document a stage passed on and the highest one it pruned, when the
#: pruned block had to move down (a pruned document scored by a smaller model can outscore a survivor).
TIER_GAP = 1e-3


@dataclass(frozen=True)
class CascadeStage:
    """One stage: a reranker and how many of the candidates reaching it it passes on.

    Attributes:
        reranker: Any implementation of the reranker contract (a local engine, a remote client, a cascade).
        keep: Candidates passed on to the next stage (its best by raw score); ``None`` for the last stage.
            A fixed count: an adaptive keep (every candidate within a margin of the keep-th best) was
            measured and did no better at equal cost (RESULTS.md), so there is none.
    """

    reranker: Reranker
    keep: int | None = None


@dataclass(frozen=True, slots=True)
class CascadeScoreDetails(ScoreDetails):
    """:class:`ScoreDetails` of a cascade, plus what each stage did.

    Attributes:
        stages: Per document, the index of the last stage that scored it (``len(stages) - 1``: it
            reached the last stage; lower: that stage pruned it).
        stage_raw_scores: Per document, one raw score per stage (``None`` for stages it never reached).
    """

    stages: list[int]
    stage_raw_scores: list[list[float | None]]


def _stage_of(value: Any, position: int, last: bool) -> CascadeStage:
    if isinstance(value, CascadeStage):
        stage = value
    elif isinstance(value, tuple) and len(value) == 2:
        stage = CascadeStage(value[0], value[1])
    else:
        stage = CascadeStage(value, None)
    if isinstance(stage.reranker, (str, bytes)) or hasattr(stage.reranker, "__fspath__"):
        raise InputTypeError(
            f"cascade stage {position} is a model name ({stage.reranker!r:.80}): load it with get_reranker(...), or "
            "build the whole cascade from names with get_reranker(model, cascade='17m:30')."
        )
    if not isinstance(stage.reranker, (BaseReranker, Reranker)):
        raise InputTypeError(
            f"cascade stage {position} must be a reranker (or a (reranker, keep) pair), "
            f"got {type(stage.reranker).__name__}."
        )
    keep = stage.keep
    if last:
        if keep is not None:
            raise InvalidInputError(
                f"the last cascade stage (stage {position}) gives the final scores and takes no keep "
                f"(got keep={keep!r}); use top_n when ranking."
            )
        return stage
    if isinstance(keep, bool) or not isinstance(keep, numbers.Integral):
        raise InputTypeError(
            f"cascade stage {position} needs keep, a whole number of candidates to pass on, got {keep!r}."
        )
    if keep < 1:
        raise InvalidInputError(f"cascade stage {position}: keep must be >= 1, got {keep}.")
    return CascadeStage(stage.reranker, int(keep))


class CascadeReranker(BaseReranker):
    """Stages in order; each scores what reaches it and passes on its best ``keep``; the last one's scores are final.

    Args:
        stages: At least two: ``(reranker, keep)`` pairs (or :class:`CascadeStage`) for every stage but
            the last, then the last reranker. Each may be any reranker: a local engine, a
            :class:`~ettin_integrations.RemoteReranker`, another cascade.
        normalization: How final raw scores become ``score``; default the last stage's.
        options: The engine options this cascade was built from (``get_reranker(model, cascade=...)``),
            when it was; adapters copy them and pickles rebuild from them.
        rebuild: Builds the same cascade from ``options`` in another process (pickling).
        share_tokens: Let a later stage reuse the token ids of an earlier one with the same tokenizer
            (False only to measure what that saves).

    Example::

        small, large = get_reranker("17m"), get_reranker("150m")
        cascade = CascadeReranker([(small, 30), large])
        cascade.score_details("q", candidates).stages     # which stage scored each document last
    """

    def __init__(
        self,
        stages: Sequence[CascadeStage | tuple[Reranker, int] | Reranker],
        *,
        normalization: Normalization | None = None,
        options: dict[str, Any] | None = None,
        rebuild: Callable[..., Reranker] | None = None,
        share_tokens: bool = True,
    ) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise InputTypeError(f"stages must be a list of rerankers, got {type(stages).__name__}.")
        if len(stages) < 2:
            raise InvalidInputError(f"a cascade needs at least two stages, got {len(stages)}.")
        self._stages = tuple(_stage_of(s, i + 1, i == len(stages) - 1) for i, s in enumerate(stages))
        if normalization is not None and not isinstance(normalization, Normalization):
            raise InputTypeError(f"normalization must be a Normalization, got {type(normalization).__name__}.")
        self._normalization = normalization  # None: the last stage's, asked when needed (a remote answers then)
        self._options = dict(options) if options is not None else None
        self._rebuild = rebuild
        self._order_checked = False
        self._share_tokens = check_flag(share_tokens, "share_tokens")

    # ----------------------------------------------------------------- what it is
    @property
    def stages(self) -> tuple[CascadeStage, ...]:
        return self._stages

    @property
    def share_tokens(self) -> bool:
        return self._share_tokens

    @property
    def model_name(self) -> str:
        """The model that gives the final scores (the last stage's; a remote one that cannot say: its URL)."""
        try:
            return self._stages[-1].reranker.model_name
        except ServiceError:  # the call itself will fail, naming the stage
            return _label(self._stages[-1].reranker)

    @property
    def normalization(self) -> Normalization:
        return self._normalization or self._stages[-1].reranker.normalization

    @property
    def options(self) -> dict[str, Any]:
        if self._options is not None:
            return dict(self._options)
        return {**self._stages[-1].reranker.options, **super().options}

    def describe(self) -> dict[str, Any]:
        """The last stage's description (what scores finally: device, dtype, max_length), this cascade's model
        and normalization, and ``cascade``: every stage's keep and description."""
        return {
            **self._stages[-1].reranker.describe(),
            **super().describe(),
            "options": self.options,
            "cascade": [
                {"stage": i + 1, "keep": stage.keep, **stage.reranker.describe()}
                for i, stage in enumerate(self._stages)
            ],
        }

    def __repr__(self) -> str:
        parts = [f"{_label(s.reranker)}:{s.keep}" for s in self._stages[:-1]] + [_label(self._stages[-1].reranker)]
        return f"CascadeReranker({' -> '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        if self._options is not None and self._rebuild is not None:
            return (_rebuilt, (self._rebuild, self._options))  # options only: the receiver loads its own weights
        return (_assembled, (self._stages, self._normalization, self._share_tokens))

    @property
    def queued_pairs(self) -> int:
        return sum(stage.reranker.queued_pairs for stage in self._stages)

    def add_pass_listener(self, listener: PassListener) -> None:
        for stage in self._stages:
            stage.reranker.add_pass_listener(listener)

    def cost(
        self, query: str, documents: Sequence[str], *, max_document_tokens: int | None = None
    ) -> RequestCost | None:
        """The first stage's cost for every document, plus each later stage's for the ``keep`` documents
        reaching it (at the first stage's average tokens per document); None when the first stage cannot tell."""
        first = self._stages[0].reranker.cost(query, documents, max_document_tokens=max_document_tokens)
        if first is None or not documents:
            return first
        per_document_tokens, per_document_pairs = first.tokens / len(documents), first.pairs / len(documents)
        tokens, pairs, reaching = first.tokens, first.pairs, len(documents)
        for stage in self._stages[:-1]:
            reaching = min(reaching, stage.keep or reaching)
            tokens += math.ceil(per_document_tokens * reaching)
            pairs += math.ceil(per_document_pairs * reaching)
        return RequestCost(tokens, pairs, first.truncated)

    def chunk_token_cap(self, query: str, max_chunks: int) -> int | None:
        caps = [c for s in self._stages if (c := s.reranker.chunk_token_cap(query, max_chunks)) is not None]
        return min(caps) if caps else None

    # ----------------------------------------------------------------- scoring
    def _check_order_once(self) -> None:
        if not self._order_checked:  # on first use, not at construction: a remote stage may be asked
            self._order_checked = True
            _warn_if_shrinking(self._stages)

    def _final_normalization(self) -> Normalization:
        """Asked before any stage runs: a remote last stage that cannot say fails the call before work is spent."""
        try:
            return self.normalization
        except Exception as exc:
            raise _naming_stage(exc, len(self._stages), len(self._stages), self._stages[-1].reranker) from exc

    def _score_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        self._check_order_once()
        run = _CascadeRun(self, request, self._final_normalization())
        for position, stage, sub_request in run.stage_requests():
            try:
                details = _call_stage(stage.reranker, sub_request, show_progress_bar)
            except Exception as exc:
                raise _naming_stage(exc, position, len(self._stages), stage.reranker) from exc
            run.take(details)
        return run.results()

    def _select(self, alive: list[int], raw: list[float | None], keep: int) -> list[int]:
        """The documents (of ``alive``, scored ``raw`` by a stage) passed on: its ``keep`` best, in input order."""
        return sorted(alive[k] for k in best_first(alive, raw)[:keep])

    async def _ascore_request(self, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
        self._check_order_once()
        run = _CascadeRun(self, request, await asyncio.to_thread(self._final_normalization))
        for position, stage, sub_request in run.stage_requests():
            try:
                details = await _acall_stage(stage.reranker, sub_request, show_progress_bar)
            except Exception as exc:
                raise _naming_stage(exc, position, len(self._stages), stage.reranker) from exc
            run.take(details)
        return run.results()


class _CascadeRun:
    """One request travelling the stages: who is still in, and what each stage said of each document."""

    def __init__(self, cascade: CascadeReranker, request: ScoringRequest, normalization: Normalization) -> None:
        self.cascade, self.request, self.normalization = cascade, request, normalization
        # A cascade nested in another shares its caller's handoff.
        self.handoff = (
            request.handoff if request.handoff is not None else (TokenHandoff() if cascade.share_tokens else None)
        )
        self.alive = [list(range(len(docs))) for docs in request.documents_per_query]
        count = len(cascade.stages)
        self.raw: list[list[list[float | None]]] = [
            [[None] * count for _ in docs] for docs in request.documents_per_query
        ]
        self.truncated = [[False] * len(docs) for docs in request.documents_per_query]
        self.windows = [[1] * len(docs) for docs in request.documents_per_query]
        self.last_stage = [[0] * len(docs) for docs in request.documents_per_query]
        self._stage = 0
        self._asked: list[int] = []

    def stage_requests(self) -> Iterator[tuple[int, CascadeStage, ScoringRequest]]:
        """Per stage, the request for the queries that still have candidates (stages with none are skipped)."""
        for index, stage in enumerate(self.cascade.stages):
            self._stage = index
            self._asked = [q for q, alive in enumerate(self.alive) if alive]
            if self._asked:
                docs = self.request.documents_per_query
                yield (
                    index + 1,
                    stage,
                    ScoringRequest(
                        [self.request.queries[q] for q in self._asked],
                        [[docs[q][i] for i in self.alive[q]] for q in self._asked],
                        self.request.max_document_tokens,
                        self.handoff,
                    ),
                )
            if stage.keep is not None:
                self.alive = [self.cascade._select(alive, [self.raw[q][i][index] for i in alive], stage.keep)
                              for q, alive in enumerate(self.alive)]  # fmt: skip

    def take(self, details: list[ScoreDetails]) -> None:
        """Record one stage's answer for the queries it was asked about."""
        if len(details) != len(self._asked):
            raise EttinError(f"cascade stage {self._stage + 1} answered {len(details)} queries for {len(self._asked)}.")
        for q, answer in zip(self._asked, details):
            alive = self.alive[q]
            if len(answer.raw_scores) != len(alive):
                raise EttinError(
                    f"cascade stage {self._stage + 1} returned {len(answer.raw_scores)} scores "
                    f"for {len(alive)} documents."
                )
            for doc, raw, cut, windows in zip(alive, answer.raw_scores, answer.truncated, answer.windows):
                self.raw[q][doc][self._stage] = float(raw)
                self.truncated[q][doc], self.windows[q][doc], self.last_stage[q][doc] = cut, windows, self._stage

    def results(self) -> list[ScoreDetails]:
        out: list[ScoreDetails] = []
        normalization = self.normalization
        for q in range(len(self.request.queries)):
            final = _tiered(self.raw[q], self.last_stage[q], len(self.cascade.stages))
            out.append(CascadeScoreDetails(
                [normalization.apply(x) for x in final], final, self.truncated[q], self.windows[q],
                self.last_stage[q], self.raw[q],
            ))  # fmt: skip
        return out


def best_first(alive: list[int], raw: list[float | None]) -> list[int]:
    """Positions into ``alive``, best raw score first (ties: input order; NaN and unscored last)."""
    return sorted(range(len(alive)), key=lambda k: _sort_key(raw[k], alive[k]))


def _sort_key(raw: float | None, index: int) -> tuple[bool, float, int]:
    broken = raw is None or raw != raw
    return (broken, 0.0 if broken else -raw, index)  # type: ignore[operator]


def _tiered(raw: list[list[float | None]], last_stage: list[int], count: int) -> list[float]:
    """Final raw scores: the last stage's, then each pruned block below everything that outlasted it."""
    final: list[float] = [math.nan] * len(raw)
    above: list[float] = []  # final scores of documents that outlasted the stage being placed
    for stage in range(count - 1, -1, -1):
        members = [d for d in range(len(raw)) if last_stage[d] == stage]
        own = [raw[d][stage] for d in members]
        finite_own = [x for x in own if x is not None and math.isfinite(x)]
        finite_above = [x for x in above if math.isfinite(x)]
        shift = 0.0
        if finite_own and finite_above:
            shift = max(0.0, max(finite_own) - min(finite_above) + TIER_GAP)
        for d, x in zip(members, own):
            final[d] = math.nan if x is None else x - shift
        above.extend(final[d] for d in members)
    return final


def _call_stage(reranker: Reranker, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
    if isinstance(reranker, BaseReranker):
        return reranker._traced(request, show_progress_bar)  # keeps the handoff (token ids shared)
    cap = request.max_document_tokens
    return reranker.score_many(request.queries, request.documents_per_query, max_document_tokens=cap,
                               show_progress_bar=show_progress_bar)  # fmt: skip


async def _acall_stage(reranker: Reranker, request: ScoringRequest, show_progress_bar: bool) -> list[ScoreDetails]:
    if isinstance(reranker, BaseReranker):
        return await reranker._atraced(request, show_progress_bar)
    return await reranker.ascore_many(request.queries, request.documents_per_query,
                                      max_document_tokens=request.max_document_tokens,
                                      show_progress_bar=show_progress_bar)  # fmt: skip


def _naming_stage(exc: Exception, position: int, count: int, reranker: Reranker) -> Exception:
    """The same error (same class, same attributes), its message saying which stage failed."""
    stage = f"cascade stage {position} of {count} ({_label(reranker)})"
    named: Exception | None = None
    if isinstance(exc, ServiceError):
        inner = str(exc).removeprefix(f"rerank service {exc.url}: " if exc.url else "rerank service: ")
        try:
            named = type(exc)(f"{stage} failed: {inner}", url=exc.url, status=exc.status)
        except TypeError:  # a subclass with another constructor
            named = None
    elif isinstance(exc, EttinError):
        named = copy.copy(exc)
        named.args = (f"{stage} failed: {exc}", *exc.args[1:])
    if named is None or stage not in str(named):
        if hasattr(exc, "add_note"):  # Python 3.11+: the traceback says which stage
            exc.add_note(f"in {stage}")
        return exc
    return named


def _label(reranker: Reranker) -> str:
    """What names a stage in messages, without asking a service (which may be why we are naming it)."""
    if isinstance(reranker, RemoteReranker):
        return f"remote {reranker.url}"
    return reranker.model_name


def _warn_if_shrinking(stages: Sequence[CascadeStage]) -> None:
    """Warn (allowed) when a later stage is smaller than an earlier one: usually stages in the wrong order."""
    sizes = [_parameters(stage.reranker) for stage in stages]
    for i in range(1, len(sizes)):
        before, after = sizes[i - 1], sizes[i]
        if before is not None and after is not None and after < before:
            logger.warning(
                "Cascade stage %d (%s, %s parameters) is smaller than stage %d (%s, %s): a cascade usually prunes "
                "with the small model and rescores with the large one.",
                i + 1, stages[i].reranker.model_name, f"{after:,}", i, stages[i - 1].reranker.model_name, f"{before:,}",
            )  # fmt: skip


def _parameters(reranker: Reranker) -> int | None:
    if not isinstance(reranker, BaseReranker) or type(reranker).describe is BaseReranker.describe:
        return None
    try:
        value = reranker.describe().get("parameters")
    except Exception:  # a remote stage that cannot answer now: no warning, the call will say why
        return None
    return value if isinstance(value, int) else None


def _rebuilt(rebuild: Callable[..., Reranker], options: dict[str, Any]) -> Reranker:
    return rebuild(**options)


def _assembled(stages: tuple[CascadeStage, ...], normalization: Normalization, share: bool) -> CascadeReranker:
    return CascadeReranker(stages, normalization=normalization, share_tokens=share)
