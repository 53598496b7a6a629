"""``ettin-rerank serve``: the rerank HTTP service (Cohere and TEI routes) over the shared engine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from pydantic import ValidationError

from ..config import CPU_BF16_SERVICE_OPTIONS, cli_options
from ..serving.settings import ServeSettings
from .common import CliError, common_args, describe_flag_errors, engine_args, make_reranker, require

NAME = "serve"
#: ``--max-length`` of a CPU service when the flag is not given (see ``run``).
CPU_SERVICE_MAX_LENGTH = 512
#: The environment variable that holds the service's key when ``--api-key`` is not given.
API_KEY_ENV = "ETTIN_API_KEY"


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


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    """The service's settings from the flags (and ``ETTIN_API_KEY``), errors phrased as flags.

    A key that is given but empty (``--api-key "$KEY"`` with ``KEY`` unset, or ``ETTIN_API_KEY=``) is refused:
    read as "no key" it would switch authentication off without a word.
    """
    values = {name: getattr(args, name) for name, *_ in cli_options(ServeSettings)}
    source = "--api-key"
    if values["api_key"] is None and API_KEY_ENV in os.environ:
        values["api_key"], source = os.environ[API_KEY_ENV], API_KEY_ENV
    if values["api_key"] is not None and not values["api_key"].strip():
        without = f"unset {source}" if source == API_KEY_ENV else f"leave out {source}"
        raise CliError(f"{source} is set but empty; give a key (e.g. from `python -c 'import secrets; "
                       f"print(secrets.token_urlsafe())'`), or {without} to serve without one")  # fmt: skip
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        raise CliError(describe_flag_errors(exc, api_key=source)) from None


def run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    require({"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}, "serve")
    import uvicorn

    from ..serving.app import RerankService
    from ..serving.server import RerankServer

    settings = serve_settings(args)
    import torch  # only once the command runs

    from ..devices import resolve_device, resolve_dtype

    try:
        device = resolve_device(args.device)
        on_cpu = device.type == "cpu"
        bf16_cpu = on_cpu and resolve_dtype(args.dtype, device) == torch.bfloat16
    except (TypeError, ValueError):
        on_cpu = bf16_cpu = False  # make_reranker reports the bad --device or --dtype in its own words
    if bf16_cpu:
        # The recommended CPU profile (1.89x the float32 service at 16 clients on 2 cores, RESULTS.md).
        chosen = {name: value for name, value in CPU_BF16_SERVICE_OPTIONS.items() if getattr(args, name) is None}
        for name, value in chosen.items():
            setattr(args, name, value)
        if chosen:
            flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in chosen.items())
            print(f"{flags} (CPU service default with bfloat16; give either flag to change it)", file=sys.stderr)
    if args.max_length is None and on_cpu:
        # On a CPU one window-filling 7999-token pair costs seconds (attention is quadratic); RAG passages
        # rarely need more than 512 tokens with the query. --max-length 7999 restores the model's limit.
        args.max_length = CPU_SERVICE_MAX_LENGTH
        print(f"max_length {CPU_SERVICE_MAX_LENGTH} (CPU service default; --max-length N to change)", file=sys.stderr)
    reranker = make_reranker(args)  # loaded before the port opens: /health means ready
    service = RerankService(reranker, settings)
    about = reranker.describe()
    pruned_by = "".join(f"{stage['model']} keeps {stage['keep']} -> " for stage in about.get("cascade", [])[:-1])
    print(
        f"Serving {pruned_by}{reranker.model_name} on http://{settings.host}:{settings.port} "
        f"({about.get('device')}, {about.get('dtype')}, attention={about.get('attention')})",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        service.app,
        host=settings.host,
        port=settings.port,
        log_level="info" if args.verbose else "warning",
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
    )
    try:
        RerankServer(config, in_flight=lambda: service.inflight_requests).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: the stop was asked for, not a crash
        return 130
    return 0
