"""Every engine option, declared once: type, default, validation and a one-line description.

The engine, the adapters' pydantic fields, the registry key, pickling and the CLI flags are all
derived from :class:`EngineFields`; nothing else spells an option out again.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .catalog import DEFAULT_SIZE, hub_id, resolve_model
from .errors import InputTypeError, InvalidInputError
from .normalization import DEFAULT_SHIFT, DEFAULT_TEMPERATURE

DEFAULT_MODEL = hub_id(DEFAULT_SIZE)

#: ``compile`` option values: off, or a ``torch.compile`` mode.
CompileMode = Literal["off", "default", "reduce-overhead", "max-autotune"]
#: ``chunk_aggregate`` values: how window scores combine into one document score.
ChunkAggregate = Literal["max", "mean", "first"]
#: Values of ``HF_HUB_OFFLINE`` that mean "never touch the network" (as huggingface_hub reads it).
_TRUTHY = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network: read here only, so every command agrees."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


# One rule for every numeric option, argument and field: numbers of any numeric type are accepted
# (numpy's too), text and flags are not. pydantic's lax mode would read "6" as 6 and True as 1.
def _whole_number(value: Any) -> Any:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"expected a whole number, got {type(value).__name__} {value!r:.40}")
    return int(value) if isinstance(value, numbers.Integral) else value


def _finite_number(value: Any) -> Any:
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r:.40}")
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
    return value


def check_flag(value: Any, name: str) -> bool:
    """``value`` as a boolean option; text is refused ("false" is a non-empty string, so bool() says True)."""
    if type(value).__name__ in ("bool", "bool_"):  # Python's and numpy's
        return bool(value)
    raise InputTypeError(f"{name} must be True or False, got {type(value).__name__} {value!r:.40}.")


def _flag(value: Any) -> Any:
    if type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise ValueError(f"expected True or False, got {type(value).__name__} {value!r:.40}")


#: A boolean option: True or False only (pydantic's lax mode would read "false" as False, 1 as True).
Flag = Annotated[bool, BeforeValidator(_flag)]
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
PositiveInt = Annotated[int, BeforeValidator(_whole_number), Field(ge=1)]
NonNegativeInt = Annotated[int, BeforeValidator(_whole_number), Field(ge=0)]
FiniteFloat = Annotated[float, BeforeValidator(_finite_number)]

#: Names users coming from other rerankers reach for, and the option that does that job here.
_KNOWN_MISTAKES = {
    "top_k": "top_n",
    "model_name": "model",
    "model_name_or_path": "model",
    "cross_encoder_kwargs": "model_kwargs (for the transformers model) or max_length",
    "automodel_args": "model_kwargs",
    "cache_folder": "model (download once, e.g. `hf download`, then pass the local directory)",
    "cache_dir": "model (download once, e.g. `hf download`, then pass the local directory)",
    "keep_retrieval_score": "keep_retrieval_score (LlamaIndex adapter only)",
    "batch_size": "batch_tokens (a budget of tokens per forward pass, not of pairs)",
    "use_fp16": "dtype='float16' (or dtype='auto': bfloat16 on CUDA)",
    "torch_dtype": "dtype",
    "max_seq_length": "max_length",
}


#: What a CPU service adds to bfloat16 (the recommended CPU profile, RESULTS.md "the service's profiles under load"):
#: bf16's best batch budget on 2 cores, and the token cache, so a request's documents are tokenized once.
CPU_BF16_SERVICE_OPTIONS: dict[str, int] = {"batch_tokens": 2048, "token_cache_tokens": 1_000_000}

#: ``num_threads`` is bounded by this many threads per core of the machine: more only adds contention.
THREADS_PER_CORE = 4


def max_threads() -> int:
    """The most ``num_threads`` a configuration may ask for on this machine."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def unknown_option_message(owner: str, unknown: list[str], known: list[str]) -> str:
    """``Unknown option(s) for OWNER: x (did you mean y?)`` for names a model does not declare."""
    parts = []
    for name in unknown:
        hint = _KNOWN_MISTAKES.get(name)
        if hint is None:
            close = difflib.get_close_matches(name, known, n=1)
            hint = close[0] if close else None
        parts.append(f"{name!r}" + (f" (did you mean {hint}?)" if hint else ""))
    return f"Unknown option(s) for {owner}: {', '.join(parts)}. Known options: {', '.join(sorted(known))}."


def describe_validation_error(owner: str, error: ValidationError) -> str:
    """One short line per bad option, without pydantic's URLs."""
    lines = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["loc"]:
            lines.append(f"{'.'.join(str(p) for p in item['loc'])}={item.get('input')!r}: {message}")
        else:  # a rule across options: its message names them (the input would be every option)
            lines.append(message)
    return f"Invalid option(s) for {owner}: " + "; ".join(lines)


