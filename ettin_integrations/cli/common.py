"""What every ``ettin-rerank`` command shares: the error users can fix, flags derived from the option
declarations, building the shared engine from flags, optional-extra checks and logging set-up."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..config import EngineFields, cli_options, hub_offline
from ..contract import Reranker
from ..errors import OFFLINE_HINT, ModelLoadError

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback, exit status 2."""


def flag(name: str) -> str:
    """The command-line spelling of an option name (``max_length`` -> ``--max-length``)."""
    return "--" + name.replace("_", "-")


def add_offline_flag(group: Any, *flags: str, dest: str = "offline") -> None:
    """``--offline`` (and any other spellings): the one declaration of "never touch the network"."""
    group.add_argument(*flags, "--offline", dest=dest, action="store_true",
                       help="Never touch the network: local models or the Hugging Face cache only. "
                       "Also set by HF_HUB_OFFLINE=1.")  # fmt: skip


def engine_args(
    parser: argparse.ArgumentParser, model: type[BaseModel] = EngineFields, title: str = "engine options"
) -> None:
    """One flag per option of ``model``, derived from its declarations (``config.py``, ``serving/settings.py``)."""
    group = parser.add_argument_group(title)
    for name, kind, default, help_text, choices in cli_options(model):
        if name == "local_files_only":
            add_offline_flag(group, flag(name), dest=name)
            continue
        if kind is bool:
            if default:  # on by default: offer --no-NAME to turn it off
                group.add_argument(
                    flag(name), dest=name, action=argparse.BooleanOptionalAction, default=True, help=help_text
                )
            else:
                group.add_argument(flag(name), dest=name, action="store_true", help=help_text)
            continue
        shown = f" (default: {default})" if default is not None else ""
        group.add_argument(
            flag(name), dest=name, type=kind, default=default, choices=choices, help=help_text + shown, metavar=None
        )


def common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine chose and did")


def offline(requested: bool = False) -> bool:
    """Whether this command must stay off the network (its flag, or ``HF_HUB_OFFLINE``); if so, says so
    to everything else the command loads (an embedder, a teacher) through ``HF_HUB_OFFLINE=1``."""
    if requested or hub_offline():
        os.environ["HF_HUB_OFFLINE"] = "1"
        return True
    return False


_OPTION_NAMES = tuple(EngineFields.option_names())


def as_flags(message: str, model_flag: str = "--model", offline_flag: str = "--local-files-only") -> str:
    """Rephrase option names in a Python error as the CLI flags that set them (a command that names its
    models and its offline switch otherwise, as ``distill`` does, passes its own)."""
    message = message.replace("model='DIR'", f"{model_flag} DIR")
    message = re.sub(r"`?\blocal_files_only=True`?", offline_flag, message)
    message = re.sub(r"`?\btrust_remote_code=True`?", flag("trust_remote_code"), message)
    message = re.sub(r"\b(" + "|".join(_OPTION_NAMES) + r")=", lambda m: flag(m.group(1)) + " ", message)
    return message.replace("model='", f"{model_flag} '")


def describe_flag_errors(error: ValidationError, **sources: str) -> str:
    """A settings model's validation errors as the flags that set them, one clause each, without pydantic's
    type codes and URLs (``sources`` names where a value came from when it was not a flag, e.g. a variable)."""
    clauses = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        where = sources.get(name) or (flag(name) if name else "options")
        clauses.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(clauses)


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    options = {name: getattr(args, name) for name, *_ in cli_options(EngineFields) if hasattr(args, name)}
    options["local_files_only"] = offline(bool(options.get("local_files_only")))
    return options


def make_reranker(args: argparse.Namespace) -> Reranker:
    """The shared engine for the command's flags, with errors phrased for a command-line user."""
    from ..registry import get_reranker

    options = engine_kwargs(args)
    try:
        return get_reranker(options.pop("model"), **options)
    except ModelLoadError as exc:
        message = f"Could not load {exc.model!r}: {exc.reason.rstrip('.')}."
        if exc.hub_unreachable:
            message += f" {OFFLINE_HINT}."
        raise CliError(as_flags(message)) from None
    except Exception as exc:  # any load failure is the user's input to fix: one line, exit 2
        raise CliError(as_flags(" ".join(str(exc).split()) or repr(exc))) from None


def require(modules: dict[str, str], extra: str) -> None:
    """Fail before any work when an optional dependency is missing, with the pip command."""
    missing = [package for module, package in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise CliError(
            f"this command needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed. "
            f"Run: pip install 'ettin-integrations[{extra}]'"
        )


def configure_logging(verbose: bool) -> None:
    # Our own logger only: a root handler would print every library's records a second time next to
    # the handler that library installs itself (the Hub's retry warnings did).
    ours = logging.getLogger("ettin_integrations")
    if not any(getattr(h, "_ettin_cli", False) for h in ours.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._ettin_cli = True  # type: ignore[attr-defined]
        ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.propagate = False
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for noisy in ("bm25s", "transformers", "sentence_transformers", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.WARNING if noisy == "huggingface_hub" else logging.ERROR)


def beir_args(parser: argparse.ArgumentParser, k: int, k_help: str) -> None:
    """The BEIR folder and first stage, as ``eval`` and ``calibrate`` take them."""
    parser.add_argument("dataset", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--k", type=int, default=k, help=k_help)
    parser.add_argument("--embedder", default=None, help="sentence-transformers first stage (default: BM25)")


def plot_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--plot [DIR]``: draw ``what`` as PNG and SVG into DIR (default: the current folder)."""
    parser.add_argument(
        "--plot",
        nargs="?",
        const=".",
        default=None,
        metavar="DIR",
        help=f"also draw {what} as PNG and SVG into DIR (default: here; needs the [plot] extra)",
    )


def check_plot_folder(folder: str | None) -> None:
    """``--plot DIR``: matplotlib installed and DIR a folder we can write, checked before any work."""
    if folder is None:
        return
    require({"matplotlib": "matplotlib"}, "plot")
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"--plot {folder}: cannot write pictures there ({exc.strerror or exc}).") from None
    if not os.access(folder, os.W_OK):
        raise CliError(f"--plot {folder}: the folder is not writable.")


def load_beir_args(args: argparse.Namespace, needs: dict[str, str]) -> Any:
    """The dataset of :func:`beir_args`, after checking the extras (``needs``, plus BM25's) and ``--k``."""
    require({**needs, **({} if args.embedder else {"bm25s": "bm25s"})}, "cli")
    if args.k < 1:
        raise CliError("--k must be >= 1.")
    from ..evaluation import DatasetError, load_beir

    try:
        return load_beir(args.dataset, args.split)
    except DatasetError as exc:
        raise CliError(str(exc)) from None
