"""OpenTelemetry spans for rerank calls when ``opentelemetry-api`` is installed; nothing otherwise.

The engine, :class:`~ettin_integrations.RemoteReranker` and the service each emit a span per rerank
call, named and attributed after the GenAI semantic conventions' draft ``rerank`` operation
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``) plus this
package's own ``ettin.*`` attributes (candidates, top_n, pairs, truncated, merged-pass size, stage
seconds). A model pass is a child span of the first request it serves, linked to the others. The
service continues the caller's trace from ``traceparent``; the remote client sends it.

Spans go wherever the application's tracer provider sends them (the OpenTelemetry SDK and an
exporter, configured by the application): this module only uses the API. Without the API, every
function here is a no-op after one ``find_spec`` check, and ``opentelemetry`` is never imported;
it is also imported only at the first traced call, never by ``import ettin_integrations``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["attach_attributes", "current_context", "extract", "inject", "span"]

INSTRUMENTATION_NAME = "ettin_integrations"
OPERATION = "rerank"

_api: Any = None  # the opentelemetry modules once looked up; False when not installed
_KINDS = ("internal", "server", "client")


def _otel() -> Any:
    global _api
    if _api is None:
        try:
            find = importlib.util.find_spec
            if find("opentelemetry") is None or find("opentelemetry.trace") is None:
                _api = False
            else:
                from opentelemetry import context, propagate, trace

                _api = (trace, propagate, context)
        except (ImportError, ValueError):  # not installed, or installed broken: no spans, no error
            _api = False
    return _api


def enabled() -> bool:
    """True when ``opentelemetry-api`` is installed (spans go to its tracer provider)."""
    return bool(_otel())


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    kind: str = "internal",
    parent: Any = None,
    links: Sequence[Any] = (),
) -> Iterator[Any]:
    """A current span named ``name`` (``None`` is yielded when OpenTelemetry is not installed).

    ``parent`` is a context from :func:`current_context` or :func:`extract` (default: the current
    one); ``links`` are further contexts this span serves (e.g. the other requests of a merged pass).
    """
    api = _otel()
    if not api:
        yield None
        return
    trace = api[0]
    tracer = trace.get_tracer(INSTRUMENTATION_NAME)
    span_links = []
    for context in links:
        linked = trace.get_current_span(context).get_span_context()
        if linked.is_valid:
            span_links.append(trace.Link(linked))
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=getattr(trace.SpanKind, kind.upper()) if kind in _KINDS else trace.SpanKind.INTERNAL,
        attributes=_clean(attributes or {}),
        links=span_links,
    ) as current:
        yield current


def attach_attributes(current: Any, attributes: Mapping[str, Any]) -> None:
    """Set ``attributes`` (``None`` values skipped) on a span from :func:`span`, if it records."""
    if current is not None and current.is_recording():
        current.set_attributes(_clean(attributes))


def current_context() -> Any:
    """The active context, to carry into another thread (``None`` without OpenTelemetry)."""
    api = _otel()
    return api[2].get_current() if api else None


def inject(headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add ``traceparent`` (and whatever the configured propagator sends) for the current span."""
    api = _otel()
    if api:
        api[1].inject(headers)
    return headers


def extract(headers: Mapping[str, str]) -> Any:
    """The caller's context from request headers (``None`` without OpenTelemetry)."""
    api = _otel()
    return api[1].extract(headers) if api else None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
