"""Reading a request body as the service's own code, not FastAPI's: bounded before any model is built.

FastAPI would parse a 17 MB array of 1.3 M tiny objects in full (about 1 GB, seconds of a blocked
event loop) before our limits ran, and answer broken JSON in its own error shape. Here the JSON is
parsed off the event loop with a bound on the number of objects, the documents are counted before
pydantic builds anything, and every failure is an :class:`ApiError` in the protocol's shape.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

__all__ = ["ApiError", "parse_body"]

M = TypeVar("M", bound=BaseModel)

#: Bodies larger than this are parsed in a worker thread, so health checks keep answering meanwhile.
_PARSE_INLINE_BYTES = 64 * 1024
#: Objects a body may hold besides one per document (the body itself and a little slack).
_OBJECT_SLACK = 16


class ApiError(Exception):
    """An answer in the protocol: status, message, error type, extra headers."""

    def __init__(self, status: int, message: str, error_type: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.headers = status, message, error_type, headers or {}


class _TooManyObjects(Exception):
    pass


def _loads(body: bytes, max_objects: int) -> Any:
    count = 0

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > max_objects:
            raise _TooManyObjects
        return dict(pairs)

    # Decoded here, strictly: json.loads(bytes) leaves the choice of decoder to whatever set it up.
    return json.loads(body.decode("utf-8"), object_pairs_hook=counted)


def _where(location: tuple[int | str, ...]) -> str:
    """``("texts", 1)`` -> ``texts[1]``: the field as the request spells it."""
    out = ""
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def parse_body(request: Request, model: type[M], list_field: str, max_items: int) -> M:
    """``request``'s JSON body as ``model``; refuses (413) more than ``max_items`` in ``list_field`` before
    building anything, and answers broken JSON (400) and invalid fields (422) naming them."""
    body = await request.body()
    try:
        if len(body) > _PARSE_INLINE_BYTES:
            data = await asyncio.to_thread(_loads, body, max_items + _OBJECT_SLACK)
        else:
            data = _loads(body, max_items + _OBJECT_SLACK)
    except _TooManyObjects:
        raise ApiError(413, f"more than {max_items} documents in one request; the limit is {max_items}",
                       "PayloadTooLarge") from None  # fmt: skip
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply to be a rerank request", "InvalidJson") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not JSON in UTF-8 ({type(exc).__name__}: {exc})"[:300],
                       "InvalidJson") from None  # fmt: skip
    if not isinstance(data, dict):
        raise ApiError(422, f"request body must be a JSON object, got {type(data).__name__}", "Validation")
    items = data.get(list_field)
    if isinstance(items, list) and len(items) > max_items:
        raise ApiError(413, f"{len(items)} documents in one request; the limit is {max_items}", "PayloadTooLarge")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Never echo the input back (it may be huge, or not encodable as JSON).
        problems = "; ".join(f"{_where(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ApiError(422, problems, "Validation") from None