class EngineFields(BaseModel):
    """The options that select and configure an :class:`~ettin_integrations.EttinReranker`."""

    model_config = ConfigDict(protected_namespaces=(), arbitrary_types_allowed=True, validate_default=False)

    model: str = Field(default=DEFAULT_MODEL, description="Hub id or local directory of the Ettin cross-encoder.")
    device: str = Field(
        default="auto",
        description="'auto' (cuda, then mps, then cpu; None means the same) or a torch device such as 'cpu', 'cuda:1'.",
    )
    dtype: str = Field(
        default="auto",
        description="'auto' (bfloat16 on CUDA and on CPUs with native bf16, AMX or AVX512-BF16; float32 elsewhere), "
        "or 'float32' (scores identical to CrossEncoder.predict), 'bfloat16', 'float16', 'float64'.",
    )
    float32_cut_margin: FiniteFloat | None = Field(
        default=None,
        ge=0,
        le=100,
        description="With a half-precision backbone, how far rounding may move a logit: rank(top_n=...) scores "
        "the documents that could cross the cut by that much again in float32, so the top_n kept are float32's "
        "(0: off; None: 0.05 on CPU, off on CUDA, where it would hold a float32 copy of the model in GPU memory).",
    )
    max_length: PositiveInt | None = Field(
        default=None,
        description="Longest (query, document) pair in tokens; default the model's own limit (7999 for Ettin).",
    )
    batch_tokens: PositiveInt | None = Field(
        default=None,
        description="Tokens per forward pass (padded, or real when packed); default per device; halves on CUDA OOM.",
    )
    normalize: Literal["sigmoid"] | None = Field(
        default=None,
        description="None for raw logits (about -12..22), or 'sigmoid' for sigmoid((x - shift) / temperature) in 0..1.",
    )
    normalize_shift: FiniteFloat = Field(
        default=DEFAULT_SHIFT, description="Logit mapped to 0.5 by normalize='sigmoid' (6.0, as Ettin's teacher)."
    )
    normalize_temperature: FiniteFloat = Field(
        default=DEFAULT_TEMPERATURE, gt=0, description="Divides the shifted logit before the sigmoid."
    )
    long_documents: Literal["truncate", "chunk"] = Field(
        default="truncate",
        description="'truncate' cuts documents to fit; 'chunk' scores overlapping windows and aggregates them.",
    )
    chunk_tokens: PositiveInt | None = Field(
        default=None,
        description="Document tokens per window in chunk mode; default whatever the window leaves after the query.",
    )
    chunk_overlap: NonNegativeInt | None = Field(
        default=None,
        description="Tokens shared by consecutive windows; default min(64, chunk_tokens // 4); must be < chunk_tokens.",
    )
    chunk_aggregate: ChunkAggregate = Field(
        default="max", description="How window scores combine into one document score."
    )
    keep_query_tokens: PositiveInt = Field(
        default=256,
        description="When a pair is too long the document is cut first; the query keeps at least this many tokens.",
    )
    token_cache_tokens: NonNegativeInt | None = Field(
        default=None,
        description="Document tokens kept in an LRU cache keyed by text (0: off; None: 1,000,000 on CUDA, "
        "where tokenizing is most of a query's time, off on CPU, where it is not).",
    )
    micro_batching: Flag = Field(
        default=True,
        description="Merge requests from concurrent threads or tasks that arrive while the model is busy "
        "into its next pass (each caller still gets exactly its own results).",
    )
    batch_wait_ms: FiniteFloat = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="With micro_batching, how long a pass waits for more requests first (0: never waits).",
    )
    attention: str = Field(
        default="auto",
        description="'auto' (flash-attention or PyTorch's varlen kernel on CUDA; on CPU 'ettin_local', which "
        "computes only each local layer's window; else sdpa) or an attn_implementation.",
    )
    compile: CompileMode = Field(
        default="off",
        description="torch.compile the model: 'default' fuses kernels; 'reduce-overhead' also replays CUDA graphs "
        "on bucketed shapes (CUDA only). Costs a compile at load; falls back to eager if it fails.",
    )
    num_threads: PositiveInt | None = Field(
        default=None,
        description="CPU threads torch may use (process-wide); with several workers per machine, cores / workers.",
    )
    special_tokens_as_text: Flag = Field(
        default=False,
        description="Read special-token text such as '[SEP]' in queries and documents as plain text "
        "(for untrusted content); predict turns it into the real special tokens.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) to load.")
    local_files_only: Flag = Field(
        default=False,
        description="Never touch the network: load from a local directory or the Hugging Face cache only.",
    )
    trust_remote_code: Flag = Field(
        default=False, description="Allow custom model code from the model's repository (Ettin does not need it)."
    )
    model_kwargs: dict[str, Any] | None = Field(
        default=None,
        description="Extra keyword arguments for the transformers model (can override dtype / attn_implementation).",
    )
    cascade: str | None = Field(
        default=None,
        description="Smaller models that prune before `model` rescores, in order, as 'MODEL:KEEP' separated by "
        "commas (e.g. '17m:30'): each scores what reaches it and passes on its best KEEP; every stage takes these "
        "same options. None: `model` alone.",
    )

    @field_validator("cascade", mode="before")
    @classmethod
    def _cascade_spec(cls, value: Any) -> Any:
        if value is None:
            return None
        return format_cascade(parse_cascade(value))

    @field_validator("num_threads")
    @classmethod
    def _sane_thread_count(cls, value: int | None) -> int | None:
        # torch takes any number and then crawls (or segfaults in a matmul) with 100000 threads.
        limit = max_threads()
        if value is not None and value > limit:
            raise ValueError(f"must be at most {limit} ({THREADS_PER_CORE} per core of the {os.cpu_count() or 1} "
                             "this machine has); leave it unset to use the usable cores")  # fmt: skip
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a hub id or a local directory path")
        return size_or_model(value)

    @field_validator("device", mode="before")
    @classmethod
    def _device_name(cls, value: Any) -> Any:
        if value is None:
            return "auto"
        return str(value) if type(value).__name__ == "device" else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype_name(cls, value: Any) -> Any:
        if value is None:
            return "auto"
        return str(value).replace("torch.", "") if type(value).__name__ == "dtype" else value

    @model_validator(mode="after")
    def _chunk_window(self) -> EngineFields:
        if self.chunk_tokens is not None:
            check_chunk_overlap(self.chunk_overlap, self.chunk_tokens, f"chunk_tokens={self.chunk_tokens}")
        return self

    @classmethod
    def option_names(cls) -> list[str]:
        """Every engine option, in declaration order."""
        return list(EngineFields.model_fields)

    def engine_options(self) -> dict[str, Any]:
        """The engine options as plain values (what pickling and the registry key are made of)."""
        return {name: getattr(self, name) for name in EngineFields.model_fields}

    def cascade_stages(self) -> list[tuple[str, int]]:
        """The pruning stages before ``model`` as ``(model, keep)`` pairs; empty without a cascade."""
        return [] if self.cascade is None else parse_cascade(self.cascade)


