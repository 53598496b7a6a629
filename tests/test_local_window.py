"""The CPU attention that computes only each local layer's window: same attention as masked SDPA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.kernels import local_window
from ettin_integrations.kernels.local_window import ATTENTION_NAME, BLOCKED_FROM_RADII, local_window_attention_forward

RADIUS = 64  # ModernBERT's local_attention 128: transformers passes sliding_window = 65


@pytest.fixture
def blocked_in_float64(monkeypatch):
    """Let float64 take the blocked path (by default only half precision does), so it can be checked exactly."""
    monkeypatch.setattr(local_window, "BLOCKED_DTYPES", frozenset({torch.bfloat16, torch.float16, torch.float64}))


def _reference(q, k, v, padding, radius):
    """Ground truth, one sequence at a time: SDPA over the real tokens only, with the band for local layers."""
    out = torch.zeros(q.shape[0], q.shape[2], q.shape[1], q.shape[3], dtype=q.dtype)
    for b in range(q.shape[0]):
        n = int(padding[b].sum()) if padding is not None else q.shape[2]
        mask = None
        if radius is not None:
            pos = torch.arange(n)
            mask = ((pos[:, None] - pos[None, :]).abs() <= radius)[None]
        res = F.scaled_dot_product_attention(q[b, :, :n], k[b, :, :n], v[b, :, :n], attn_mask=mask, scale=0.125)
        out[b, :n] = res.transpose(0, 1)
    return out


@pytest.mark.parametrize("length", [5, 129, BLOCKED_FROM_RADII * RADIUS, BLOCKED_FROM_RADII * RADIUS + 1, 513, 1000])
@pytest.mark.parametrize("local", [True, False])
@pytest.mark.parametrize("padded", [True, False])
def test_matches_per_sequence_sdpa(length, local, padded, blocked_in_float64):
    torch.manual_seed(length)
    batch = 3
    q, k, v = (torch.randn(batch, 4, length, 64, dtype=torch.float64) for _ in range(3))
    padding = None
    if padded:
        # One row full, one cut to a third (padding far beyond the window: rows that see no real key),
        # one just short of the end.
        padding = torch.ones(batch, length, dtype=torch.long)
        padding[1, max(1, length // 3) :] = 0
        padding[2, max(1, length - 5) :] = 0
    out, weights = local_window_attention_forward(
        None, q, k, v, padding, scaling=0.125, sliding_window=RADIUS + 1 if local else None
    )
    assert weights is None and out.shape == (batch, length, 4, 64)
    assert torch.isfinite(out).all()  # padding rows too: a NaN there would reach real tokens next layer
    expected = _reference(q, k, v, padding, RADIUS if local else None)
    real = padding.bool() if padding is not None else torch.ones(batch, length, dtype=torch.bool)
    assert torch.allclose(out[real], expected[real], atol=1e-12)


def test_long_local_layers_take_the_blocked_path(monkeypatch):
    """Past the threshold a half-precision local layer never runs SDPA over the whole sequence; float32 does."""
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.shape[-2], k.shape[-2]))
        return real_sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(local_window.F, "scaled_dot_product_attention", spy)
    length = 1000
    q = k = v = torch.randn(1, 2, length, 64, dtype=torch.bfloat16)
    local_window_attention_forward(None, q, k, v, None, sliding_window=RADIUS + 1)
    local_window_attention_forward(None, q, k, v, None, sliding_window=None)
    local_window_attention_forward(None, q.float(), k.float(), v.float(), None, sliding_window=RADIUS + 1)
    assert calls == [(RADIUS, 3 * RADIUS), (length, length), (length, length)]


def test_bfloat16_blocked_path_stays_within_bf16_rounding():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 4, 700, 64) for _ in range(3))
    padding = torch.ones(2, 700, dtype=torch.long)
    padding[1, 400:] = 0
    out, _ = local_window_attention_forward(
        None, q.bfloat16(), k.bfloat16(), v.bfloat16(), padding, scaling=0.125, sliding_window=RADIUS + 1
    )
    expected = _reference(q.double(), k.double(), v.double(), padding, RADIUS)
    real = padding.bool()
    assert torch.isfinite(out).all()
    assert (out.double()[real] - expected[real]).abs().max() < 3e-2


def test_a_model_scores_the_same_through_it(tiny_checkpoint, blocked_in_float64, monkeypatch):
    """The whole model in float64: the windowed path against transformers' own sdpa, long documents included."""
    blocked_calls = []
    real_banded = local_window.banded_attention

    def counted(*args, **kwargs):
        blocked_calls.append(args[0].shape)
        return real_banded(*args, **kwargs)

    monkeypatch.setattr(local_window, "banded_attention", counted)
    windowed = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", batch_tokens=4000)
    plain = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", attention="sdpa", batch_tokens=4000)
    assert windowed.attention == ATTENTION_NAME and plain.attention == "sdpa"
    docs = [*DOCUMENTS, "a long one " * 150, "words of a longer passage " * 120, ""]
    lengths = [len(ids) for ids in windowed.cross_encoder.tokenizer([QUERY] * len(docs), docs)["input_ids"]]
    assert max(lengths) > BLOCKED_FROM_RADII * RADIUS
    a, b = np.array(windowed.score(QUERY, docs)), np.array(plain.score(QUERY, docs))
    assert blocked_calls  # the blocked path really ran inside the model
    assert np.max(np.abs(a - b)) < 1e-9
