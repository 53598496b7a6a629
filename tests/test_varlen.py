"""The unpadded (packed, variable-length) attention path: CPU reference parity, GPU kernel when present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DOCUMENTS, QUERY

from ettin_integrations import EttinReranker
from ettin_integrations.kernels.varlen import ATTENTION_NAME, kernel_available, pack, reference_varlen_attention
from ettin_integrations.model.placement import attention_candidates
from ettin_integrations.pipeline.batching import plan_batches

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _padded_attention(q, k, v, lengths, window):
    """Ground truth: pad every sequence, mask padding keys (and the band), run SDPA."""
    heads, dim = q.shape[1], q.shape[2]
    width = max(lengths)
    out = torch.zeros_like(q)
    start = 0
    for n in lengths:
        qq = torch.zeros(1, heads, width, dim, dtype=q.dtype)
        kk, vv = torch.zeros_like(qq), torch.zeros_like(qq)
        qq[0, :, :n], kk[0, :, :n], vv[0, :, :n] = (t[start : start + n].transpose(0, 1) for t in (q, k, v))
        pos = torch.arange(width)
        mask = (pos[None, :] < n).expand(width, width)
        if window != (-1, -1):
            mask = mask & ((pos[:, None] - pos[None, :]).abs() <= window[0])
        res = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask[None, None])
        out[start : start + n] = res[0, :, :n].transpose(0, 1)
        start += n
    return out


@pytest.mark.parametrize("window", [(-1, -1), (3, 3)])
def test_reference_varlen_matches_padded_sdpa(window):
    torch.manual_seed(0)
    lengths = [7, 1, 12, 5]
    total = sum(lengths)
    q, k, v = (torch.randn(total, 2, 8, dtype=torch.float64) for _ in range(3))
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
    ours = reference_varlen_attention(q, k, v, cu, cu, None, window)
    assert torch.allclose(ours, _padded_attention(q, k, v, lengths, window), atol=1e-10)


def test_pack_marks_boundaries_and_restarts_positions():
    features = pack([[5, 6, 7], [8], [9, 10]], torch.device("cpu"))
    assert features["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10]]
    assert features["position_ids"].tolist() == [[0, 1, 2, 0, 0, 1]]
    assert features["cu_seq_lens_q"].tolist() == [0, 3, 4, 6]
    assert features["max_length_q"] == 3


def test_packed_batches_budget_real_tokens():
    lengths = [100, 10, 10, 10, 10, 90]
    assert plan_batches(lengths, 200, padded=True) == [[0, 5], [1, 2, 3, 4]]
    assert plan_batches(lengths, 200, padded=False) == [[0, 5, 1], [2, 3, 4]]


@pytest.mark.parametrize("max_length", [None, 40])
def test_unpadded_model_scores_equal_padded(tiny_checkpoint, max_length):
    """The whole model, packed through the varlen path (CPU reference), against padded SDPA."""
    padded = EttinReranker(tiny_checkpoint, device="cpu", dtype="float64", max_length=max_length)
    packed = EttinReranker(
        tiny_checkpoint,
        device="cpu",
        dtype="float64",
        max_length=max_length,
        attention=ATTENTION_NAME,
        batch_tokens=300,
    )
    assert padded.attention == "ettin_local" and packed.attention == ATTENTION_NAME
    assert packed._pipeline.forward.packed and not padded._pipeline.forward.packed
    docs = [*DOCUMENTS, "a long one " * 80]  # longer than the 128-token local window
    a, b = np.array(padded.score(QUERY, docs)), np.array(packed.score(QUERY, docs))
    assert np.max(np.abs(a - b)) < 1e-8
    float32 = EttinReranker(tiny_checkpoint, device="cpu", max_length=max_length, attention=ATTENTION_NAME)
    assert np.max(np.abs(np.array(float32.score(QUERY, docs)) - a)) < 1e-3  # float32 rounding only


def test_auto_attention_choice_without_a_gpu():
    cpu = torch.device("cpu")
    assert attention_candidates("auto", cpu, torch.float32) == ["ettin_local", "sdpa"]
    assert attention_candidates(ATTENTION_NAME, cpu, torch.float32) == [ATTENTION_NAME, "sdpa"]
    assert not kernel_available(cpu, torch.bfloat16)


@cuda_only
@pytest.mark.gpu
def test_gpu_defaults_report_the_unpadded_path(tiny_checkpoint):
    reranker = EttinReranker(tiny_checkpoint)
    assert reranker.device.type == "cuda" and reranker.dtype in (torch.bfloat16, torch.float16)
    # Whichever unpadded kernel exists here must be the one chosen and reported; a GPU with neither
    # is a configuration this test cannot judge, and says so.
    expected = attention_candidates("auto", reranker.device, reranker.dtype)[0]
    if expected == "sdpa":
        pytest.skip("neither flash-attn nor PyTorch's varlen kernel is available on this GPU")
    assert reranker.attention == expected
    assert reranker._pipeline.forward.packed


@cuda_only
@pytest.mark.gpu
@pytest.mark.parametrize("window", [(-1, -1), (64, 64)])
def test_gpu_kernel_matches_reference(window):
    if not kernel_available(torch.device("cuda"), torch.bfloat16):
        pytest.skip("PyTorch's varlen kernel is not available on this GPU")
    from torch.nn.attention.varlen import varlen_attn

    torch.manual_seed(0)
    lengths = [300, 17, 129, 1]
    cu = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(sum(lengths), 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fast = varlen_attn(q, k, v, cu, cu, max(lengths), max(lengths), window_size=window)
    slow = reference_varlen_attention(q.double(), k.double(), v.double(), cu, cu, None, window)
    assert torch.allclose(fast.double(), slow, atol=3e-2)


@cuda_only
@pytest.mark.gpu
def test_gpu_bf16_scores_track_float32(tiny_checkpoint):
    fast = EttinReranker(tiny_checkpoint)
    exact = EttinReranker(tiny_checkpoint, dtype="float32", attention="sdpa")
    a, b = np.array(fast.score(QUERY, DOCUMENTS)), np.array(exact.score(QUERY, DOCUMENTS))
    from scipy.stats import kendalltau

    assert kendalltau(a, b).statistic > 0.9
