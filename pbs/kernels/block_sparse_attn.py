"""Permuted block-sparse FlashAttention forward (Triton), consuming a SparsePlan.

Notation (one program = one BLOCK_M slice of one plan row, one query head, one batch element):
    Q, K, V, Out      tensors (B, H, N, D) with arbitrary strides; K/V have H_KV heads, read at kv head h // GROUP
    K_DESC, V_DESC    tensor descriptors (TMA) over K/V, or over their permuted copy (KV_PERMUTED), when KV_DESC
    KEY_PERM          (B, Hp, Nk) int32 permuted slot -> original key index (Hp = H or H_KV); HAS_KEY_PERM
    QUERY_PERM        (B, H, Nq) int32 permuted query slot -> original query row; HAS_QUERY_PERM
    FULL_NUM, FULL_IDX  per (b, h, row): tiles with no mask (every key precedes every query of the row)
    PART_NUM, PART_IDX  per (b, h, row): tiles needing the token causal mask on original positions
    COL_NUM, COL_IDX    per (b, h, row): individually gathered original key positions (HAS_COLS), masked
    WIN_NUM, WIN_START  per (b, h, row): key windows [start, start + SPARSE_BLOCK) ∩ [0, Nk) in original order
                        (HAS_WINDOWS; MInference's slash windows), masked
    SPARSE_BLOCK      the plan's block_size; BLOCK_M | SPARSE_BLOCK and BLOCK_N | SPARSE_BLOCK
    q_offset          Nk - Nq: query row i sits at position q_offset + i

Permuted key slots are read either by gathering K/V rows through KEY_PERM inside the kernel (pointer loads), or
from a permuted copy of K/V made once per call (KV_PERMUTED: contiguous tiles, TMA-loadable; KEY_PERM then only
gives the original positions that the causal mask of partial tiles needs). Softmax runs online in base 2 with
fp32 accumulators.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import triton
import triton.language as tl

from ..plan import SparsePlan


@triton.jit
def _attend_tiles(
    acc, m_i, l_i, q, q_pos, row_ok,
    K, V, K_DESC, V_DESC, KEY_PERM, kv_base_k, kv_base_v, perm_base, b, desc_head,
    stride_kn, stride_vn, offs_d, d_ok,
    IDX, num, seq_len_kv, qk_scale,
    SPARSE_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, KV_PERMUTED: tl.constexpr, KV_DESC: tl.constexpr,
    IS_FULL: tl.constexpr, IS_COLUMNS: tl.constexpr, IS_WINDOWS: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, EVEN_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
    FOLD_SCALE: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, K_ROW_MAJOR: tl.constexpr,
):
    """Online-softmax update over the listed tiles (IS_COLUMNS: gathered key columns; IS_WINDOWS: key windows
    given by their first original position, unaligned and never permuted)."""
    offs_n = tl.arange(0, BLOCK_N)
    if IS_COLUMNS:
        steps = tl.cdiv(num, BLOCK_N)
    else:
        steps = num * (SPARSE_BLOCK // BLOCK_N)
    # tiles read through a descriptor: contiguous rows of K/V (natural order, windows, or the permuted copy)
    USE_DESC: tl.constexpr = KV_DESC and not IS_COLUMNS and not (HAS_KEY_PERM and not KV_PERMUTED)
    for t in tl.range(steps, warp_specialize=WARP_SPECIALIZE):
        # -- which keys: `row0 + offs_n` are the rows read from K/V (or its copy), `key` their original positions
        if IS_COLUMNS:
            j = t * BLOCK_N + offs_n
            key_ok = j < num
            key = tl.load(IDX + j, mask=key_ok, other=0).to(tl.int64)
            row0 = 0
            rows = key
        elif IS_WINDOWS:
            start = tl.load(IDX + t // (SPARSE_BLOCK // BLOCK_N)).to(tl.int64)
            row0 = start + (t % (SPARSE_BLOCK // BLOCK_N)) * BLOCK_N
            key = row0 + offs_n
            key_ok = key < seq_len_kv
            rows = key
        else:
            block = tl.load(IDX + t // (SPARSE_BLOCK // BLOCK_N)).to(tl.int64)
            row0 = block * SPARSE_BLOCK + (t % (SPARSE_BLOCK // BLOCK_N)) * BLOCK_N
            slot = row0 + offs_n
            key_ok = slot < seq_len_kv
            if HAS_KEY_PERM and not (KV_PERMUTED and IS_FULL):
                key = tl.load(KEY_PERM + perm_base + slot, mask=key_ok, other=0).to(tl.int64)
            else:
                key = slot
            if KV_PERMUTED:
                rows = slot
            else:
                rows = key
        # -- compute qk --
        # [Note] EVEN_N (Nk a multiple of the block) and EVEN_D (D a power of two) drop the load masks, and
        # EVEN_M (every query row real) drops the mask of full tiles: the common case runs mask-free
        if USE_DESC:
            k = tl.trans(K_DESC.load([b, desc_head, row0.to(tl.int32), 0]).reshape([BLOCK_N, HEAD_DIM_PAD]))
        else:
            if K_ROW_MAJOR:
                k_ptrs = K + kv_base_k + rows[:, None] * stride_kn + offs_d[None, :]
                if EVEN_N and EVEN_D and not IS_COLUMNS and not IS_WINDOWS:
                    k = tl.trans(tl.load(k_ptrs))
                else:
                    k = tl.trans(tl.load(k_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0))
            else:
                k_ptrs = K + kv_base_k + rows[None, :] * stride_kn + offs_d[:, None]
                if EVEN_N and EVEN_D and not IS_COLUMNS and not IS_WINDOWS:
                    k = tl.load(k_ptrs)
                else:
                    k = tl.load(k_ptrs, mask=key_ok[None, :] & d_ok[:, None], other=0.0)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION)
        if not FOLD_SCALE:
            qk = qk * qk_scale
        if IS_FULL:
            if not (EVEN_N and EVEN_M):
                qk = tl.where(key_ok[None, :] & row_ok[:, None], qk, float("-inf"))
        else:
            # [Note] partial tiles mask per token on *original* positions: after permutation a tile in the
            # diagonal segment mixes keys before and after a query
            qk = tl.where(key_ok[None, :] & (key[None, :] <= q_pos[:, None]), qk, float("-inf"))
        # -- online softmax --
        if FOLD_SCALE:
            # the scale rides in the exponent's FMA (qk * scale - m) instead of a separate multiply per logit
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk * qk_scale - m_safe[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if USE_DESC:
            v = V_DESC.load([b, desc_head, row0.to(tl.int32), 0]).reshape([BLOCK_N, HEAD_DIM_PAD])
        else:
            v_ptrs = V + kv_base_v + rows[:, None] * stride_vn + offs_d[None, :]
            if EVEN_N and EVEN_D and not IS_COLUMNS and not IS_WINDOWS:
                v = tl.load(v_ptrs)
            else:
                v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0.0)
        if FOLD_SCALE:
            # accumulate inside the dot: the tensor cores add into the rescaled accumulator
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _pbs_fwd_kernel(
    Q, K, V, Out, Q_DESC, O_DESC, K_DESC, V_DESC, KEY_PERM, QUERY_PERM,
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
    seq_len_q, seq_len_kv, q_offset, first_q_block, qk_scale, num_programs_m, num_bh,
    H: tl.constexpr, GROUP: tl.constexpr, SCHED_GROUP: tl.constexpr, PERM_PER_Q_HEAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    SPARSE_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, HAS_QUERY_PERM: tl.constexpr, HAS_COLS: tl.constexpr, HAS_WINDOWS: tl.constexpr,
    KV_PERMUTED: tl.constexpr, KV_DESC: tl.constexpr, SCHEDULE: tl.constexpr, Q_DESC_ON: tl.constexpr,
    K_ROW_MAJOR: tl.constexpr,
    FOLD_SCALE: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tl.static_assert(SPARSE_BLOCK % BLOCK_M == 0)
    tl.static_assert(SPARSE_BLOCK % BLOCK_N == 0)
    if SCHEDULE == "heavy_first":
        # one flat grid, last query blocks (the most causal tiles) of every head first: the long programs start
        # early and the short ones fill the tail
        pid = tl.program_id(0)
        pid_bh = pid % num_bh
        pid_m = num_programs_m - 1 - pid // num_bh
    elif SCHEDULE == "rows_reversed":  # per head, last query blocks first
        pid_m = num_programs_m - 1 - tl.program_id(0)
        pid_bh = tl.program_id(1)
    elif SCHEDULE == "gqa_rows":  # the query heads of one KV head side by side, then the next query block
        pid = tl.program_id(0)
        per_kv = num_programs_m * SCHED_GROUP
        pid_kv = pid // per_kv
        pid_m = (pid % per_kv) // SCHED_GROUP
        pid_bh = pid_kv * SCHED_GROUP + pid % SCHED_GROUP
    else:  # "rows": every query block of one head, then the next head
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
    if Q_DESC_ON:
        q = Q_DESC.load([b, h, (start - q_offset).to(tl.int32), 0]).reshape([BLOCK_M, HEAD_DIM_PAD])
    else:
        q_ptrs = Q + b.to(tl.int64) * stride_qb + h * stride_qh + q_row[:, None] * stride_qn + offs_d[None, :]
        q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    kvh = h // GROUP
    if PERM_PER_Q_HEAD:
        perm_head = h
    else:
        perm_head = kvh
    if KV_PERMUTED:
        desc_head = perm_head  # the copy has one K/V per permutation
    else:
        desc_head = kvh
    kv_base_k = b.to(tl.int64) * stride_kb + desc_head * stride_kh
    kv_base_v = b.to(tl.int64) * stride_vb + desc_head * stride_vh
    perm_base = b.to(tl.int64) * stride_pb + perm_head * stride_ph

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    EVEN_D: tl.constexpr = HEAD_DIM == HEAD_DIM_PAD

    num = tl.load(FULL_NUM + b * stride_fnb + h * stride_fnh + row)
    idx = FULL_IDX + b.to(tl.int64) * stride_fib + h * stride_fih + row * stride_fir
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, q_pos, row_ok, K, V, K_DESC, V_DESC, KEY_PERM, kv_base_k, kv_base_v, perm_base, b,
        desc_head, stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
        SPARSE_BLOCK, BLOCK_N, HEAD_DIM_PAD, HAS_KEY_PERM, KV_PERMUTED, KV_DESC, True, False, False,
        EVEN_N, EVEN_M, EVEN_D, DOT_PRECISION, FOLD_SCALE, WARP_SPECIALIZE, K_ROW_MAJOR,
    )
    num = tl.load(PART_NUM + b * stride_pnb + h * stride_pnh + row)
    idx = PART_IDX + b.to(tl.int64) * stride_pib + h * stride_pih + row * stride_pir
    acc, m_i, l_i = _attend_tiles(
        acc, m_i, l_i, q, q_pos, row_ok, K, V, K_DESC, V_DESC, KEY_PERM, kv_base_k, kv_base_v, perm_base, b,
        desc_head, stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
        SPARSE_BLOCK, BLOCK_N, HEAD_DIM_PAD, HAS_KEY_PERM, KV_PERMUTED, KV_DESC, False, False, False,
        EVEN_N, EVEN_M, EVEN_D, DOT_PRECISION, FOLD_SCALE, WARP_SPECIALIZE, K_ROW_MAJOR,
    )
    if HAS_COLS:
        num = tl.load(COL_NUM + b * stride_cnb + h * stride_cnh + row)
        idx = COL_IDX + b.to(tl.int64) * stride_cib + h * stride_cih + row * stride_cir
        acc, m_i, l_i = _attend_tiles(
            acc, m_i, l_i, q, q_pos, row_ok, K, V, K_DESC, V_DESC, KEY_PERM, kv_base_k, kv_base_v, perm_base, b,
            desc_head, stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
            SPARSE_BLOCK, BLOCK_N, HEAD_DIM_PAD, False, False, KV_DESC, False, True, False,
            EVEN_N, EVEN_M, EVEN_D, DOT_PRECISION, FOLD_SCALE, WARP_SPECIALIZE, K_ROW_MAJOR,
        )
    if HAS_WINDOWS:
        num = tl.load(WIN_NUM + b * stride_wnb + h * stride_wnh + row)
        idx = WIN_START + b.to(tl.int64) * stride_wib + h * stride_wih + row * stride_wir
        acc, m_i, l_i = _attend_tiles(
            acc, m_i, l_i, q, q_pos, row_ok, K, V, K_DESC, V_DESC, KEY_PERM, kv_base_k, kv_base_v, perm_base, b,
            desc_head, stride_kn, stride_vn, offs_d, d_ok, idx, num, seq_len_kv, qk_scale,
            SPARSE_BLOCK, BLOCK_N, HEAD_DIM_PAD, False, False, KV_DESC, False, False, True,
            EVEN_N, EVEN_M, EVEN_D, DOT_PRECISION, FOLD_SCALE, WARP_SPECIALIZE, K_ROW_MAJOR,
        )

    # epilogue: rows that saw no key are 0
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if Q_DESC_ON:
        O_DESC.store([b, h, (start - q_offset).to(tl.int32), 0],
                     out.to(Out.dtype.element_ty).reshape([1, 1, BLOCK_M, HEAD_DIM_PAD]))
    else:
        o_ptrs = Out + b.to(tl.int64) * stride_ob + h * stride_oh + q_row[:, None] * stride_on + offs_d[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _gather_rows_kernel(
    SRC, OUT, PERM, stride_sb, stride_sh, stride_sn, stride_pb, stride_ph, seq_len, head_offset,
    HP: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    """OUT[b, hp, s] = SRC[b, (head_offset + hp) // GROUP, PERM[b, hp, s]]: K or V in permuted-slot order, OUT
    contiguous; PERM holds the permutations of heads head_offset.. (a chunk of them)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HP
    hp = pid_bh % HP
    slot = pid_n * BLOCK + tl.arange(0, BLOCK)
    ok = slot < seq_len
    key = tl.load(PERM + b.to(tl.int64) * stride_pb + hp * stride_ph + slot, mask=ok, other=0).to(tl.int64)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask = ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    src = SRC + b.to(tl.int64) * stride_sb + ((head_offset + hp) // GROUP) * stride_sh + key[:, None] * stride_sn + offs_d[None, :]
    rows = tl.load(src, mask=mask)
    dst = OUT + pid_bh.to(tl.int64) * seq_len * HEAD_DIM + slot[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dst, rows, mask=mask)


def permuted_kv_copy(x: torch.Tensor, key_perm: torch.Tensor, head_offset: int = 0, group: int | None = None
                     ) -> torch.Tensor:
    """x (B, H_KV, Nk, D), key_perm (B, Hp, Nk) -> (B, Hp, Nk, D) contiguous with row s = x[.., key_perm[.., s]].
    ``key_perm`` may be heads ``head_offset..`` of a permutation over ``group`` × H_KV heads (default: Hp / H_KV).
    Bytes: reads and writes Hp·Nk·D elements per batch element."""
    batch, kv_heads, nk, dim = x.shape
    hp = key_perm.shape[1]
    group = group if group is not None else hp // kv_heads
    out = torch.empty(batch, hp, nk, dim, dtype=x.dtype, device=x.device)
    block = 64
    _gather_rows_kernel[(triton.cdiv(nk, block), batch * hp)](
        x, out, key_perm, x.stride(0), x.stride(1), x.stride(2), key_perm.stride(0), key_perm.stride(1), nk, head_offset,
        HP=hp, GROUP=group, HEAD_DIM=dim, HEAD_DIM_PAD=max(16, triton.next_power_of_2(dim)), BLOCK=block,
    )
    return out


@dataclass(frozen=True)
class KernelConfig:
    """Launch settings of the sparse kernel; None picks the measured default (``kernel_config``).

    block_m, block_n: query rows and keys per step (divide the plan's block size); num_warps, num_stages: Triton's;
    kv_descriptors: K/V tiles through TMA tensor descriptors (CUDA, Hopper+; D a power of two);
    permuted_copy: read permuted plans from a permuted copy of K and V (contiguous, TMA-loadable tiles) instead
    of gathering rows in the kernel; the copy is made per chunk of heads, at most ``copy_budget`` × the bytes of K
    and V at a time, one launch per chunk (None: copy when every chunk's launch still fills the GPU);
    schedule: program order ("rows": a head's query blocks in order, then the next head; "rows_reversed";
    "heavy_first": the last query blocks of every head first; "gqa_rows": the query heads of one KV head side by
    side); q_descriptors: Q loads and O stores through descriptors (no query permutation,
    query blocks aligned); k_row_major: gathered K tiles loaded as rows and transposed in the kernel;
    fold_scale: softmax scale in the exponent's FMA and the PV product accumulating into the rescaled output;
    warp_specialize: Triton's warp specialisation of the tile loop.
    """

    block_m: int | None = None
    block_n: int | None = None
    num_warps: int | None = None
    num_stages: int | None = None
    kv_descriptors: bool | None = None
    permuted_copy: bool | None = None
    copy_budget: float | None = None
    schedule: str | None = None
    q_descriptors: bool | None = None
    k_row_major: bool | None = None
    fold_scale: bool | None = None
    warp_specialize: bool | None = None


def kernel_config(plan: SparsePlan, head_dim: int, on_gpu: bool, override: KernelConfig | None = None,
                  dtype: torch.dtype | None = None) -> KernelConfig:
    """The settings used for ``plan``: ``override``'s fields where given, else the measured defaults
    (docs/perf-notes.md, "Kernel throughput"; H200, Triton 3.6). ``permuted_copy`` may stay None (decided per call)."""
    shipped = dict(kv_descriptors=True, copy_budget=0.25, fold_scale=True, warp_specialize=False,
                   q_descriptors=True, k_row_major=True)
    if on_gpu and dtype == torch.float32:
        # fp32 tiles are twice the bytes: 64-row tiles and 2 stages keep K/V/Q within shared memory (not timed)
        block = min(plan.block_size, 64)
        base = KernelConfig(block, block, 4, 2, permuted_copy=False, schedule="rows", **shipped)
    elif not on_gpu:  # the interpreter: small tiles, the GPU's code paths
        block = min(plan.block_size, 32)
        base = KernelConfig(block, block, 4, 1, permuted_copy=False, schedule="rows", **shipped)
    elif plan.block_size < 128:
        # block 64 (MInference, block-64 plans): 64x64 tiles need 4 warps (8: 179 vs 470 TFLOP/s); the query heads of
        # one KV head side by side share K/V, columns and windows in L2 (+3–5%)
        block = plan.block_size
        base = KernelConfig(block, block, 4, 3, permuted_copy=None, schedule="gqa_rows", **shipped)
    else:
        # 128x128 tiles, 3 stages (sparse plans +2-5% over 2, all causal tiles -1%); D 128: 8 warps, D <= 64: 4
        base = KernelConfig(128, 128, 4 if head_dim <= 64 else 8, 3, permuted_copy=None, schedule="rows", **shipped)
    if override is None:
        return base
    return KernelConfig(**{f.name: getattr(override, f.name) if getattr(override, f.name) is not None
                           else getattr(base, f.name) for f in fields(KernelConfig)})


def _descriptor(x: torch.Tensor, block_n: int, head_dim_pad: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(x, list(x.shape), list(x.stride()), [1, 1, block_n, head_dim_pad])


def _descriptors_ok(dim: int, *tensors: torch.Tensor) -> bool:
    """TMA needs 16-byte aligned bases and strides (last stride 1) and, here, D a power of two."""
    if dim < 16 or dim & (dim - 1):
        return False
    return all(t.data_ptr() % 16 == 0 and all(st * t.element_size() % 16 == 0 for st in t.stride()[:-1])
               for t in tensors)


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def copy_chunk_heads(plan: SparsePlan, heads: int, kv_heads: int, budget: float) -> int:
    """Query heads per launch on the permuted-copy path. A copy of K and V for one permutation head takes
    1 / kv_heads of the bytes of K and V, so a chunk copies floor(budget × kv_heads) permutation heads (at least
    one): 2 of Llama-3.1-8B's 32 query heads at budget 0.25, or 8 with one permutation per KV head."""
    per_perm = heads // plan.key_perm.shape[1]  # query heads per permutation head: 1 or the GQA group
    return max(1, int(budget * kv_heads + 1e-9)) * per_perm


def pbs_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: SparsePlan, scale: float,
                 config: KernelConfig | None = None) -> torch.Tensor:
    """Run the plan: q (B, Hq, Nq, D), k, v (B, Hkv, Nk, D) -> out (B, Hq, Nq, D) in q's dtype, natural order.
    ``config`` overrides launch settings (benchmarks, tuning); the defaults are the measured best."""
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
    cfg = kernel_config(plan, dim, q.is_cuda, config, q.dtype)
    out = torch.empty_like(q)
    dummy = torch.zeros(1, 1, 1, 1, dtype=torch.int32, device=q.device)
    # int32 indices: half the index bytes of the plan's int64 permutations
    key_perm = plan.key_perm.to(torch.int32) if plan.key_perm is not None else dummy.view(1, 1, 1)
    query_perm = plan.query_perm.to(torch.int32) if plan.query_perm is not None else dummy.view(1, 1, 1)
    col_num = plan.col_num if plan.col_num is not None else dummy.view(1, 1, 1)
    col_idx = plan.col_indices if plan.col_indices is not None else dummy
    win_num = plan.win_num if plan.win_starts is not None else dummy.view(1, 1, 1)
    win_start = plan.win_starts if plan.win_starts is not None else dummy
    lists = [plan.full_kv_num_blocks, plan.full_kv_indices, plan.kv_num_blocks, plan.kv_indices, col_num, col_idx,
             win_num, win_start]
    lists = [t.contiguous() for t in lists]
    query_perm = query_perm.contiguous()
    programs_m = plan.num_rows * (plan.block_size // cfg.block_m)

    # the copy serves permuted tiles only: columns and windows index original positions
    copy_possible = plan.key_perm is not None and plan.col_indices is None and plan.win_starts is None
    chunk = copy_chunk_heads(plan, heads, kv_heads, cfg.copy_budget) if copy_possible else heads
    # auto: copy when a chunk's launch has two programs per SM or more (H200, Llama heads: from 32K at block 128;
    # at 8K the chunked launches run at a third of the gather's rate)
    use_copy = copy_possible and (cfg.permuted_copy if cfg.permuted_copy is not None
                                  else chunk * batch * programs_m >= 2 * _sm_count(q.device))
    if not use_copy:
        _launch(q, k, v, out, key_perm.contiguous(), query_perm, lists, plan, scale, cfg, kv_permuted=False,
                group=heads // kv_heads, programs_m=programs_m, dummy=dummy)
        return out
    # [Note] one launch per chunk of heads, each on its own permuted copy of K and V: contiguous tiles that TMA
    # can load, in memory bounded by copy_budget (docs/perf-notes.md: 0.98-1.0x of natural-order tiles vs 0.85-0.88x
    # for the in-kernel gather). Each launch runs its last query blocks first: a launch over few heads otherwise
    # ends on a tail of the longest rows (381 vs 472 TFLOP/s at 32K); 2 stages: the measured setting of this path
    if config is None or config.schedule is None:
        cfg = replace(cfg, schedule="rows_reversed")
    if (config is None or config.num_stages is None) and cfg.block_m >= 128:
        cfg = replace(cfg, num_stages=2)
    perm_heads = key_perm.shape[1]
    per_perm = heads // perm_heads  # query heads per permutation head
    for h0 in range(0, heads, chunk):
        h1 = min(heads, h0 + chunk)
        perm = key_perm[:, h0 // per_perm : -(-h1 // per_perm)].contiguous()
        k_src = permuted_kv_copy(k, perm, h0 // per_perm, perm_heads // kv_heads)
        v_src = permuted_kv_copy(v, perm, h0 // per_perm, perm_heads // kv_heads)
        _launch(q[:, h0:h1], k_src, v_src, out[:, h0:h1], perm, query_perm[:, h0:h1] if plan.query_perm is not None
                else query_perm, [t[:, h0:h1] for t in lists], plan, scale, cfg, kv_permuted=True,
                group=heads // kv_heads, programs_m=programs_m, dummy=dummy)
        del k_src, v_src
    return out


def _launch(q, k, v, out, key_perm, query_perm, lists, plan: SparsePlan, scale: float, cfg: KernelConfig, *,
            kv_permuted: bool, group: int, programs_m: int, dummy) -> None:
    """One kernel launch over q's heads (a chunk of the plan's, with the matching slices of the lists)."""
    batch, heads, nq, dim = q.shape
    nk = k.shape[2]
    bm, bn = cfg.block_m, cfg.block_n
    head_dim_pad = max(16, triton.next_power_of_2(dim))
    full_num, full_idx, part_num, part_idx, col_num, col_idx, win_num, win_start = lists
    use_desc = bool(cfg.kv_descriptors) and _descriptors_ok(dim, k, v)
    k_desc = _descriptor(k, bn, head_dim_pad) if use_desc else dummy
    v_desc = _descriptor(v, bn, head_dim_pad) if use_desc else dummy
    flat = cfg.schedule in ("heavy_first", "gqa_rows")
    grid = (programs_m * batch * heads,) if flat else (programs_m, batch * heads)
    q_desc_on = (bool(cfg.q_descriptors) and plan.query_perm is None and (nk - nq) % bm == 0
                 and _descriptors_ok(dim, q, out))
    q_desc = _descriptor(q, bm, head_dim_pad) if q_desc_on else dummy
    o_desc = _descriptor(out, bm, head_dim_pad) if q_desc_on else dummy
    _pbs_fwd_kernel[grid](
        q, k, v, out, q_desc, o_desc, k_desc, v_desc, key_perm, query_perm,
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
        nq, nk, nk - nq, plan.first_q_block, scale * 1.4426950408889634, programs_m, batch * heads,
        H=heads, GROUP=group, SCHED_GROUP=group if heads % group == 0 else 1,
        PERM_PER_Q_HEAD=plan.key_perm is not None and plan.key_perm.shape[1] == plan.kv_num_blocks.shape[1],
        HEAD_DIM=dim, HEAD_DIM_PAD=head_dim_pad,
        SPARSE_BLOCK=plan.block_size, BLOCK_M=bm, BLOCK_N=bn,
        HAS_KEY_PERM=plan.key_perm is not None, HAS_QUERY_PERM=plan.query_perm is not None,
        HAS_COLS=plan.col_indices is not None, HAS_WINDOWS=plan.win_starts is not None,
        KV_PERMUTED=kv_permuted, KV_DESC=use_desc, SCHEDULE=cfg.schedule,
        Q_DESC_ON=q_desc_on, K_ROW_MAJOR=bool(cfg.k_row_major),
        FOLD_SCALE=bool(cfg.fold_scale), WARP_SPECIALIZE=bool(cfg.warp_specialize),
        EVEN_N=nk % plan.block_size == 0,
        EVEN_M=(nk - nq) % bm == 0 and nk % bm == 0,
        # fp32 inputs get exact fp32 dots (as SDPA in fp32), not TF32
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
