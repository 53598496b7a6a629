"""Load an Ettin reranker once per process, through sentence-transformers' ``CrossEncoder`` only.

``AutoModelForSequenceClassification`` would load Ettin's modular head as random weights without
an error, so this is the only loading path. Loaded models are cached by their load options: every
engine (and every adapter) asking for the same weights on the same device shares one copy.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..concurrency import forking, shared
from ..config import EngineConfig, is_local_path
from ..errors import InvalidModelError, ModelLoadError, ModelNotFoundError
from ..kernels import local_window, varlen
from .compilation import Compilation, enable_checked
from .dependencies import check_dependencies
from .head_precision import HALF, keep_head_in_float32
from .hub import prepare_hub_model
from .inputs import collate
from .placement import PACKED_ATTENTION, attention_candidates, resolve_dtype

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadSpec:
    """Everything that decides which weights are loaded and how: the model cache key."""

    model: str
    device: str
    dtype: str
    attention: str
    compile: str
    revision: str | None
    local_files_only: bool
    trust_remote_code: bool
    model_kwargs: str  # canonical JSON, so the spec stays hashable

    @classmethod
    def from_config(cls, config: EngineConfig) -> LoadSpec:
        """The load-relevant part of a resolved :class:`EngineConfig`."""
        return cls(
            model=config.model,
            device=config.device,
            dtype=config.dtype,
            attention=config.attention,
            compile=config.compile,
            revision=config.revision,
            local_files_only=config.local_files_only,
            trust_remote_code=config.trust_remote_code,
            model_kwargs=json.dumps(config.model_kwargs or {}, sort_keys=True, default=str),
        )


@dataclass(eq=False)  # compared and hashed by identity: registered for fork resets
class LoadedModel:
    """A loaded ``CrossEncoder`` plus what the engine needs to drive it."""

    cross_encoder: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    attention: str
    max_length: int
    pad_token_id: int
    lowercase: bool
    activation: Any
    #: torch.compile state when the ``compile`` option asked for it (None: eager by choice).
    compilation: Compilation | None = None
    # One forward at a time per model: concurrent callers would only fight over the same cores or
    # GPU memory, and a shared lock keeps CUDA out-of-memory back-off deterministic.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        forking.register(self)

    @property
    def parameters(self) -> int:
        """Weights in the model (what orders a cascade's stages by size)."""
        return sum(p.numel() for p in self.cross_encoder.parameters())

    def reset_after_fork(self) -> None:
        # A lock another parent thread held at the fork would stay held forever in the child.
        self.lock = threading.Lock()


_models: shared.SharedInstances[LoadedModel] = shared.SharedInstances()


def clear_model_cache() -> None:
    """Drop every cached model (engines that still hold one keep it alive until they go)."""
    _models.clear()


def shared_model(config: EngineConfig) -> LoadedModel:
    """The shared model for a resolved config, loaded on first use (a load blocks only the same model)."""
    spec = LoadSpec.from_config(config)
    device = torch.device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)

    def load() -> LoadedModel:
        loaded = _load(spec, device, dtype)
        forking.install(lambda: any(m.device.type == "cuda" for m in _models.values()))
        return loaded

    return _models.get_or_create(spec, load)


