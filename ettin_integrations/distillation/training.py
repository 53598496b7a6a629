"""Train a student cross-encoder on teacher logits: sentence-transformers' ``CrossEncoderTrainer``
with its ``MSELoss``, the recipe the Ettin rerankers themselves were trained with.

Nothing here is a training loop: the trainer brings batching, the optimizer and schedule, progress
bars, evaluation every N steps, checkpoints and resuming; this module only lays out the data and
the options.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..catalog import resolve_model
from .agreement import agreement_by_query

logger = logging.getLogger("ettin_integrations")


class TrainingOptions(BaseModel):
    """What the trainer needs beyond data (the CLI's flags are derived from these fields, as for the engine)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    max_steps: int = Field(default=1000, ge=1, description="optimizer steps to train")
    batch_size: int = Field(default=32, ge=1, description="pairs per step")
    learning_rate: float = Field(
        default=5e-5, gt=0, description="peak learning rate (linear warm-up, then linear decay)"
    )
    warmup_ratio: float = Field(default=0.1, ge=0, le=1, description="share of the steps spent warming up")
    eval_steps: int = Field(
        default=100, ge=0, description="measure agreement on held-out queries every N steps (0: only before/after)"
    )
    save_steps: int = Field(default=200, ge=1, description="write a resumable checkpoint every N steps")
    logging_steps: int = Field(default=20, ge=1, description="log the loss every N steps")
    seed: int = Field(default=0, description="seed for the query split, data order and initialisation")
    max_length: int = Field(
        default=512, ge=2, description="longest (query, document) pair in tokens during training and evaluation"
    )
    device: str | None = Field(default=None, description="device to train on (default: CUDA when present)")
    progress: bool = Field(default=True, description="show progress bars")


def _evaluator_class() -> type:
    try:  # sentence-transformers 6
        from sentence_transformers.base.evaluation import BaseEvaluator
    except ImportError:  # 5.x
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator  # type: ignore[no-redef]

    class TeacherAgreementEvaluator(BaseEvaluator):
        """The student's agreement with the teacher on held-out queries, logged every ``eval_steps``."""

        def __init__(self, queries: dict[str, str], corpus: dict[str, str], teacher: dict[str, dict[str, float]]):
            super().__init__()
            self.queries, self.corpus, self.teacher = queries, corpus, teacher
            self.primary_metric = "mean_kendall_tau"

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> dict:
            metrics = held_out_agreement(
                lambda pairs: model.predict(pairs, show_progress_bar=False), self.queries, self.corpus, self.teacher
            )
            return self.prefix_name_to_metrics(metrics, "held_out")

        def store_metrics_in_model_card_data(self, *args: Any, **kwargs: Any) -> None:
            pass  # the run's report keeps them; the model card would list an unknown evaluator

    return TeacherAgreementEvaluator


def held_out_scores(
    predict: Callable[[list[tuple[str, str]]], Sequence[float]],
    queries: dict[str, str],
    corpus: dict[str, str],
    teacher: dict[str, dict[str, float]],
) -> dict[str, dict[str, float]]:
    """``predict``'s scores (pairs -> scores, one batched call) for every pair ``teacher`` scored."""
    flat = iter(float(s) for s in predict([(queries[q], corpus[d]) for q, docs in teacher.items() for d in docs]))
    return {q: {d: next(flat) for d in docs} for q, docs in teacher.items()}


def held_out_agreement(
    predict: Callable[[list[tuple[str, str]]], Sequence[float]],
    queries: dict[str, str],
    corpus: dict[str, str],
    teacher: dict[str, dict[str, float]],
) -> dict[str, float]:
    """Agreement of ``predict`` with the teacher's scores on every query of ``teacher``."""
    return agreement_by_query(held_out_scores(predict, queries, corpus, teacher), teacher)


def train_student(
    student: str,
    train_rows: dict[str, list[Any]],
    held_out: tuple[dict[str, str], dict[str, str], dict[str, dict[str, float]]],
    output_dir: Path,
    options: TrainingOptions,
    local_files_only: bool = False,
) -> tuple[Path, list[dict[str, Any]], str | None]:
    """Train ``student`` on ``train_rows`` (columns query, document, label), resuming from the last
    checkpoint in ``output_dir/checkpoints``; saves to ``output_dir/model``. Returns that directory,
    the trainer's log history (losses and evaluations) and the checkpoint it resumed from, if any."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import MSELoss

    model = CrossEncoder(resolve_model(student), num_labels=1, device=options.device, local_files_only=local_files_only)
    if model.num_labels != 1:
        raise ValueError(f"student {student!r} predicts {model.num_labels} labels; a reranker outputs one score.")
    # Train on short pairs, but save the student with its own context length (Ettin: 7999).
    context = _max_length(model)
    _set_max_length(model, min(options.max_length, context) if context else options.max_length)
    checkpoints = output_dir / "checkpoints"
    on_cuda = options.device != "cpu" and torch.cuda.is_available()
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints),
        max_steps=options.max_steps,
        per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate,
        warmup_steps=round(options.warmup_ratio * options.max_steps),  # warmup_ratio is deprecated in transformers 5
        eval_strategy="steps" if options.eval_steps else "no",
        eval_steps=options.eval_steps or None,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(options.logging_steps, options.max_steps // 4)),  # short runs log a loss too
        seed=options.seed,
        data_seed=options.seed,
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        use_cpu=options.device == "cpu",
        dataloader_pin_memory=on_cuda,  # pinning is for copies to a GPU; on a CPU it only warns
        report_to="none",
        disable_tqdm=not options.progress,
        dataloader_num_workers=0,
    )
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(train_rows),
        loss=MSELoss(model),
        evaluator=_evaluator_class()(*held_out) if options.eval_steps else None,
        callbacks=[_stop_on_non_finite()],
    )
    resume = last_complete_checkpoint(checkpoints)
    if resume:
        logger.warning("Resuming training from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    _check_finite_scores(model, held_out)
    final = output_dir / "model"
    if context:
        _set_max_length(model, context)
    model.save(str(final))
    return final, list(trainer.state.log_history), resume


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm stopped being a finite number; the run stops and nothing is saved."""


def _stop_on_non_finite() -> Any:
    from transformers import TrainerCallback

    class StopOnNonFinite(TrainerCallback):
        """Stop at the first logged loss or gradient norm that is NaN or infinite, saying why."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any) -> None:
            for name in ("loss", "grad_norm"):
                value = (logs or {}).get(name)
                if isinstance(value, (int, float)) and not math.isfinite(value):
                    raise TrainingDiverged(
                        f"training diverged at step {state.global_step}: {name}={value}. Check that the teacher "
                        "scores are finite logits on a sane scale, or lower --learning-rate; no model was saved."
                    )

    return StopOnNonFinite()


def _check_finite_scores(
    model: Any, held_out: tuple[dict[str, str], dict[str, str], dict[str, dict[str, float]]]
) -> None:
    """Refuse to save a student whose held-out scores are not finite numbers."""
    queries, corpus, teacher = held_out
    pairs = [(queries[q], corpus[d]) for q, docs in teacher.items() for d in docs][:64]
    if not pairs:
        return
    scores = model.predict(pairs, show_progress_bar=False, convert_to_numpy=True)
    if not all(math.isfinite(float(s)) for s in scores):
        raise TrainingDiverged("the trained student scores held-out pairs as NaN or infinity; no model was saved.")


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint a run can resume from; ones cut off mid-save (no trainer_state.json) are
    skipped with a warning, so a stop during a save costs one save interval, not the whole run."""
    if not checkpoints.is_dir():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (path / "trainer_state.json").is_file():
            return str(path)
        logger.warning("Checkpoint %s is incomplete (a stop during its save); resuming from an earlier one.", path)
    return None


def _max_length(model: Any) -> int | None:
    # sentence-transformers 6 calls it max_seq_length; 5.x CrossEncoder called it max_length.
    value = getattr(model, "max_seq_length", None) if hasattr(type(model), "max_seq_length") else model.max_length
    return int(value) if value else None


def _set_max_length(model: Any, value: int) -> None:
    if hasattr(type(model), "max_seq_length"):
        model.max_seq_length = value
    else:
        model.max_length = value
