"""Offline Ettin-shaped checkpoints with random weights, for tests, benchmarks and examples.

The Hugging Face Hub is often out of reach (CI, air-gapped servers), yet tests must run the *real*
loading path. This module writes a sentence-transformers ``CrossEncoder`` in Ettin's modular format
(``Transformer`` -> ``Pooling(cls)`` -> ``Dense(H,H,GELU)`` -> ``LayerNorm`` -> ``Dense(H,1)``) with
random weights, so ``EttinReranker(path)`` goes through exactly the code users hit with a hub id.

Example::

    from ettin_integrations.testing import build_checkpoint

    path = build_checkpoint("/tmp/ettin-17m", size="17m")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..catalog import ETTIN_MAX_LENGTH, ETTIN_SIZES
from ..errors import InvalidInputError

__all__ = ["TINY_SHAPE", "build_checkpoint", "build_once", "find_shared_dir", "load_architecture", "tokenizer_source"]

#: A shape small enough for fast unit tests, still with global and local (windowed) layers.
TINY_SHAPE: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 96,
}

_SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

# Enough varied English to train a small byte-level BPE when the real tokenizer is not around.
_FALLBACK_CORPUS = """
Berlin is the capital and largest city of Germany by both area and population.
The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.
Photosynthesis is the process used by plants to convert light energy into chemical energy.
A cross-encoder reads the query and the document together and outputs a relevance score.
Retrieval-augmented generation retrieves passages and gives them to a language model.
The mitochondria is the powerhouse of the cell; it produces most of the chemical energy.
Python is a high-level programming language known for its readability and large ecosystem.
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.
Rerankers improve search quality by rescoring the top candidates of a first-stage retriever.
Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.
How many people live in Berlin? What is the tallest mountain on Earth? Who wrote Hamlet?
Mount Everest is Earth's highest mountain above sea level, located in the Himalayas.
William Shakespeare wrote Hamlet, Macbeth, Othello, King Lear and many other plays.
Numbers like 1, 2, 3, 42, 1999 and 2026 appear in text; so do symbols such as %, $, & and #.
"""


def find_shared_dir() -> Path | None:
    """Return the team's read-only ``shared/`` folder (``$ETTIN_SHARED_DIR`` or ``../shared``), if present."""
    candidates = []
    if os.environ.get("ETTIN_SHARED_DIR"):
        candidates.append(Path(os.environ["ETTIN_SHARED_DIR"]))
    here = Path(__file__).resolve().parents[2]  # the checkout holding ettin_integrations/
    candidates += [here.parent / "shared", Path.cwd().parent / "shared"]
    for candidate in candidates:
        if (candidate / "ettin-architecture.json").is_file():
            return candidate
    return None


def load_architecture(size: str) -> dict[str, int]:
    """Backbone shape for ``size`` (``"17m"`` ... ``"1b"``, or ``"tiny"``), from shared/ when present."""
    if size == "tiny":
        return dict(TINY_SHAPE)
    shared = find_shared_dir()
    sizes = ETTIN_SIZES
    if shared is not None:
        sizes = json.loads((shared / "ettin-architecture.json").read_text())["sizes"]
    if size not in sizes:
        raise ValueError(f"Unknown Ettin size {size!r}; expected one of {sorted(sizes)} or 'tiny'.")
    return dict(sizes[size])


def _real_tokenizer_dir() -> Path | None:
    shared = find_shared_dir()
    if shared is not None and (shared / "ettin-tokenizer" / "tokenizer.json").is_file():
        return shared / "ettin-tokenizer"
    return None