def check_local_model(model: str) -> None:
    """Fail now, naming the path, if a local model path cannot be a saved cross-encoder.

    Cheap (no weights are read), so adapters call it at construction and a wrong path surfaces
    before the first query.
    """
    if not is_local_path(model):
        return
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(
            model,
            f"Model path {model!r} does not exist. Pass a directory holding a saved CrossEncoder "
            f"(modules.json, config.json, tokenizer.json) or a Hugging Face hub id such as "
            f"'cross-encoder/ettin-reranker-17m-v1'.",
        )
    if not path.is_dir():
        raise InvalidModelError(
            model, f"Model path {model!r} is a file; pass the directory that holds the saved CrossEncoder."
        )
    for name in ("modules.json", "config.json", "config_sentence_transformers.json"):
        if (path / name).is_file():
            _read_json(path / name)  # a damaged file is named here, not deep inside transformers
    if (path / "modules.json").is_file():
        return
    config_path = path / "config.json"
    if not config_path.is_file():
        raise InvalidModelError(
            model, f"{model!r} is not a cross-encoder checkpoint: it has neither modules.json nor config.json."
        )
    config = _read_json(config_path)
    architectures = (config.get("architectures") if isinstance(config, dict) else None) or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        # Loading this would bolt a randomly initialised classifier onto the backbone, silently.
        raise InvalidModelError(
            model,
            f"{model!r} is not a cross-encoder: it has no modules.json and its architectures "
            f"{architectures} have no sequence-classification head, so scores would be random.",
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModelError(
            str(path), f"{path} is not valid JSON ({exc}); the checkpoint is damaged or incomplete."
        ) from None


def _load(spec: LoadSpec, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    check_dependencies()
    from sentence_transformers import CrossEncoder

    check_local_model(spec.model)
    local_files_only = prepare_hub_model(spec.model, spec.revision, spec.local_files_only)
    user_kwargs: dict[str, Any] = json.loads(spec.model_kwargs)
    for key in ("dtype", "torch_dtype"):
        # The spec keeps model_kwargs as JSON (hashable); a torch.dtype came through as "torch.float64".
        value = user_kwargs.get(key)
        if (
            isinstance(value, str)
            and value.startswith("torch.")
            and isinstance(getattr(torch, value[6:], None), torch.dtype)
        ):
            user_kwargs[key] = getattr(torch, value[6:])
    errors: list[str] = []
    for attention in attention_candidates(spec.attention, device, dtype):
        if attention == varlen.ATTENTION_NAME:
            varlen.register()
        if attention == local_window.ATTENTION_NAME:
            local_window.register()
        model_kwargs = {"dtype": dtype, "attn_implementation": attention, **user_kwargs}
        try:
            cross_encoder = CrossEncoder(
                spec.model,
                device=str(device),
                revision=spec.revision,
                local_files_only=local_files_only,
                trust_remote_code=spec.trust_remote_code,
                model_kwargs=model_kwargs,
            )
        except (ImportError, ValueError) as exc:
            if not _about_attention(exc, attention):
                raise type(exc)(f"Could not load {spec.model!r}: {exc}") from exc
            # An attention implementation that is installed but unusable here (e.g. flash-attn built
            # for another CUDA) fails at load time; try the next candidate.
            errors.append(f"{attention}: {exc}")
            logger.info("Attention %r unavailable for %s (%s); trying the next option.", attention, spec.model, exc)
            continue
        except OSError as exc:
            raise ModelLoadError(spec.model, str(exc), hub_unreachable=_hub_unreachable(spec.model, exc)) from exc
        except pickle.UnpicklingError as exc:
            first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                spec.model,
                "a weights file is a pickle that holds more than plain tensors, and running it could execute "
                f"arbitrary code, so it was refused ({first_line}). Re-save the model as safetensors",
            ) from exc
        except Exception as exc:  # damaged weights and the like: name the model, keep the cause
            raise ModelLoadError(spec.model, f"{type(exc).__name__}: {exc}") from exc
        loaded = _wrap(cross_encoder, spec, device, dtype, attention)
        if loaded.attention in PACKED_ATTENTION:
            try:
                _check_packed_matches_padded(loaded)
            except Exception as exc:  # a kernel that imports but fails on this GPU: fall back, loudly
                errors.append(f"{attention}: {exc}")
                logger.warning("Attention %r failed its check on %s (%s); falling back.", attention, device, exc)
                continue
        if spec.compile != "off":
            _compile(loaded, spec.compile)
        logger.info(
            "Loaded %s on %s (%s, attention=%s, max_length=%d)",
            spec.model,
            device,
            str(dtype).replace("torch.", ""),
            loaded.attention,
            loaded.max_length,
        )
        return loaded
    raise ModelLoadError(spec.model, f"no attention implementation worked: {'; '.join(errors)}")


def _about_attention(exc: Exception, attention: str) -> bool:
    """Whether a load failure is the attention implementation's fault (so another one may work)."""
    text = str(exc).lower()
    return attention.lower() in text or any(word in text for word in ("attn", "attention", "flash"))


def _hub_unreachable(model: str, exc: OSError) -> bool:
    if is_local_path(model):
        return False
    text = f"{type(exc).__name__} {exc}".lower()
    return any(hint in text for hint in ("connect", "offline", "local cache", "localentrynotfound", "resolve"))


def _wrap(cross_encoder: Any, spec: LoadSpec, device: torch.device, dtype: torch.dtype, attention: str) -> LoadedModel:
    from sentence_transformers.base.modules import Transformer

    first = cross_encoder[0]
    if not isinstance(first, Transformer) or first.tokenizer is None:
        raise InvalidModelError(
            spec.model, f"{spec.model!r} is not a text cross-encoder: its first module is {type(first).__name__}."
        )
    if getattr(cross_encoder, "num_labels", 1) != 1:
        raise InvalidModelError(
            spec.model,
            f"{spec.model!r} predicts {cross_encoder.num_labels} labels; a reranker must output one relevance score.",
        )
    tokenizer = first.tokenizer
    limits = [
        v
        for v in (first.max_seq_length, getattr(first.config, "max_position_embeddings", None))
        if isinstance(v, int) and 0 < v < 10**7
    ]
    max_length = min(limits) if limits else 512
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cross_encoder.eval()
    if next(cross_encoder.parameters()).dtype in HALF:
        keep_head_in_float32(cross_encoder)
    loaded = LoadedModel(
        cross_encoder=cross_encoder,
        tokenizer=tokenizer,
        device=device,
        # What the weights really are: model_kwargs={"dtype": ...} can override the requested dtype.
        dtype=next(cross_encoder.parameters()).dtype,
        attention=getattr(first.config, "_attn_implementation", attention) or attention,
        max_length=max_length,
        pad_token_id=pad_token_id,
        lowercase=bool(getattr(first, "do_lower_case", False)),
        activation=getattr(cross_encoder, "activation_fn", None),
    )
    _check_scores_output(loaded, spec.model)
    return loaded


def _check_rows(loaded: LoadedModel) -> list[list[int]]:
    return [
        loaded.tokenizer("query", "a short document", add_special_tokens=True)["input_ids"],
        loaded.tokenizer("another query", "a somewhat longer document for the check", add_special_tokens=True)[
            "input_ids"
        ],
    ]


def _check_features(loaded: LoadedModel, rows: list[list[int]], packed: bool) -> dict[str, Any]:
    if packed:
        return varlen.pack(rows, loaded.device)
    return {k: v.to(loaded.device) for k, v in collate(rows, loaded.pad_token_id).items()}


def _compile(loaded: LoadedModel, mode: str) -> None:
    """Compile the backbone now, on the check pairs, so the first real call does not pay for it."""
    compilation = Compilation(loaded.cross_encoder[0].auto_model, mode, loaded.device)
    rows = _check_rows(loaded)

    def score() -> torch.Tensor:
        features = _check_features(loaded, rows, packed=loaded.attention in PACKED_ATTENTION)
        with torch.inference_mode():
            return loaded.cross_encoder(features)["scores"].reshape(-1)

    enable_checked(compilation, score, shape=(0,))  # no batch has 0 tokens: its own graph
    loaded.compilation = compilation
    logger.info("Forward path for %s: %s (compiled in %.1f s)", loaded.device, compilation.path,
                compilation.compile_seconds)  # fmt: skip


def _check_packed_matches_padded(loaded: LoadedModel) -> None:
    """Run two pairs packed and padded: the unpadded path must really work here, and agree."""
    rows = _check_rows(loaded)
    with torch.inference_mode():
        packed = loaded.cross_encoder(_check_features(loaded, rows, packed=True))["scores"].float().reshape(-1)
        padded = loaded.cross_encoder(_check_features(loaded, rows, packed=False))["scores"].float().reshape(-1)
    tolerance = 1e-3 if loaded.dtype == torch.float32 else 0.25
    if not torch.allclose(packed, padded, atol=tolerance, rtol=0.02):
        raise RuntimeError(f"packed scores {packed.tolist()} differ from padded {padded.tolist()}")


def _check_scores_output(loaded: LoadedModel, name: str) -> None:
    """One tiny forward at load: proves the model yields one score per pair (and warms it up)."""
    features = loaded.tokenizer(["query"], ["document"], return_tensors="pt")
    features = {
        k: v.to(loaded.device) for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    with torch.inference_mode():
        out = loaded.cross_encoder(features)
    scores = out.get("scores") if isinstance(out, dict) else None
    if scores is None or scores.numel() != 1:
        raise InvalidModelError(
            name,
            f"{name!r} loaded, but it is not a cross-encoder: it produced no single relevance score per pair "
            f"(outputs: {sorted(out) if isinstance(out, dict) else type(out).__name__}).",
        )
