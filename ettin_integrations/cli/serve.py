"""``ettin-rerank serve``: the rerank HTTP service (Cohere and TEI routes) over the shared engine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from ..config import cli_options
from ..serving.settings import ServeSettings
from .common import CliError, as_flags, common_args, engine_args, make_reranker, require

NAME = "serve"


def add_parser(commands: Any) -> argparse.ArgumentParser:
    serve = commands.add_parser(
        NAME,
        help="serve /v2/rerank, /v1/rerank (Cohere) and /rerank (TEI) over HTTP",
        description="A rerank HTTP service: Cohere- and TEI-shaped routes, cross-request batching, "
        "/health, /info, /metrics. Binds 127.0.0.1 unless --host says otherwise.",
    )
    common_args(serve)
    engine_args(serve)
    engine_args(serve, ServeSettings, "service options")
    return serve


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    require({"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}, "serve")
    import uvicorn

    from ..serving import create_app

    values = {name: getattr(args, name) for name, *_ in cli_options(ServeSettings)}
    values["api_key"] = values["api_key"] or os.environ.get("ETTIN_API_KEY") or None
    try:
        settings = ServeSettings(**values)
    except ValueError as exc:
        raise CliError(as_flags(" ".join(str(exc).split()))) from None
    reranker = make_reranker(args)  # loaded before the port opens: /health means ready
    app = create_app(reranker, settings)
    about = reranker.describe()
    print(
        f"Serving {reranker.model_name} on http://{settings.host}:{settings.port} "
        f"({about.get('device')}, {about.get('dtype')}, attention={about.get('attention')})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    return 0
