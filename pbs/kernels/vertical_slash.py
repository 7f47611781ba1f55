"""Vertical-slash estimation on the GPU: column and diagonal mass of the last queries' causal attention.

The fused counterpart of ``pbs.vertical_slash.last_query_probs`` + ``column_and_diagonal_sums`` (MInference,
FlexPrefill): the last m queries' (B, H, m, Nk) probabilities are never stored. Two launches:

1. ``key_permutation._row_stats_kernel`` (causal): per (b, q head, key split), online max and sum of exp of the
   scaled fp32 logits of the last m queries over the keys at or before each query (flash-style partial
   statistics), combined per row by ``key_permutation._combine_stats_kernel``.
2. ``_vertical_slash_kernel``: per (b, q head, key chunk), the probabilities recomputed with those statistics;
   their column sums are the chunk's vertical scores, and each is added to its diagonal offset (query − key)
   with an atomic add for the slash scores (a diagonal crosses several chunks).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .key_permutation import _combine_stats_kernel, _row_stats_kernel


@triton.jit
def _vertical_slash_kernel(
    Q, K, ROW_M, ROW_L, VERTICAL, SLASH,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_rb, stride_rh, stride_vb, stride_vh,
    q_start, m_rows, n_keys, scale,
    H: tl.constexpr, KV_GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    chunk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < m_rows
    q_pos = n_keys - m_rows + rows
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + (q_start + rows)[:, None] * stride_qn
                + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    stats = b.to(tl.int64) * stride_rb + h * stride_rh + rows
    m_row = tl.load(ROW_M + stats, mask=row_ok, other=0.0)
    l_row = tl.load(ROW_L + stats, mask=row_ok, other=1.0)
    cols = chunk * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n_keys
    k_base = K + b.to(tl.int64) * stride_kb + (h // KV_GROUP) * stride_kh
    k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None],
                mask=col_ok[None, :] & d_ok[:, None], other=0.0)
    s = tl.dot(q, k, input_precision=DOT_PRECISION) * scale
    visible = row_ok[:, None] & col_ok[None, :] & (cols[None, :] <= q_pos[:, None])
    p = tl.where(visible, tl.exp(s - m_row[:, None]) / l_row[:, None], 0.0)
    out = b.to(tl.int64) * stride_vb + h * stride_vh
    tl.store(VERTICAL + out + cols, tl.sum(p, 0), mask=col_ok)
    # [Note] a diagonal offset gathers one entry from each query row: different chunks add into the same offsets
    tl.atomic_add(SLASH + out + (q_pos[:, None] - cols[None, :]), p, mask=visible & (p > 0), sem="relaxed")


def last_query_sums_fused(q: Tensor, k: Tensor, last_q: int, scale: float) -> tuple[Tensor, Tensor]:
    """Column sums and diagonal-offset sums of the last ``min(last_q, Nq)`` queries' causal attention.

    q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D). Returns ``vertical`` and ``slash``, both (B, Hq, Nk) float32:
    ``vertical[j]`` = Σ_i p[i, j], ``slash[o]`` = Σ_i p[i, pos_i − o] (fp32 softmax of the fp32 logits × scale).
    Equals ``column_and_diagonal_sums(*last_query_probs(q, k, last_q, scale))`` up to fp32 summation order.
    """
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    m_rows = min(last_q, nq)
    q_start = nq - m_rows
    on_gpu = q.is_cuda
    block_m = max(16, triton.next_power_of_2(m_rows))
    d_pad = max(16, triton.next_power_of_2(dim))
    block_n = 64 if on_gpu else 32
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    keys_per_split = 4096 if on_gpu else 1 << 30
    splits = -(-nk // keys_per_split)
    part_m = torch.empty(batch, heads, splits, block_m, dtype=torch.float32, device=q.device)
    part_l = torch.empty_like(part_m)
    common = dict(H=heads, KV_GROUP=heads // kv_heads, HEAD_DIM=dim, D_PAD=d_pad, BLOCK_M=block_m,
                  BLOCK_N=block_n, DOT_PRECISION=precision, num_warps=4)
    _row_stats_kernel[(splits, batch * heads)](
        q, k, part_m, part_l, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        part_m.stride(0), part_m.stride(1), part_m.stride(2), q_start, m_rows, nk, keys_per_split, scale,
        ROUND_LOGITS=False, CAUSAL=True, **common,
    )
    row_m = torch.empty(batch, heads, block_m, dtype=torch.float32, device=q.device)
    row_l = torch.empty_like(row_m)
    _combine_stats_kernel[(batch * heads,)](part_m, part_l, row_m, row_l, splits, part_m.stride(1), row_m.stride(1),
                                            BLOCK_M=block_m, SPLITS_PAD=max(2, triton.next_power_of_2(splits)))
    vertical = torch.empty(batch, heads, nk, dtype=torch.float32, device=q.device)
    slash = torch.zeros_like(vertical)
    _vertical_slash_kernel[(-(-nk // block_n), batch * heads)](
        q, k, row_m, row_l, vertical, slash, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), row_m.stride(0), row_m.stride(1), vertical.stride(0), vertical.stride(1),
        q_start, m_rows, nk, scale, **common,
    )
    return vertical, slash