def _build_tokenizer(tokenizer: str | os.PathLike | None, max_length: int) -> Any:
    """Load the real Ettin tokenizer if available, else train a small byte-level BPE offline."""
    from transformers import PreTrainedTokenizerFast

    if tokenizer == "fallback":
        source = None
    elif tokenizer is not None:
        source = Path(tokenizer)
    else:
        source = _real_tokenizer_dir()
    if source is not None:
        tok = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"))
    else:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

        backend = Tokenizer(models.BPE(unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=_SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        backend.train_from_iterator(_FALLBACK_CORPUS.strip().splitlines() * 4, trainer=trainer)
        cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok = PreTrainedTokenizerFast(tokenizer_object=backend)
    tok.add_special_tokens(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}
    )
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.model_max_length = max_length
    return tok


def build_checkpoint(
    path: str | os.PathLike,
    size: str = "tiny",
    *,
    tokenizer: str | os.PathLike | None = None,
    seed: int = 0,
    initializer_range: float = 1.0,
    score_scale: float = 6.0,
    score_shift: float = 5.0,
    max_length: int = ETTIN_MAX_LENGTH,
    overwrite: bool = False,
) -> Path:
    """Write an Ettin-architecture ``CrossEncoder`` with random weights to ``path`` and return it.

    Args:
        path: Output directory. Reused as-is when it already holds a checkpoint (unless ``overwrite``).
        size: ``"17m"``, ``"32m"``, ``"68m"``, ``"150m"``, ``"400m"``, ``"1b"`` or ``"tiny"``.
        tokenizer: Directory with a ``tokenizer.json``; default: ``shared/ettin-tokenizer`` when present,
            else a small BPE trained here. ``"fallback"`` forces the trained one.
        seed: Seed for the random weights, so the same call gives the same checkpoint.
        initializer_range: Std of the backbone's init. Random models score everything alike at the
            usual 0.02; 1.0 makes scores depend on the text, so orderings mean something.
        score_scale: Std of the output logits, to mimic Ettin's teacher scale (about -12..22).
        score_shift: Mean of the output logits.
        max_length: The checkpoint's max sequence length (Ettin: 7999).
        overwrite: Rebuild even if ``path`` already holds a checkpoint.
    """
    path = Path(path)
    return build_once(
        path,
        built=lambda: (path / "modules.json").is_file() and not overwrite,
        build=lambda: _write_random_checkpoint(
            path, size, tokenizer, seed, initializer_range, score_scale, score_shift, max_length
        ),
    )


def check_output_folder(path: Path) -> None:
    """Refuse to build into a file, or into a folder that holds other things and no checkpoint (``--overwrite``
    rebuilds a checkpoint; it never writes beside someone's unrelated files).

    Raises:
        InvalidInputError: naming the path and what to give instead.
    """
    if path.exists() and not path.is_dir():
        raise InvalidInputError(f"{path} is a file; give a folder for the checkpoint (new or empty).")
    if path.is_dir() and not (path / "modules.json").is_file() and any(path.iterdir()):
        raise InvalidInputError(f"{path} holds other files and no checkpoint (no modules.json); give a new or empty "
                                "folder (nothing in this one was changed).")  # fmt: skip


def build_once(path: Path, built: Callable[[], bool], build: Callable[[], Path]) -> Path:
    """``build()`` into ``path`` unless ``built()``, under a lock beside ``path``: concurrent processes
    (pytest-xdist workers, a benchmark next to the tests) build a cached checkpoint once, the others
    wait and reuse it."""
    from filelock import FileLock

    if built():
        return path
    check_output_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        return path if built() else build()  # another process may have built it while this one waited


def _write_random_checkpoint(
    path: Path,
    size: str,
    tokenizer: str | os.PathLike | None,
    seed: int,
    initializer_range: float,
    score_scale: float,
    score_shift: float,
    max_length: int,
) -> Path:
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.sentence_transformer.modules import Dense, LayerNorm, Pooling, Transformer
    from transformers import ModernBertConfig, ModernBertModel

    path.mkdir(parents=True, exist_ok=True)
    shape = load_architecture(size)
    tok = _build_tokenizer(tokenizer, max_length)

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        settings: dict[str, Any] = dict(
            vocab_size=max(len(tok), 64),
            max_position_embeddings=max_length,
            global_attn_every_n_layers=3,
            local_attention=128,
            global_rope_theta=160000.0,
            local_rope_theta=160000.0,
            hidden_activation="gelu",
            norm_eps=1e-5,
            norm_bias=False,
            attention_bias=False,
            mlp_bias=False,
            pad_token_id=tok.pad_token_id,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
            initializer_range=initializer_range,
            **shape,
        )
        config = ModernBertConfig(**settings)
        backbone = ModernBertModel(config)
        backbone_dir = path / "_backbone"
        backbone.save_pretrained(backbone_dir)
        tok.save_pretrained(backbone_dir)

        hidden = shape["hidden_size"]
        transformer = Transformer(str(backbone_dir), max_seq_length=max_length)
        pooling = Pooling(hidden, pooling_mode="cls")
        dense = Dense(hidden, hidden, bias=False, activation_function=torch.nn.GELU())
        norm = LayerNorm(hidden)
        scorer = Dense(hidden, 1, bias=True, activation_function=torch.nn.Identity(), module_output_name="scores")
        with torch.no_grad():
            torch.nn.init.normal_(dense.linear.weight, std=hidden**-0.5)
            torch.nn.init.normal_(scorer.linear.weight, std=score_scale * hidden**-0.5)
            scorer.linear.bias.fill_(score_shift)
        model = CrossEncoder(
            modules=[transformer, pooling, dense, norm, scorer],
            num_labels=1,
            activation_fn=torch.nn.Identity(),
            device="cpu",
        )
        model.save(str(path))
    finally:
        torch.random.set_rng_state(generator_state)
    import shutil

    shutil.rmtree(path / "_backbone", ignore_errors=True)
    return path


def tokenizer_source(tokenizer: str | os.PathLike | None = None) -> tuple[str, bool]:
    """Which tokenizer :func:`build_checkpoint` would use: ``(description, is_real_ettin_tokenizer)``."""
    if tokenizer == "fallback":
        return "a toy byte-level BPE trained here (forced with 'fallback')", False
    if tokenizer is not None:
        return f"{Path(tokenizer) / 'tokenizer.json'}", True
    real = _real_tokenizer_dir()
    if real is not None:
        return f"the real Ettin tokenizer at {real}", True
    return (
        "a toy byte-level BPE trained here, because no real Ettin tokenizer was found "
        "($ETTIN_SHARED_DIR or ../shared/ettin-tokenizer): its vocabulary is tiny and it makes about 1.5x "
        "more tokens per text than Ettin's, so lengths and speed differ from the real model",
        False,
    )
