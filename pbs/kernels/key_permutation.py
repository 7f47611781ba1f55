"""PBS key permutation on the GPU: importance from the last query block, per-segment sort, pooled keys.

The fused counterpart of ``pbs.permutation.key_permutation`` + ``pooled_keys`` (same rule, same tie-breaks):

1. ``_row_stats_kernel``: per (b, q head, key split), online max and sum of exp of the last query rows' scaled
   logits over the keys of the complete segments (flash-style partial softmax statistics, nothing N-sized kept);
   a few tiny torch ops combine the splits into each row's max and normaliser.
2. ``_importance_kernel``: per (b, permutation head, key chunk), the keys' softmax probabilities recomputed with
   those statistics and averaged over the rows (and over the GQA group's query heads for ``share="kv_head"``).
3. ``_sort_pool_kernel``: per (b, permutation head, segment), a stable descending sort of the segment's
   importances (ties keep natural order), the permutation written out (int32), and each permuted block's mean
   key and min/max original position.

As in the reference, logits are rounded to the inputs' dtype before the fp32 softmax (the reference's matmul
runs in the inputs' dtype). Keys after the last complete segment keep their place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

_LOG2E = 1.4426950408889634


@triton.jit
def _row_stats_kernel(
    Q, K, M_OUT, L_OUT,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_mb, stride_mh, stride_ms,
    q_start, m_rows, n_keys, keys_per_split, scale,
    H: tl.constexpr, KV_GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, ROUND_LOGITS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    CAUSAL: tl.constexpr,
):
    """Partial softmax statistics of m query rows over keys [split·kps, +kps) ∩ [0, n_keys); with CAUSAL the rows
    are the last m positions of n_keys and see only keys at or before their own."""
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < m_rows
    q_pos = n_keys - m_rows + rows
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h * stride_qh + (q_start + rows)[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + b.to(tl.int64) * stride_kb + (h // KV_GROUP) * stride_kh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    lo = split * keys_per_split
    hi = tl.minimum(lo + keys_per_split, n_keys)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None],
                    mask=col_ok[None, :] & d_ok[:, None], other=0.0)
        s = tl.dot(q, k, input_precision=DOT_PRECISION)
        if ROUND_LOGITS:
            s = s.to(Q.dtype.element_ty).to(tl.float32)
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= q_pos[:, None])
        s = tl.where(visible, s * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)
        m_i = m_new
    out = b.to(tl.int64) * stride_mb + h * stride_mh + split * stride_ms + rows
    tl.store(M_OUT + out, m_i, mask=row_ok)
    tl.store(L_OUT + out, l_i, mask=row_ok)


@triton.jit
def _combine_stats_kernel(PART_M, PART_L, ROW_M, ROW_L, splits, stride_p, stride_r, BLOCK_M: tl.constexpr,
                          SPLITS_PAD: tl.constexpr):
    """Per (b, q head): the rows' max and normaliser from the splits' partial statistics."""
    bh = tl.program_id(0)
    sp = tl.arange(0, SPLITS_PAD)
    rows = tl.arange(0, BLOCK_M)
    ptr = bh.to(tl.int64) * stride_p + sp[:, None] * BLOCK_M + rows[None, :]
    ok = (sp < splits)[:, None]
    m = tl.load(PART_M + ptr, mask=ok, other=float("-inf"))
    l = tl.load(PART_L + ptr, mask=ok, other=0.0)
    m_row = tl.max(m, 0)
    m_safe = tl.where(m_row == float("-inf"), 0.0, m_row)
    l_row = tl.sum(l * tl.exp(m - m_safe[None, :]), 0)
    tl.store(ROW_M + bh.to(tl.int64) * stride_r + rows, m_row)
    tl.store(ROW_L + bh.to(tl.int64) * stride_r + rows, l_row)


@triton.jit
def _importance_kernel(
    Q, K, ROW_M, ROW_L, IMP,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_rb, stride_rh, stride_ib, stride_ih,
    q_start, m_rows, n_keys, scale,
    HP: tl.constexpr, Q_PER_HP: tl.constexpr, KV_GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CHUNKS: tl.constexpr, ROUND_LOGITS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    bhp = tl.program_id(1)
    b = bhp // HP
    hp = bhp % HP
    rows = tl.arange(0, BLOCK_M)
    row_ok = rows < m_rows
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    if Q_PER_HP == 1:  # one query head: its rows and statistics stay in registers for every chunk
        h1 = hp
        q1 = tl.load(Q + b.to(tl.int64) * stride_qb + h1 * stride_qh + (q_start + rows)[:, None] * stride_qn
                     + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        stats1 = b.to(tl.int64) * stride_rb + h1 * stride_rh + rows
        m1 = tl.load(ROW_M + stats1, mask=row_ok, other=0.0)
        l1 = tl.load(ROW_L + stats1, mask=row_ok, other=1.0)
    for c in range(CHUNKS):
        cols = (pid * CHUNKS + c) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_keys
        imp = tl.zeros([BLOCK_N], dtype=tl.float32)
        for g in range(Q_PER_HP):
            h = hp * Q_PER_HP + g
            if Q_PER_HP == 1:
                q, m_row, l_row = q1, m1, l1
            else:
                q = tl.load(Q + b.to(tl.int64) * stride_qb + h * stride_qh + (q_start + rows)[:, None] * stride_qn
                            + offs_d[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
                stats = b.to(tl.int64) * stride_rb + h * stride_rh + rows
                m_row = tl.load(ROW_M + stats, mask=row_ok, other=0.0)
                l_row = tl.load(ROW_L + stats, mask=row_ok, other=1.0)
            k_base = K + b.to(tl.int64) * stride_kb + (h // KV_GROUP) * stride_kh
            k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_kn + offs_d[:, None],
                        mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            s = tl.dot(q, k, input_precision=DOT_PRECISION)
            if ROUND_LOGITS:
                s = s.to(Q.dtype.element_ty).to(tl.float32)
            p = tl.exp(s * scale - m_row[:, None]) / l_row[:, None]
            p = tl.where(row_ok[:, None], p, 0.0)
            imp += tl.sum(p, 0) / m_rows
        imp = imp / Q_PER_HP
        tl.store(IMP + b.to(tl.int64) * stride_ib + hp * stride_ih + cols, imp, mask=col_ok)


@triton.jit
def _sort_pool_kernel(
    IMP, K, PERM, POOLED, KMIN, KMAX, SINK,
    stride_ib, stride_ih, stride_kb, stride_kh, stride_kn, stride_pb, stride_ph,
    stride_ob, stride_oh, stride_ot, stride_bb, stride_bh, stride_sb,
    HP: tl.constexpr, KV_PER_HP_DIV: tl.constexpr, HEAD_DIM: tl.constexpr, D_CHUNK: tl.constexpr,
    SEG: tl.constexpr, BS: tl.constexpr, BLOCKS: tl.constexpr,
):
    seg = tl.program_id(0)
    bhp = tl.program_id(1)
    b = bhp // HP
    hp = bhp % HP
    idx = tl.arange(0, SEG)
    imp = tl.load(IMP + b.to(tl.int64) * stride_ib + hp * stride_ih + seg * SEG + idx)
    # descending by importance, ties by ascending index (a stable sort of -importance): one int64 key per key
    bits = imp.to(tl.int32, bitcast=True).to(tl.int64)  # importance >= 0: float order == integer order
    packed = (bits << 32) | (SEG - 1 - idx).to(tl.int64)
    order = (SEG - 1 - (tl.sort(packed, descending=True) & 0x7FFFFFFF)).to(tl.int32)  # (SEG,) local key index
    orig = seg * SEG + order
    tl.store(PERM + b.to(tl.int64) * stride_pb + hp * stride_ph + seg * SEG + idx, orig)

    orig2 = tl.reshape(orig, (BLOCKS, BS))
    bound = b.to(tl.int64) * stride_bb + hp * stride_bh + seg * BLOCKS + tl.arange(0, BLOCKS)
    tl.store(KMIN + bound, tl.min(orig2, 1))
    tl.store(KMAX + bound, tl.max(orig2, 1))
    if seg == 0:
        sink_slot = tl.sum(tl.where(orig == 0, idx, 0), 0)
        tl.store(SINK + b.to(tl.int64) * stride_sb + hp, sink_slot // BS)

    k_base = K + b.to(tl.int64) * stride_kb + (hp // KV_PER_HP_DIV) * stride_kh
    out_rows = seg * BLOCKS + tl.arange(0, BLOCKS)
    for d0 in range(0, HEAD_DIM, D_CHUNK):
        offs_d = d0 + tl.arange(0, D_CHUNK)
        d_ok = offs_d < HEAD_DIM
        ptrs = k_base + orig2[:, :, None].to(tl.int64) * stride_kn + offs_d[None, None, :]
        rows = tl.load(ptrs, mask=d_ok[None, None, :], other=0.0).to(tl.float32)  # (BLOCKS, BS, D_CHUNK)
        mean = tl.sum(rows, 1) / BS
        o_ptrs = POOLED + b.to(tl.int64) * stride_ob + hp * stride_oh + out_rows[:, None] * stride_ot + offs_d[None, :]
        tl.store(o_ptrs, mean, mask=d_ok[None, :])


def key_permutation_fused(q: Tensor, k: Tensor, block_size: int, segment_size: int, scale: float,
                          share: str = "q_head") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """PBS key permutation, pooled permuted keys and block bounds in a few launches, no host synchronisation.

    q: (B, Hq, Nq, D), k: (B, Hkv, Nk, D) with Nk >= segment_size. Returns
    ``key_perm`` (B, Hp, Nk) int32 (slot -> original key; Hp = Hq for ``share="q_head"``, Hkv for ``"kv_head"``),
    ``pooled`` (B, Hp, T, D) float32 mean key of each permuted block, ``kmin``/``kmax`` (B, Hp, T) int32 the
    smallest/largest original position in each permuted block, ``sink`` (B, Hp) int32 the block holding key 0.
    Equals ``pbs.permutation.key_permutation`` / ``pooled_keys`` up to fp32 rounding of the importances.
    """
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    kv_group = heads // kv_heads
    complete = (nk // segment_size) * segment_size
    if complete == 0:
        raise ValueError(f"key_permutation_fused needs seq_len_kv >= segment_size, got {nk} < {segment_size}")
    m_rows = min(block_size, nq)
    q_start = nq - m_rows
    perm_heads, q_per_hp = (heads, 1) if share == "q_head" else (kv_heads, kv_group)
    nkb = -(-nk // block_size)
    device = q.device
    round_logits = q.dtype != torch.float32
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    on_gpu = q.is_cuda
    block_m = max(16, triton.next_power_of_2(m_rows))
    d_pad = max(16, triton.next_power_of_2(dim))
    block_n = 64 if on_gpu else 32

    # 1. per-row softmax statistics over the complete segments' keys, split across programs
    keys_per_split = max(block_n, 2048 if on_gpu else 1 << 30)
    splits = -(-complete // keys_per_split)
    part_m = torch.empty(batch, heads, splits, block_m, dtype=torch.float32, device=device)
    part_l = torch.empty_like(part_m)
    _row_stats_kernel[(splits, batch * heads)](
        q, k, part_m, part_l,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        part_m.stride(0), part_m.stride(1), part_m.stride(2),
        q_start, m_rows, complete, keys_per_split, scale,
        H=heads, KV_GROUP=kv_group, HEAD_DIM=dim, D_PAD=d_pad, BLOCK_M=block_m, BLOCK_N=block_n,
        ROUND_LOGITS=round_logits, DOT_PRECISION=precision, CAUSAL=False, num_warps=8 if on_gpu else 4,
    )
    row_m = torch.empty(batch, heads, block_m, dtype=torch.float32, device=device)
    row_l = torch.empty_like(row_m)
    _combine_stats_kernel[(batch * heads,)](part_m, part_l, row_m, row_l, splits, part_m.stride(1), row_m.stride(1),
                                            BLOCK_M=block_m, SPLITS_PAD=max(2, triton.next_power_of_2(splits)))

    # 2. importance of every complete-segment key
    imp = torch.empty(batch, perm_heads, complete, dtype=torch.float32, device=device)
    chunk = 64 if on_gpu else 32
    chunks = 8 if on_gpu else 1  # chunks per program: the query rows are loaded once per 512 keys
    _importance_kernel[(-(-complete // (chunk * chunks)), batch * perm_heads)](
        q, k, row_m, row_l, imp,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        row_m.stride(0), row_m.stride(1), imp.stride(0), imp.stride(1),
        q_start, m_rows, complete, scale,
        HP=perm_heads, Q_PER_HP=q_per_hp, KV_GROUP=kv_group, HEAD_DIM=dim, D_PAD=d_pad,
        BLOCK_M=block_m, BLOCK_N=chunk, CHUNKS=chunks, ROUND_LOGITS=round_logits, DOT_PRECISION=precision,
        num_warps=8 if on_gpu else 4,
    )

    # 3. sort inside segments, pooled keys and bounds of the permuted blocks; the tail keeps natural order
    key_perm = torch.empty(batch, perm_heads, nk, dtype=torch.int32, device=device)
    pooled = torch.empty(batch, perm_heads, nkb, dim, dtype=torch.float32, device=device)
    kmin = torch.empty(batch, perm_heads, nkb, dtype=torch.int32, device=device)
    kmax = torch.empty_like(kmin)
    sink = torch.empty(batch, perm_heads, dtype=torch.int32, device=device)
    _sort_pool_kernel[(complete // segment_size, batch * perm_heads)](
        imp, k, key_perm, pooled, kmin, kmax, sink,
        imp.stride(0), imp.stride(1), k.stride(0), k.stride(1), k.stride(2), key_perm.stride(0), key_perm.stride(1),
        pooled.stride(0), pooled.stride(1), pooled.stride(2), kmin.stride(0), kmin.stride(1), sink.stride(0),
        HP=perm_heads, KV_PER_HP_DIV=1 if share == "kv_head" else kv_group, HEAD_DIM=dim,
        D_CHUNK=min(32, d_pad), SEG=segment_size, BS=block_size, BLOCKS=segment_size // block_size,
        num_warps=8 if on_gpu else 4,
    )
    if complete < nk:
        from .block_means import block_means_fused

        first_tail = complete // block_size
        key_perm[:, :, complete:] = torch.arange(complete, nk, dtype=torch.int32, device=device)
        tail = block_means_fused(k[:, :, complete:], block_size)  # (B, Hkv, tail blocks, D)
        if perm_heads != kv_heads:
            tail = tail.repeat_interleave(kv_group, dim=1)
        pooled[:, :, first_tail:] = tail
        starts = torch.arange(first_tail, nkb, dtype=torch.int32, device=device) * block_size
        kmin[:, :, first_tail:] = starts
        kmax[:, :, first_tail:] = torch.clamp(starts + block_size - 1, max=nk - 1)
    return key_perm, pooled, kmin, kmax, sink
