"""Run encoded pairs through the model in token-budget batches, backing off on CUDA out-of-memory.

Scores stay on the device until every batch of a call is queued, so the CPU prepares batch i+1
while the GPU runs batch i: one synchronisation per call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from ..concurrency import forking
from ..concurrency.microbatch import Cancelled
from ..concurrency.workers import CoreShare
from ..kernels.varlen import pack
from ..model.compilation import Compilation, describe_failure, packed_fillers, padded_shape, rounded_longest
from ..model.inputs import collate
from ..model.loading import LoadedModel
from ..model.placement import PACKED_ATTENTION
from .batching import plan_batches
from .timings import StageTimes
from .tokenization import EncodedPair

logger = logging.getLogger("ettin_integrations")


class BatchedForward:
    """Scores pairs with one loaded model.

    Args:
        loaded: The shared model (its lock serialises forward passes across engines).
        batch_tokens: Token budget per forward pass; halves (and stays halved) after an out-of-memory.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        batch_tokens: int,
        timings: StageTimes | None = None,
        share_cores: bool = False,
    ) -> None:
        self.loaded = loaded
        self.batch_tokens = batch_tokens
        self.timings = timings or StageTimes()
        # CPU, num_threads not given: the pool follows what other programs leave free, batch by batch, up to
        # the share this process was given at start-up (its cores divided among its sibling workers).
        self.core_share = CoreShare(torch.get_num_threads()) if share_cores and loaded.device.type == "cpu" else None
        # Packed (unpadded) batches when the attention kernel takes variable-length sequences.
        self.packed = loaded.attention in PACKED_ATTENTION

    def __call__(self, pairs: list[EncodedPair], stop: Callable[[], bool] | None = None) -> list[float]:
        """Raw scores of ``pairs``, in order; ``stop()`` true before a batch raises ``Cancelled``."""
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
                        if stop is not None and stop():
                            raise Cancelled("every caller of this pass has gone")
                        indices = [pending[j] for j in batch]
                        self._share_cores()
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

    def _share_cores(self) -> None:
        if self.core_share is None or forking.in_forked_child:  # a forked child stays single-threaded
            return
        threads = self.core_share.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    def _batch(self, pairs: list[EncodedPair]) -> torch.Tensor:
        """Scores of one batch as a float32 tensor, left on the device."""
        compilation = self.loaded.compilation
        if compilation is not None and not compilation.active:
            compilation = None
        with self.timings.stage("pack"):
            features, shape = self._features(pairs, compilation)
        with self.timings.stage("forward"):
            if compilation is None:
                scores = self._scores(features)
            else:
                try:
                    scores = compilation.run(shape, lambda: self._scores(features))
                except torch.OutOfMemoryError:
                    raise
                except Exception as exc:  # a shape Inductor cannot compile: finish this call eagerly
                    compilation.disable(describe_failure(exc))
                    scores = self._scores(features)
            return scores[: len(pairs)]

    def _features(
        self, pairs: list[EncodedPair], compilation: Compilation | None
    ) -> tuple[dict[str, Any], tuple[int, ...]]:
        """Model inputs on the device, and their shape. With CUDA graphs, filler rows round the shape
        up to a :func:`~.compilation.bucket` size (their scores come last and are dropped). Compiled
        without graphs, the packed kernel is still told a power-of-two longest length, so a graph that
        specialises on that number meets at most a dozen values, not one per batch."""
        loaded = self.loaded
        bucketed = compilation is not None and compilation.graphs
        rows = [p.input_ids for p in pairs]
        lengths = [len(r) for r in rows]
        if self.packed:
            longest = None
            if bucketed:
                fillers, longest = packed_fillers(lengths, loaded.max_length)
                rows = rows + [[loaded.pad_token_id] * n for n in fillers]
            elif compilation is not None:
                longest = rounded_longest(max(lengths), loaded.max_length)
            features = pack(rows, loaded.device, max_length=longest)
            return features, (int(features["input_ids"].shape[1]), len(rows), int(features["max_length_q"]))
        types = [p.token_type_ids or [] for p in pairs] if pairs[0].token_type_ids is not None else None
        width = None
        if bucketed:
            count, width = padded_shape(lengths)
            width = min(width, max(loaded.max_length, max(lengths)))
            rows = rows + [[loaded.pad_token_id]] * (count - len(rows))
            types = None if types is None else types + [[0]] * (count - len(types))
        features = collate(rows, loaded.pad_token_id, types, width=width)
        non_blocking = loaded.device.type == "cuda"
        features = {k: v.to(loaded.device, non_blocking=non_blocking) for k, v in features.items()}
        return features, tuple(features["input_ids"].shape)

    def _scores(self, features: dict[str, Any]) -> torch.Tensor:
        # inference_mode here, not around the caller: graph modes run this on another thread.
        loaded = self.loaded
        with torch.inference_mode():
            scores = loaded.cross_encoder(features)["scores"]
            if torch.is_floating_point(scores) and torch.finfo(scores.dtype).bits < 32:
                scores = scores.float()
            if loaded.activation is not None and not isinstance(loaded.activation, torch.nn.Identity):
                scores = loaded.activation(scores)
            return scores.reshape(-1)
