"""Ray Serve: the rerank service's own FastAPI app as ingress, one engine per replica.

Replicas, GPUs and autoscaling are Ray Serve configuration, not code of ours. Mind
``max_ongoing_requests``: Serve caps how many requests a replica holds at once (default 5), and
only requests a replica holds can be merged into one model pass, so it is set to at least the batch
you want (64 here).

Example::

    from ray import serve
    from ettin_integrations.scaling.ray_serve import rerank_app

    serve.run(rerank_app("cross-encoder/ettin-reranker-17m-v1", num_replicas=2, num_gpus=0.5), route_prefix="/")
    # POST http://127.0.0.1:8000/v2/rerank, /v1/rerank or /rerank, as with `ettin-rerank serve`
"""

from __future__ import annotations

from typing import Any

from ..config import DEFAULT_MODEL
from ..contract import Reranker
from ..serving.settings import ServeSettings

try:
    from ray import serve
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ettin_integrations.scaling.ray_serve needs Ray Serve: pip install 'ettin-integrations[ray]'"
    ) from exc


@serve.ingress()
class EttinRerankDeployment:
    """One replica: loads its engine once, then serves the same routes as ``ettin-rerank serve``."""

    def __init__(self, model: str, engine_options: dict[str, Any], settings: dict[str, Any]) -> None:
        from ..registry import get_reranker

        self.engine: Reranker = get_reranker(model, **engine_options)
        self.settings = ServeSettings(**settings)

    def __serve_build_asgi_app__(self) -> Any:
        from ..serving.app import create_app

        return create_app(self.engine, self.settings)


def rerank_app(
    model: str = DEFAULT_MODEL,
    *,
    engine_options: dict[str, Any] | None = None,
    settings: ServeSettings | None = None,
    num_replicas: int | str = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_ongoing_requests: int = 64,
    autoscaling_config: dict[str, Any] | None = None,
    name: str = "EttinRerank",
) -> Any:
    """A bound Ray Serve application serving the rerank routes.

    Args:
        model: Hub id or local directory, loaded once per replica.
        engine_options: :class:`EttinReranker` options (``max_length``, ``batch_tokens``, ...).
        settings: Service limits and API key (host/port are Ray Serve's HTTP options instead).
        num_replicas: Replicas, or ``"auto"`` with ``autoscaling_config``.
        num_cpus: CPUs reserved per replica.
        num_gpus: GPUs per replica (fractions share one GPU between replicas).
        max_ongoing_requests: Requests one replica holds at once: the most it can merge into a pass.
        autoscaling_config: Passed to Ray Serve unchanged (``min_replicas``, ``max_replicas``, ...).
        name: Deployment name.

    Returns:
        An application for ``serve.run(...)``.

    Example::

        serve.run(rerank_app(num_replicas="auto", autoscaling_config={"min_replicas": 1, "max_replicas": 4}))
    """
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
        "max_ongoing_requests": max_ongoing_requests,
    }
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
        options["num_replicas"] = "auto" if num_replicas == 1 else num_replicas
    else:
        options["num_replicas"] = num_replicas
    deployment: Any = serve.deployment(EttinRerankDeployment, **options)
    return deployment.bind(model, dict(engine_options or {}), (settings or ServeSettings()).model_dump())
