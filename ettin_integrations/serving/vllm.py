"""vLLM's ``/score`` shape: which pairs a body asks for (checked before any work), and the answer."""

from __future__ import annotations

import time
import uuid

from ..errors import InputTypeError, InvalidInputError
from ..pipeline.validation import check_documents
from ..wire import ScoreData, ScoreRequest, ScoreResponse
from .requests import ApiError

__all__ = ["requested_pairs", "score_response"]


def requested_pairs(body: ScoreRequest, max_documents: int) -> tuple[list[str], list[str]]:
    """``(queries, texts)`` of equal length: one ``text_1`` for every ``text_2``, or one each; errors name
    the item by its position in the request."""
    firsts = [body.text_1] if isinstance(body.text_1, str) else body.text_1
    seconds = [body.text_2] if isinstance(body.text_2, str) else body.text_2
    if len(firsts) == 1:
        firsts = firsts * len(seconds)
    if len(firsts) != len(seconds):
        raise ApiError(422, f"text_1 has {len(firsts)} items and text_2 {len(seconds)}: give one text_1, or "
                       "one per text_2 item", "Validation")  # fmt: skip
    if len(seconds) > max_documents:
        raise ApiError(413, f"{len(seconds)} pairs in one request; the limit is {max_documents}", "PayloadTooLarge")
    try:
        check_documents(firsts, "text_1")
        check_documents(seconds, "text_2")
    except (InputTypeError, InvalidInputError) as exc:
        raise ApiError(422, str(exc), "Validation") from None
    return firsts, seconds


def score_response(model: str, scores: list[float], tokens: int) -> ScoreResponse:
    """The answer, one score per requested pair in input order."""
    return ScoreResponse(
        id=f"score-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        data=[ScoreData(index=i, score=score) for i, score in enumerate(scores)],
        usage={"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    )
