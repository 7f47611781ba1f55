"""Permuted block-sparse FlashAttention forward (Triton), consuming a SparsePlan.

Notation (one program = one BLOCK_M slice of one plan row, one query head, one batch element):
    Q, K, V, Out      tensors (B, H, N, D) with arbitrary strides; K/V have H_KV heads, read at kv head h // GROUP
    KEY_PERM          (B, Hp, Nk) int32 permuted slot -> original key index (Hp = H or H_KV); HAS_KEY_PERM
    QUERY_PERM        (B, H, Nq) int32 permuted query slot -> original query row; HAS_QUERY_PERM
    FULL_NUM, FULL_IDX  per (b, h, row): tiles with no mask (every key precedes every query of the row)
    PART_NUM, PART_IDX  per (b, h, row): tiles needing the token causal mask on original positions
    COL_NUM, COL_IDX    per (b, h, row): individually gathered original key positions (HAS_COLS), masked
    WIN_NUM, WIN_START  per (b, h, row): key windows [start, start + SPARSE_BLOCK) ∩ [0, Nk) in original order
                        (HAS_WINDOWS; MInference's slash windows), masked
    SPARSE_BLOCK      the plan's block_size; BLOCK_M | SPARSE_BLOCK and BLOCK_N | SPARSE_BLOCK
    q_offset          Nk - Nq: query row i sits at position q_offset + i

K and V rows are gathered inside the kernel through KEY_PERM, so no permuted copy of K/V is ever made and GQA
heads share one K/V in memory. Softmax runs online in base 2 with fp32 accumulators.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..plan import SparsePlan


@triton.jit
def _attend_tiles(
    acc, m_i, l_i, q, q_pos, row_ok,
    K, V, KEY_PERM, kv_base_k, kv_base_v, perm_base,
    stride_kn, stride_vn, offs_d, d_ok,
    IDX, num, seq_len_kv, qk_scale,
    SPARSE_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, IS_FULL: tl.constexpr, IS_COLUMNS: tl.constexpr, IS_WINDOWS: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Online-softmax update over the listed tiles (IS_COLUMNS: gathered key columns; IS_WINDOWS: key windows
    given by their first original position, unaligned and never permuted)."""
    offs_n = tl.arange(0, BLOCK_N)
    if IS_COLUMNS:
        steps = tl.cdiv(num, BLOCK_N)
    else:
        steps = num * (SPARSE_BLOCK // BLOCK_N)
    for t in range(steps):
        # -- which keys --
        if IS_COLUMNS:
            j = t * BLOCK_N + offs_n
            key_ok = j < num
            key = tl.load(IDX + j, mask=key_ok, other=0).to(tl.int64)
        elif IS_WINDOWS:
            start = tl.load(IDX + t // (SPARSE_BLOCK // BLOCK_N)).to(tl.int64)
            key = start + (t % (SPARSE_BLOCK // BLOCK_N)) * BLOCK_N + offs_n
            key_ok = key < seq_len_kv
        else:
            block = tl.load(IDX + t // (SPARSE_BLOCK // BLOCK_N)).to(tl.int64)
            slot = block * SPARSE_BLOCK + (t % (SPARSE_BLOCK // BLOCK_N)) * BLOCK_N + offs_n
            key_ok = slot < seq_len_kv
            if HAS_KEY_PERM:
                key = tl.load(KEY_PERM + perm_base + slot, mask=key_ok, other=0).to(tl.int64)
            else:
                key = slot
        # -- compute qk --
        # [Note] EVEN_N (Nk a multiple of the block) and EVEN_D (D a power of two) drop the load masks, and
        # EVEN_M (every query row real) drops the mask of full tiles: the common case runs mask-free
        k_ptrs = K + kv_base_k + key[None, :] * stride_kn + offs_d[:, None]
        if EVEN_N and EVEN_D and not IS_COLUMNS and not IS_WINDOWS:
            k = tl.load(k_ptrs)
        else:
            k = tl.load(k_ptrs, mask=key_ok[None, :] & d_ok[:, None], other=0.0)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        if IS_FULL:
            if not (EVEN_N and EVEN_M):
                qk = tl.where(key_ok[None, :] & row_ok[:, None], qk, float("-inf"))
        else:
            # [Note] partial tiles mask per token on *original* positions: after permutation a tile in the
            # diagonal segment mixes keys before and after a query
            qk = tl.where(key_ok[None, :] & (key[None, :] <= q_pos[:, None]), qk, float("-inf"))
        # -- online softmax --
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = V + kv_base_v + key[:, None] * stride_vn + offs_d[None, :]
        if EVEN_N and EVEN_D and not IS_COLUMNS and not IS_WINDOWS:
            v = tl.load(v_ptrs)
        else:
            v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _pbs_fwd_kernel(
    Q, K, V, Out, KEY_PERM, QUERY_PERM,
    FULL_NUM, FULL_IDX, PART_NUM, PART_IDX, COL_NUM, COL_IDX, WIN_NUM, WIN_START,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    stride_pb, stride_ph, stride_qpb, stride_qph,
    stride_fnb, stride_fnh, stride_fib, stride_fih, stride_fir,
    stride_pnb, stride_pnh, stride_pib, stride_pih, stride_pir,
    stride_cnb, stride_cnh, stride_cib, stride_cih, stride_cir,
    stride_wnb, stride_wnh, stride_wib, stride_wih, stride_wir,
    seq_len_q, seq_len_kv, q_offset, first_q_block, qk_scale,
    H: tl.constexpr, GROUP: tl.constexpr, PERM_PER_Q_HEAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    SPARSE_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, HAS_QUERY_PERM: tl.constexpr, HAS_COLS: tl.constexpr, HAS_WINDOWS: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tl.static_assert(SPARSE_BLOCK % BLOCK_M == 0)
    tl.static_assert(SPARSE_BLOCK % BLOCK_N == 0)
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    row = pid_m // (SPARSE_BLOCK // BLOCK_M)
    sub = pid_m % (SPARSE_BLOCK // BLOCK_M)

    # query slots of this program: absolute positions [start, start + BLOCK_M) within the row and [q_offset, Nk)
    start = (first_q_block + row) * SPARSE_BLOCK + sub * BLOCK_M
    pos = start + tl.arange(0, BLOCK_M)
    row_ok = (pos >= q_offset) & (pos < seq_len_kv)
    slot = tl.where(row_ok, pos - q_offset, 0)
    if HAS_QUERY_PERM:
        q_row = tl.load(QUERY_PERM + b.to(tl.int64) * stride_qpb + h * stride_qph + slot, mask=row_ok, other=0).to(tl.int64)
    else:
        q_row = slot.to(tl.int64)
    q_pos = tl.where(row_ok, q_row + q_offset, -1)  # -1: padding rows see nothing

    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_ok = offs_d < HEAD_DIM
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h * stride_qh + q_row[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    kvh = h // GROUP
    kv_base_k = b.to(tl.int64) * stride_kb + kvh * stride_kh
    kv_base_v = b.to(tl.int64) * stride_vb + kvh * stride_vh
    if PERM_PER_Q_HEAD:
        perm_base = b.to(tl.int64) * stride_pb + h * stride_ph
    else:
        perm_base = b.to(tl.int64) * stride_pb + kvh * stride_ph

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)

    num = tl.load(FULL_NUM + b * stride_fnb + h * stride_fnh + row)
    idx = FULL_IDX + b.to(tl.int64) * stride_fib + h * stride_fih + row * stride_fir
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, q_pos, row_ok, K, V, KEY_PERM, kv_base_k, kv_base_v, perm_base,
        stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
        SPARSE_BLOCK, BLOCK_N, HAS_KEY_PERM, True, False, False, EVEN_N, EVEN_M, HEAD_DIM == HEAD_DIM_PAD,
        DOT_PRECISION,
    )
    num = tl.load(PART_NUM + b * stride_pnb + h * stride_pnh + row)
    idx = PART_IDX + b.to(tl.int64) * stride_pib + h * stride_pih + row * stride_pir
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, q_pos, row_ok, K, V, KEY_PERM, kv_base_k, kv_base_v, perm_base,
        stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
        SPARSE_BLOCK, BLOCK_N, HAS_KEY_PERM, False, False, False, EVEN_N, EVEN_M, HEAD_DIM == HEAD_DIM_PAD,
        DOT_PRECISION,
    )
    if HAS_COLS:
        num = tl.load(COL_NUM + b * stride_cnb + h * stride_cnh + row)
        idx = COL_IDX + b.to(tl.int64) * stride_cib + h * stride_cih + row * stride_cir
        acc, m_i, l_i = _attend_tiles(
            acc, m_i, l_i, q, q_pos, row_ok, K, V, KEY_PERM, kv_base_k, kv_base_v, perm_base,
            stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
            SPARSE_BLOCK, BLOCK_N, False, False, True, False, EVEN_N, EVEN_M, HEAD_DIM == HEAD_DIM_PAD, DOT_PRECISION,
        )
    if HAS_WINDOWS:
        num = tl.load(WIN_NUM + b * stride_wnb + h * stride_wnh + row)
        idx = WIN_START + b.to(tl.int64) * stride_wib + h * stride_wih + row * stride_wir
        acc, m_i, l_i = _attend_tiles(
            acc, m_i, l_i, q, q_pos, row_ok, K, V, KEY_PERM, kv_base_k, kv_base_v, perm_base,
            stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
            SPARSE_BLOCK, BLOCK_N, False, False, False, True, EVEN_N, EVEN_M, HEAD_DIM == HEAD_DIM_PAD, DOT_PRECISION,
        )

    # epilogue: rows that saw no key are 0
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h * stride_oh + q_row[:, None] * stride_on + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


def _tile_sizes(block_size: int, head_dim: int, on_gpu: bool) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for a plan block size and head_dim."""
    if not on_gpu:
        return min(block_size, 32), min(block_size, 32), 4, 1
    # measured on an H200 (docs/perf-notes.md, v2): 128x128 tiles, 8 warps, 2 stages beat 128x64/3 stages
    block = min(block_size, 128)
    return block, block, 8, 2


def pbs_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: SparsePlan, scale: float,
                 block_m: int | None = None, block_n: int | None = None, num_warps: int | None = None,
                 num_stages: int | None = None) -> torch.Tensor:
    """Run the plan: q (B, Hq, Nq, D), k, v (B, Hkv, Nk, D) -> out (B, Hq, Nq, D) in q's dtype, natural order."""
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"the triton backend needs fp16, bf16 or fp32 inputs, got q.dtype={q.dtype}")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("the triton backend needs the last dimension of q, k, v contiguous (stride 1)")
    if plan.seq_len_q != nq or plan.seq_len_kv != nk or plan.kv_num_blocks.shape[:2] != (batch, heads):
        raise ValueError(
            f"plan does not match the inputs: plan (Nq={plan.seq_len_q}, Nk={plan.seq_len_kv}, "
            f"B,H={tuple(plan.kv_num_blocks.shape[:2])}) vs q {tuple(q.shape)}, k {tuple(k.shape)}"
        )
    on_gpu = q.is_cuda
    bm, bn, warps, stages = _tile_sizes(plan.block_size, dim, on_gpu)
    bm, bn = block_m or bm, block_n or bn
    warps, stages = num_warps or warps, num_stages or stages
    out = torch.empty_like(q)
    dummy = torch.zeros(1, 1, 1, 1, dtype=torch.int32, device=q.device)
    # int32 indices: half the index bytes of the plan's int64 permutations
    key_perm = plan.key_perm.to(torch.int32) if plan.key_perm is not None else dummy.view(1, 1, 1)
    query_perm = plan.query_perm.to(torch.int32) if plan.query_perm is not None else dummy.view(1, 1, 1)
    col_num = plan.col_num if plan.col_num is not None else dummy.view(1, 1, 1)
    col_idx = plan.col_indices if plan.col_indices is not None else dummy
    win_num = plan.win_num if plan.win_starts is not None else dummy.view(1, 1, 1)
    win_start = plan.win_starts if plan.win_starts is not None else dummy
    tensors = [plan.full_kv_num_blocks, plan.full_kv_indices, plan.kv_num_blocks, plan.kv_indices, col_num, col_idx,
               win_num, win_start, key_perm, query_perm]
    tensors = [t.contiguous() for t in tensors]
    full_num, full_idx, part_num, part_idx, col_num, col_idx, win_num, win_start, key_perm, query_perm = tensors
    grid = (plan.num_rows * (plan.block_size // bm), batch * heads)
    _pbs_fwd_kernel[grid](
        q, k, v, out, key_perm, query_perm,
        full_num, full_idx, part_num, part_idx, col_num, col_idx, win_num, win_start,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        key_perm.stride(0), key_perm.stride(1), query_perm.stride(0), query_perm.stride(1),
        full_num.stride(0), full_num.stride(1), full_idx.stride(0), full_idx.stride(1), full_idx.stride(2),
        part_num.stride(0), part_num.stride(1), part_idx.stride(0), part_idx.stride(1), part_idx.stride(2),
        col_num.stride(0), col_num.stride(1), col_idx.stride(0), col_idx.stride(1), col_idx.stride(2),
        win_num.stride(0), win_num.stride(1), win_start.stride(0), win_start.stride(1), win_start.stride(2),
        nq, nk, nk - nq, plan.first_q_block, scale * 1.4426950408889634,
        H=heads, GROUP=heads // kv_heads,
        PERM_PER_Q_HEAD=plan.key_perm is not None and plan.key_perm.shape[1] == heads,
        HEAD_DIM=dim, HEAD_DIM_PAD=max(16, triton.next_power_of_2(dim)),
        SPARSE_BLOCK=plan.block_size, BLOCK_M=bm, BLOCK_N=bn,
        HAS_KEY_PERM=plan.key_perm is not None, HAS_QUERY_PERM=plan.query_perm is not None,
        HAS_COLS=plan.col_indices is not None, HAS_WINDOWS=plan.win_starts is not None,
        EVEN_N=nk % plan.block_size == 0,
        EVEN_M=(nk - nq) % bm == 0 and nk % bm == 0,
        # fp32 inputs get exact fp32 dots (as SDPA in fp32), not TF32
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=warps, num_stages=stages,
    )
    return out