class EngineConfig(EngineFields):
    """A validated, immutable set of engine options; :meth:`create` is the friendly constructor.

    Example::

        config = EngineConfig.create(model="/models/ettin-17m", max_length=512)
        config.resolved().device    # 'cpu' on a machine without a GPU
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), arbitrary_types_allowed=True)

    _resolved: bool = PrivateAttr(default=False)

    @classmethod
    def create(cls, owner: str = "EttinReranker", **options: Any) -> EngineConfig:
        """Validated options: unknown names raise ``TypeError``, bad values ``ValueError``, naming the option."""
        unknown = [name for name in options if name not in cls.model_fields]
        if unknown:
            raise InputTypeError(unknown_option_message(owner, unknown, cls.option_names()))
        try:
            return cls(**options)
        except ValidationError as exc:
            raise InvalidInputError(describe_validation_error(owner, exc)) from None

    @property
    def is_resolved(self) -> bool:
        """Whether device, dtype and a local model path are already decided (see :meth:`resolved`)."""
        return self._resolved

    def resolved(self) -> EngineConfig:
        """The same options with ``"auto"`` device and dtype decided for this machine and local paths made absolute.

        Done once, by whoever first needs it (the registry key or the engine), so equivalent spellings
        (``"auto"`` vs ``"cpu"``, ``"./m"`` vs ``"/abs/m/"``) name the same engine.
        """
        if self._resolved:
            return self
        from .devices import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        model = _absolute(self.model)
        cascade = (
            None
            if self.cascade is None
            else format_cascade([(_absolute(name), keep) for name, keep in parse_cascade(self.cascade)])
        )
        resolved = self.model_copy(
            update={
                "device": str(device),
                "dtype": str(dtype).replace("torch.", ""),
                "model": model,
                "cascade": cascade,
            }
        )
        resolved._resolved = True
        return resolved

    def key(self) -> str:
        """A canonical string naming this configuration (for sharing engines)."""
        import json

        return json.dumps(self.resolved().engine_options(), sort_keys=True, default=str)


def _absolute(model: str) -> str:
    return str(Path(model).expanduser().resolve()) if is_local_path(model) else model


def parse_cascade(spec: Any) -> list[tuple[str, int]]:
    """``'17m:30,32m:10'`` (or a list of ``'MODEL:KEEP'`` strings or ``(model, keep)`` pairs) as pairs.

    Raises ``ValueError`` naming the entry that is not a model and a whole number >= 1.
    """
    if isinstance(spec, str):
        entries: list[Any] = [part.strip() for part in spec.split(",")]
    elif isinstance(spec, (list, tuple)):
        entries = list(spec)
    else:
        raise ValueError(f"expected 'MODEL:KEEP,...' or a list of them, got {type(spec).__name__}")
    if not entries or entries == [""]:
        raise ValueError("names no stage; expected 'MODEL:KEEP' (e.g. '17m:30'), or None for no cascade")
    stages = []
    for entry in entries:
        if isinstance(entry, str):
            name, sep, keep_text = entry.rpartition(":")
            if not sep or not name.strip() or not keep_text.strip().isascii() or not keep_text.strip().isdigit():
                raise ValueError(f"stage {entry!r:.80} is not 'MODEL:KEEP' with KEEP a whole number (e.g. '17m:30')")
            name, keep = name.strip(), int(keep_text)
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            name, keep = entry
            if not isinstance(name, (str, os.PathLike)):
                raise ValueError(f"stage model must be a name or a path, got {type(name).__name__}")
            name = os.fspath(name)
            keep = _whole_number(keep)
            if not isinstance(keep, int):
                raise ValueError(f"stage {name!r:.80}: keep must be a whole number, got {keep!r:.40}")
        else:
            raise ValueError(f"stage {entry!r:.80} is neither 'MODEL:KEEP' nor a (model, keep) pair")
        if keep < 1:
            raise ValueError(f"stage {name!r:.80}: keep must be >= 1, got {keep}")
        if "," in name or not name.strip():
            raise ValueError(f"stage model {name!r:.80} must be a hub id, a size or a path without commas")
        stages.append((size_or_model(name.strip()), keep))
    return stages


def size_or_model(name: str) -> str:
    """An Ettin size (``"150m"``) as its hub id, unless a local directory has that name."""
    return name if Path(name).expanduser().exists() else resolve_model(name)


def format_cascade(stages: list[tuple[str, int]]) -> str:
    """The canonical spelling of a cascade (sizes as hub ids): what keys, pickles and YAML carry."""
    return ",".join(f"{name}:{keep}" for name, keep in stages)


def check_chunk_overlap(overlap: int | None, window: int, window_text: str) -> None:
    """Refuse an overlap that is not smaller than the window: consecutive windows would repeat each other."""
    if overlap is not None and overlap >= window:
        raise InvalidInputError(
            f"chunk_overlap={overlap} must be smaller than the window ({window_text}), "
            "or consecutive windows would repeat each other."
        )


def is_local_path(model: str) -> bool:
    """A model name that refers to the file system rather than the hub."""
    return (
        model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1 or Path(model).expanduser().exists()
    )


def options_docstring(indent: str = "        ") -> str:
    """The ``Args:`` lines for every engine option, from their descriptions (for generated docstrings)."""
    lines = []
    for name, field in EngineFields.model_fields.items():
        lines.append(f"{indent}{name}: {field.description} Default: {field.default!r}.")
    return "\n".join(lines)


def options_table() -> str:
    """The README's option table (Markdown), generated from the declarations so it cannot drift."""
    rows = ["| option | default | what it does |", "|---|---|---|"]
    for name, field in EngineFields.model_fields.items():
        rows.append(f"| `{name}` | `{field.default!r}` | {field.description} |")
    return "\n".join(rows)


def cli_options(model: type[BaseModel] = EngineFields) -> list[tuple[str, Any, Any, str, tuple[str, ...] | None]]:
    """``(name, python type, default, help, choices)`` for every field of ``model`` a command line can set.

    Options whose values are not scalars (``model_kwargs``) are left to Python callers.
    """
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) is not None else []
        base = annotation
        choices: tuple[str, ...] | None = None
        if get_origin(annotation) is Literal:
            base, choices = str, tuple(get_args(annotation))
        elif args:
            inner = args[0]
            if get_origin(inner) is Literal:
                base, choices = str, tuple(get_args(inner))
            elif get_origin(inner) is Annotated:
                base = get_args(inner)[0]
            else:
                base = inner
        elif get_origin(annotation) is Annotated:
            base = get_args(annotation)[0]
        if base not in (str, int, float, bool):
            continue
        out.append((name, base, field.default, field.description or "", choices))
    return out
