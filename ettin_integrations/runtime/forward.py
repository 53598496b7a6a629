"""Run encoded pairs through the model in token-budget batches, backing off on CUDA out-of-memory.

Scores stay on the device until every batch of a call is queued, so the CPU prepares batch i+1
while the GPU runs batch i: one synchronisation per call.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..kernels.varlen import pack
from . import forking
from .batching import collate, plan_batches
from .loading import LoadedModel
from .placement import PACKED_ATTENTION
from .timings import StageTimes
from .tokenization import EncodedPair

logger = logging.getLogger("ettin_integrations")


class BatchedForward:
    """Scores pairs with one loaded model.

    Args:
        loaded: The shared model (its lock serialises forward passes across engines).
        batch_tokens: Token budget per forward pass; halves (and stays halved) after an out-of-memory.
    """

    def __init__(self, loaded: LoadedModel, batch_tokens: int, timings: StageTimes | None = None) -> None:
        self.loaded = loaded
        self.batch_tokens = batch_tokens
        self.timings = timings or StageTimes()
        # Packed (unpadded) batches when the attention kernel takes variable-length sequences.
        self.packed = loaded.attention in PACKED_ATTENTION

    def __call__(self, pairs: list[EncodedPair]) -> list[float]:
        """Raw scores of ``pairs``, in order."""
        if forking.forked_after_cuda and self.loaded.device.type == "cuda":
            raise RuntimeError(forking.FORK_CUDA_MESSAGE)
        lengths = [len(p.input_ids) for p in pairs]
        pending = list(range(len(pairs)))
        outputs: list[tuple[list[int], Any]] = []
        with self.loaded.lock:
            while pending:
                budget = self.batch_tokens
                done: list[int] = []
                try:
                    for batch in plan_batches([lengths[i] for i in pending], budget, padded=not self.packed):
                        indices = [pending[j] for j in batch]
                        outputs.append((indices, self._batch([pairs[i] for i in indices])))
                        done.extend(indices)
                    pending = []
                except torch.OutOfMemoryError:
                    finished = set(done)
                    pending = [i for i in pending if i not in finished]
                    longest = max(lengths[i] for i in pending)
                    if budget <= longest:
                        raise
                    self.batch_tokens = max(longest, budget // 2)
                    logger.warning(
                        "CUDA out of memory at batch_tokens=%d; retrying with %d.", budget, self.batch_tokens
                    )
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
        scores: list[float] = [0.0] * len(pairs)
        with self.timings.stage("wait"):  # the one device sync of the call
            for indices, batch_scores in outputs:
                for i, s in zip(indices, batch_scores.tolist()):
                    scores[i] = s
        return scores

    def _batch(self, pairs: list[EncodedPair]) -> torch.Tensor:
        """Scores of one batch as a float32 tensor, left on the device."""
        loaded = self.loaded
        with self.timings.stage("pack"):
            if self.packed:
                features = pack([p.input_ids for p in pairs], loaded.device)
            else:
                types = [p.token_type_ids or [] for p in pairs] if pairs[0].token_type_ids is not None else None
                features = collate([p.input_ids for p in pairs], loaded.pad_token_id, types)
                non_blocking = loaded.device.type == "cuda"
                features = {k: v.to(loaded.device, non_blocking=non_blocking) for k, v in features.items()}
        with torch.inference_mode(), self.timings.stage("forward"):
            scores = loaded.cross_encoder(features)["scores"]
            if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
                scores = scores.float()
            if loaded.activation is not None and not isinstance(loaded.activation, torch.nn.Identity):
                scores = loaded.activation(scores)
            return scores.reshape(len(pairs))
