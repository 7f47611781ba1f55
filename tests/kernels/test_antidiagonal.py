"""The fused antidiagonal estimation (Triton, TRITON_INTERPRET=1 on CPU) equals the torch reference scorer.

Same probabilities up to fp32 rounding and the same cumulative-threshold selections, for both allowed modes
(XAttention: causal tiles + token causal; PBS-Attn+: earlier-segment tiles), odd lengths, Nq < Nk, GQA, key
permutations per query head and per KV head, query permutations, block sizes 64/128, strides 4/8/16, D 64/128.
Every float buffer the kernel allocates starts as NaN, so an unwritten output (or an unmasked read of unwritten
scratch) fails. fp32 and fp16 only: the interpreter computes bf16 dots wrongly (bf16 runs in
scripts/check_antidiagonal.py on the GPU).
"""

import math

import pytest
import torch

from pbs.kernels import antidiagonal
from pbs.kernels.antidiagonal import antidiagonal_block_probs_fused
from pbs.scoring import antidiagonal_block_probs, causal_blocks, same_segment
from pbs.selection import select_cumulative
from pbs.synthetic import structured_qkv


@pytest.fixture(autouse=True)
def nan_poisoned_empty(monkeypatch):
    """NaN in every new float buffer; key-block sweeps in chunks of 8 columns, so rows take several chunks."""
    real_empty = torch.empty
    monkeypatch.setattr(antidiagonal, "_BLOCK_T", 8)

    def poisoned(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(math.nan) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", poisoned)


def _inputs(batch, heads, kv_heads, nq, nk, dim, dtype, seed, structured):
    if structured:
        q, k, _ = structured_qkv(batch, heads, kv_heads, nk, dim, seed=seed)
        q = q[:, :, nk - nq :]
    else:
        gen = torch.Generator().manual_seed(seed)
        q = torch.randn(batch, heads, nq, dim, generator=gen)
        k = torch.randn(batch, kv_heads, nk, dim, generator=gen)
    return q.to(dtype).contiguous(), k.to(dtype).contiguous()


def _perm(batch, heads, n, seed, dtype=torch.int64):
    gen = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(batch, heads, n, generator=gen), dim=-1).to(dtype)


def _allowed(nq, nk, block_size, segment_size):
    allowed = causal_blocks(nq, nk, block_size)
    if segment_size is not None:
        allowed = allowed & ~same_segment(nq, nk, block_size, segment_size)
    return allowed


def _assert_same_as_reference(q, k, block_size, stride, segment_size, key_perm=None, query_perm=None, **tuning):
    scale = q.shape[-1] ** -0.5
    token_causal = segment_size is None
    allowed = _allowed(q.shape[2], k.shape[2], block_size, segment_size)
    ref = antidiagonal_block_probs(q, k, allowed, block_size, stride, scale, key_perm, query_perm, token_causal)
    out = antidiagonal_block_probs_fused(
        q, k, block_size=block_size, stride=stride, scale=scale, segment_size=segment_size, key_perm=key_perm,
        query_perm=query_perm, token_causal=token_causal, **tuning,
    )
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6, equal_nan=True), (out - ref).abs().max().item()
    for threshold in (0.5, 0.9, 0.95):
        assert torch.equal(select_cumulative(out, allowed, threshold), select_cumulative(ref, allowed, threshold))
    return out, ref


# (dtype, batch, heads, kv_heads, nq, nk, dim, block_size, stride, segment_size, key_perm, query_perm, structured)
CASES = [
    (torch.float32, 1, 2, 1, 1000, 1000, 128, 128, 8, None, None, False, True),
    (torch.float16, 1, 2, 1, 777, 777, 64, 64, 4, None, None, False, True),
    (torch.float32, 1, 2, 2, 300, 701, 64, 64, 16, None, None, False, False),
    (torch.float16, 2, 2, 1, 419, 419, 64, 128, 16, None, None, False, True),
    (torch.float32, 1, 2, 1, 512, 512, 64, 128, 4, None, None, False, True),  # unmasked loads (EVEN)
    (torch.float16, 1, 4, 2, 700, 700, 128, 64, 8, 256, "q_head", False, True),
    (torch.float32, 1, 4, 2, 555, 555, 64, 64, 4, 128, "kv_head", True, False),
    (torch.float16, 1, 2, 1, 400, 1000, 64, 128, 16, 256, "q_head", True, True),
    (torch.float16, 2, 2, 1, 512, 512, 64, 64, 8, 128, "kv_head", True, True),  # EVEN with both permutations
    (torch.float32, 1, 2, 2, 1, 333, 64, 64, 8, None, None, False, False),  # a single query
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("one_pass", [True, False], ids=["one_pass", "two_pass"])
def test_fused_equals_reference(case, one_pass):
    dtype, batch, heads, kv_heads, nq, nk, dim, bs, stride, seg, perm_heads, with_qperm, structured = case
    seed = hash((nq, nk, dim, bs, stride, one_pass)) % 2**31
    q, k = _inputs(batch, heads, kv_heads, nq, nk, dim, dtype, seed, structured)
    key_perm = None
    if perm_heads is not None:
        key_perm = _perm(batch, heads if perm_heads == "q_head" else kv_heads, nk, seed + 1)
    query_perm = _perm(batch, heads, nq, seed + 2) if with_qperm else None
    out, _ = _assert_same_as_reference(q, k, bs, stride, seg, key_perm, query_perm, one_pass=one_pass,
                                       num_programs=3)
    # rows with something allowed and a real query sum to 1; the others are 0
    sums = out.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))


