"""PBS query permutation on the GPU (the §4.3 ablation), with the permuted rows' pooled queries and bounds.

The fused counterpart of ``pbs.permutation.query_permutation`` + ``pbs.scoring.pooled_queries``: one program per
(b, q head, segment) whose queries all lie inside the query range takes each query's most cosine-similar
earlier-segment centroid (normalised pooled key blocks; the first maximum on ties), orders the segment's queries
by (centroid, decreasing similarity, position) — the reference's stable sort of ``best·4 − similarity`` — writes
the permutation, and the mean query (× scale) and min/max original position of each permuted block. Other
segments keep their place (natural pooling and bounds, computed first).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .block_means import block_means_fused


@triton.jit
def _query_perm_kernel(
    Q, CENTROIDS, PERM, POOLED, QMIN, QMAX,
    stride_qb, stride_qh, stride_qn, stride_cb, stride_ch, stride_ct, stride_pb, stride_ph,
    stride_ob, stride_oh, stride_or, stride_bb, stride_bh,
    q_offset, first_q_block, first_seg, scale,
    H: tl.constexpr, C_HEADS_DIV: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    SEG: tl.constexpr, BS: tl.constexpr, BLOCKS: tl.constexpr, IDX_BITS: tl.constexpr, C_CHUNK: tl.constexpr,
):
    seg = first_seg + tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    idx = tl.arange(0, SEG)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    slot0 = seg * SEG - q_offset  # first query row of the segment
    q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + (slot0 + idx)[:, None].to(tl.int64) * stride_qn
                + offs_d[None, :], mask=d_ok[None, :], other=0.0).to(tl.float32)
    qn = q / tl.maximum(tl.sqrt(tl.sum(q * q, 1)), 1e-12)[:, None]

    best_sim = tl.full([SEG], float("-inf"), dtype=tl.float32)
    best = tl.zeros([SEG], dtype=tl.int32)
    c_base = CENTROIDS + b.to(tl.int64) * stride_cb + (h // C_HEADS_DIV) * stride_ch
    n_cent = seg * BLOCKS  # earlier segments' blocks
    for c0 in range(0, n_cent, C_CHUNK):
        cols = c0 + tl.arange(0, C_CHUNK)
        c_ok = cols < n_cent
        cent = tl.load(c_base + cols[None, :] * stride_ct + offs_d[:, None], mask=c_ok[None, :] & d_ok[:, None],
                       other=0.0)
        sims = tl.dot(qn, cent, input_precision="ieee")
        sims = tl.where(c_ok[None, :], sims, float("-inf"))
        chunk_max = tl.max(sims, 1)
        chunk_arg = tl.argmax(sims, 1, tie_break_left=True).to(tl.int32) + c0
        better = chunk_max > best_sim  # strict: an earlier chunk keeps a tie
        best = tl.where(better, chunk_arg, best)
        best_sim = tl.where(better, chunk_max, best_sim)

    # ascending (best, -similarity, position) in one int64 key; fp32 bits made order-preserving, then flipped
    bits = best_sim.to(tl.int32, bitcast=True).to(tl.int64) & 0xFFFFFFFF
    ordered = tl.where(best_sim >= 0, bits | 0x80000000, 0xFFFFFFFF - bits)  # ascending in similarity
    packed = (best.to(tl.int64) << (32 + IDX_BITS)) | ((0xFFFFFFFF - ordered) << IDX_BITS) | idx.to(tl.int64)
    order = (tl.sort(packed) & ((1 << IDX_BITS) - 1)).to(tl.int32)
    rows_perm = slot0 + order
    tl.store(PERM + b.to(tl.int64) * stride_pb + h * stride_ph + slot0 + idx, rows_perm)

    rows2 = tl.reshape(rows_perm, (BLOCKS, BS))
    plan_rows = seg * BLOCKS - first_q_block + tl.arange(0, BLOCKS)
    bound = b.to(tl.int64) * stride_bb + h * stride_bh + plan_rows
    tl.store(QMIN + bound, tl.min(rows2, 1) + q_offset)
    tl.store(QMAX + bound, tl.max(rows2, 1) + q_offset)
    x = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + rows2[:, :, None].to(tl.int64) * stride_qn
                + offs_d[None, None, :], mask=d_ok[None, None, :], other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / BS * scale
    tl.store(POOLED + b.to(tl.int64) * stride_ob + h * stride_oh + plan_rows[:, None] * stride_or + offs_d[None, :],
             mean, mask=d_ok[None, :])


def query_permutation_fused(q: Tensor, pooled_k: Tensor, seq_len_kv: int, block_size: int, segment_size: int,
                            scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Query permutation and what the selection needs from it, no host synchronisation.

    q: (B, Hq, Nq, D); pooled_k: (B, Hk, T, D) mean (permuted) key blocks, Hk = Hq or Hkv. Returns
    ``query_perm`` (B, Hq, Nq) int32 (slot -> original query row), ``pooled_q`` (B, Hq, R, D) float32 mean
    permuted query of each plan row × scale, ``qmin``/``qmax`` (B, Hq, R) int32 original positions.
    """
    batch, heads, nq, dim = q.shape
    q_offset = seq_len_kv - nq
    bs = block_size
    first = q_offset // bs
    nkb = -(-seq_len_kv // bs)
    rows = nkb - first
    device = q.device
    query_perm = torch.arange(nq, dtype=torch.int32, device=device).expand(batch, heads, nq).contiguous()
    pooled_q = block_means_fused(q, bs, front=q_offset % bs, scale=scale)
    starts = torch.arange(first, nkb, dtype=torch.int32, device=device) * bs
    qmin = torch.clamp(starts, min=q_offset).expand(batch, heads, rows).contiguous()
    qmax = torch.clamp(starts + bs - 1, max=seq_len_kv - 1).expand(batch, heads, rows).contiguous()
    # segments permuted: 1 .. nk // S - 1, entirely inside the query range
    first_seg = max(1, -(-q_offset // segment_size))
    n_segs = seq_len_kv // segment_size - first_seg
    if n_segs > 0:
        centroids = torch.nn.functional.normalize(pooled_k, dim=-1)
        _query_perm_kernel[(n_segs, batch * heads)](
            q, centroids, query_perm, pooled_q, qmin, qmax,
            q.stride(0), q.stride(1), q.stride(2), centroids.stride(0), centroids.stride(1), centroids.stride(2),
            query_perm.stride(0), query_perm.stride(1), pooled_q.stride(0), pooled_q.stride(1), pooled_q.stride(2),
            qmin.stride(0), qmin.stride(1),
            q_offset, first, first_seg, scale,
            H=heads, C_HEADS_DIV=heads // pooled_k.shape[1], HEAD_DIM=dim, D_PAD=max(16, triton.next_power_of_2(dim)),
            SEG=segment_size, BS=bs, BLOCKS=segment_size // bs, IDX_BITS=max(1, (segment_size - 1).bit_length()),
            C_CHUNK=32, num_warps=8 if q.is_cuda else 4,
        )
    return query_perm, pooled_q, qmin, qmax