def test_split_head_dim_and_uneven_tiles(monkeypatch):
    """D in two chunks per dot step, row tiles spanning several plan rows, one worker per item, one column chunk."""
    monkeypatch.setattr(antidiagonal, "_BLOCK_T", 64)
    q, k = _inputs(1, 2, 1, 650, 650, 64, torch.float32, 11, True)
    _assert_same_as_reference(q, k, 64, 4, None, block_m=64, block_n=32, block_d=32, num_programs=100)


def test_key_tiles_wider_than_row_tiles():
    q, k = _inputs(1, 2, 2, 500, 700, 64, torch.float16, 19, True)
    _assert_same_as_reference(q, k, 64, 8, 128, key_perm=_perm(1, 2, 700, 20), block_m=16, block_n=64, num_programs=5)


def test_stride_equal_to_block_size():
    q, k = _inputs(1, 2, 1, 300, 300, 64, torch.float32, 12, False)
    _assert_same_as_reference(q, k, 16, 16, None, num_programs=2)


def test_int32_key_perm_and_head_dim_not_power_of_two():
    q, k = _inputs(1, 2, 1, 260, 260, 40, torch.float32, 13, False)
    _assert_same_as_reference(q, k, 64, 8, 128, key_perm=_perm(1, 1, 260, 14, torch.int32), num_programs=2)


def test_gqa_aligned_head_slices_equal_the_full_result():
    q, k = _inputs(1, 4, 2, 300, 300, 64, torch.float16, 15, True)
    key_perm = _perm(1, 4, 300, 16)
    kwargs = dict(block_size=64, stride=8, scale=0.125, segment_size=128, token_causal=False, num_programs=3)
    full = antidiagonal_block_probs_fused(q, k, key_perm=key_perm, **kwargs)
    part = antidiagonal_block_probs_fused(q[:, 2:4], k[:, 1:2], key_perm=key_perm[:, 2:4], **kwargs)
    assert torch.equal(part, full[:, 2:4])


def test_nan_inputs_make_the_rows_that_see_them_nan_as_the_reference():
    """A NaN is propagated, never zeroed: the plan rows that see it score NaN (the selection then takes them whole)."""
    q, k = _inputs(1, 2, 1, 256, 256, 64, torch.float32, 17, False)
    q[0, 0, 100, 5] = math.nan  # one reshaped row of plan row 1 (block 64, stride 8)
    k[0, 0, 200, 0] = math.nan  # a key of block 3: only row 3 sees it (token causal)
    out, _ref = _assert_same_as_reference(q, k, 64, 8, None)
    nan_rows = torch.isnan(out).any(-1)  # (B, H, R)
    assert nan_rows[0, 0].tolist() == [False, True, False, True]
    assert nan_rows[0, 1].tolist() == [False, False, False, True]


def test_rows_without_allowed_tiles_are_zero():
    q, k = _inputs(1, 2, 2, 500, 500, 64, torch.float32, 18, False)
    out, _ = _assert_same_as_reference(q, k, 64, 8, 256)
    assert torch.all(out[:, :, :4] == 0)  # the first segment has no earlier segment
    assert torch.allclose(out[:, :, 4:].sum(-1), torch.ones(1, 2, out.shape[2] - 4), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stride=3), "stride"),
        (dict(stride=256), "stride"),
        (dict(block_size=48), "block_size"),
        (dict(segment_size=96), "segment_size"),
        (dict(key_perm=torch.zeros(1, 3, 64, dtype=torch.int64)), "key_perm"),
        (dict(query_perm=torch.zeros(1, 2, 64)), "query_perm"),
        (dict(k=torch.zeros(1, 1, 64, 16, dtype=torch.float16)), "dtype"),
        (dict(q=torch.zeros(1, 2, 65, 16)), "Nq"),
        (dict(q=torch.zeros(1, 3, 64, 16), k=torch.zeros(1, 2, 64, 16)), "H_KV"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(q=torch.zeros(1, 2, 64, 16), k=torch.zeros(1, 1, 64, 16), block_size=64, stride=8, scale=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        antidiagonal_block_probs_fused(**args)
