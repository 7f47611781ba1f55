"""XAttention's strided antidiagonal block estimation, fused (Triton): the fast path of
``pbs.scoring.antidiagonal_block_probs`` for its two uses (XAttention; PBS-Attn+ with segments).

Reshaped query i and reshaped key j (stride S) are scored by the antidiagonal sum
    x[i, j] = scale / S * sum_{r < S} q_abs[i*S + S-1-r] . k_slot[j*S + r]
where q_abs is the query sequence laid out at absolute positions (plan rows start at block (Nk - Nq) // bs, front
padding is zero) and k_slot the keys in permuted-slot order. Each reshaped query row sees a prefix of the reshaped
keys, j < limit[i]: the causal key blocks (minus the query block's own segment with ``segment_size``), the token
causal bound j <= i (absolute) with ``token_causal``, and keys that hold a real token. A row's softmax over that
prefix is summed per (plan row, key block) tile and each plan row is normalised to sum 1.

Notation (one program = a persistent worker that takes BLOCK_M reshaped rows of one (batch, query head) at a time):
    Q                (B, H, Nq, D), any strides with a unit last stride; K (B, H_KV, Nk, D), read at kv head h // GROUP
    KEY_PERM         (B, Hp, Nk) permuted slot -> original key index, Hp = H or H_KV (PERM_PER_Q_HEAD); HAS_KEY_PERM
    QUERY_PERM       (B, H, Nq) permuted query slot -> original query row; HAS_QUERY_PERM
    OUT              (B, H, R, T) float32, contiguous
    S, PB            the stride and PB = block_size // S reshaped rows (keys) per block row (key block)
    MODE             ONE_PASS: online row max/sum, per (row, key block) partial sums kept in a per-worker scratch
                     (SCR_E, SCR_M) and combined once the row's statistics are final; STATS then TILES: two sweeps,
                     the first writes each row's max and 1/sum (STAT_M, STAT_L), the second the normalised tile sums.
    EVEN             every Q/K row in range and D == BLOCK_D * D_SPLIT: loads without masks

The reduction over r and D is one flattened loop of (key tile, r, D chunk) steps with the tile's softmax work in an
``if`` at the last step, so the software pipeliner never drains between key tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..plan import num_blocks

ONE_PASS, STATS, TILES = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)  # MODE values
_LOG2E = 1.4426950408889634
_BLOCK_T = 64  # key-block columns per step of the combine / normalise sweeps


@triton.jit
def _key_limit(i, first_block, n_keys_r, seg_blocks,
               PB: tl.constexpr, HAS_SEGMENTS: tl.constexpr, TOKEN_CAUSAL: tl.constexpr):
    """Exclusive end of the reshaped keys that reshaped row i (relative to the first plan row) may see."""
    qb = first_block + i // PB
    if HAS_SEGMENTS:
        lim = (qb // seg_blocks) * seg_blocks * PB  # key blocks of earlier segments
    else:
        lim = (qb + 1) * PB  # causal key blocks
    if TOKEN_CAUSAL:
        lim = tl.minimum(lim, first_block * PB + i + 1)
    return tl.minimum(lim, n_keys_r)


@triton.jit
def _normalise_rows(OUT, out_base, rb, rb_ok, total, n_cols_written, n_kblocks, BLOCK_T: tl.constexpr):
    """OUT[rb, :] /= total (0 where total == 0, NaN where it is NaN); columns past n_cols_written become 0, so every
    entry is written."""
    offs_t = tl.arange(0, BLOCK_T)
    divisor = tl.where(total == 0.0, 1.0, total)
    for t0 in range(0, n_kblocks, BLOCK_T):
        c = t0 + offs_t
        ptrs = OUT + out_base + rb[:, None].to(tl.int64) * n_kblocks + c[None, :]
        v = tl.load(ptrs, mask=rb_ok[:, None] & (c < n_cols_written)[None, :], other=0.0)
        tl.store(ptrs, tl.where(total[:, None] == 0.0, 0.0, v / divisor[:, None]),
                 mask=rb_ok[:, None] & (c < n_kblocks)[None, :])


@triton.jit
def _antidiag_kernel(
    Q, K, KEY_PERM, QUERY_PERM, OUT, STAT_M, STAT_L, SCR_E, SCR_M,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_kpb, stride_kph, stride_qpb, stride_qph,
    nq, nk, front, first_block, n_rows_r, n_keys_r, n_rblocks, n_kblocks, seg_blocks,
    qk_scale, n_items, n_prog, n_row_tiles, batch_heads, heads, scr_cols, scr_tiles,
    GROUP: tl.constexpr, S: tl.constexpr, PB: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, D_SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, MODE: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, PERM_PER_Q_HEAD: tl.constexpr, HAS_QUERY_PERM: tl.constexpr,
    TOKEN_CAUSAL: tl.constexpr, HAS_SEGMENTS: tl.constexpr, EVEN: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    tl.static_assert(BLOCK_M % PB == 0)
    tl.static_assert(BLOCK_N % PB == 0)
    RB: tl.constexpr = BLOCK_M // PB  # plan rows per row tile
    CB: tl.constexpr = BLOCK_N // PB  # key blocks per key tile
    STEPS: tl.constexpr = S * D_SPLIT  # dot steps per key tile
    pid = tl.program_id(0)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_rb = tl.arange(0, RB)
    offs_cb = tl.arange(0, CB)
    scr_e_base = pid.to(tl.int64) * BLOCK_M * scr_cols
    scr_m_base = pid.to(tl.int64) * BLOCK_M * scr_tiles

    for rnd in range(tl.cdiv(n_items, n_prog)):
        # [Note] items run longest first (last row tiles see the most keys); the worker order snakes between
        # rounds so every worker gets a similar total
        w = rnd * n_prog + tl.where(rnd % 2 == 0, pid, n_prog - 1 - pid)
        if w < n_items:
            rt = n_row_tiles - 1 - w // batch_heads
            b = (w % batch_heads) // heads
            h = w % heads
            kvh = h // GROUP
            i = rt * BLOCK_M + offs_m  # reshaped rows, relative to the first plan row
            lim = _key_limit(i, first_block, n_keys_r, seg_blocks, PB, HAS_SEGMENTS, TOKEN_CAUSAL)
            key_end = _key_limit(tl.minimum((rt + 1) * BLOCK_M, n_rows_r) - 1, first_block, n_keys_r, seg_blocks,
                                 PB, HAS_SEGMENTS, TOKEN_CAUSAL)
            key_free = _key_limit(rt * BLOCK_M, first_block, n_keys_r, seg_blocks, PB, HAS_SEGMENTS, TOKEN_CAUSAL)
            n_kt = tl.cdiv(tl.maximum(key_end, 0), BLOCK_N)
            # a reshaped row is real when one of its S positions holds a query: pos in [i*S, i*S+S) - front
            row_real = (i * S + S - 1 >= front) & (i * S - front < nq)
            q_base = b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
            k_base = b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
            qp_base = b.to(tl.int64) * stride_qpb + h.to(tl.int64) * stride_qph
            if PERM_PER_Q_HEAD:
                kp_base = b.to(tl.int64) * stride_kpb + h.to(tl.int64) * stride_kph
            else:
                kp_base = b.to(tl.int64) * stride_kpb + kvh.to(tl.int64) * stride_kph
            out_base = (b.to(tl.int64) * heads + h) * n_rblocks * n_kblocks
            rb = rt * RB + offs_rb
            rb_ok = rb < n_rblocks
            stat_base = (b.to(tl.int64) * heads + h) * n_rows_r

            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            total = tl.zeros([RB], dtype=tl.float32)
            if MODE == TILES:
                m_row = tl.load(STAT_M + stat_base + i, mask=i < n_rows_r, other=0.0)
                inv_l = tl.load(STAT_L + stat_base + i, mask=i < n_rows_r, other=0.0)
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for step in range(n_kt * STEPS):
                kt = step // STEPS
                r = (step % STEPS) // D_SPLIT
                d = (step % D_SPLIT) * BLOCK_D + offs_d
                # -- load the r-th strided rows: q_abs[i*S + S-1-r] and k_slot[j*S + r] --
                q_slot = i * S + (S - 1 - r) - front
                j = kt * BLOCK_N + offs_n
                k_slot = j * S + r
                if EVEN:
                    if HAS_QUERY_PERM:
                        q_row = tl.load(QUERY_PERM + qp_base + q_slot).to(tl.int64)
                    else:
                        q_row = q_slot.to(tl.int64)
                    if HAS_KEY_PERM:
                        k_row = tl.load(KEY_PERM + kp_base + k_slot).to(tl.int64)
                    else:
                        k_row = k_slot.to(tl.int64)
                    q = tl.load(Q + q_base + q_row[:, None] * stride_qn + d[None, :])
                    k = tl.load(K + k_base + k_row[None, :] * stride_kn + d[:, None])
                else:
                    q_ok = (q_slot >= 0) & (q_slot < nq)
                    k_ok = k_slot < nk
                    if HAS_QUERY_PERM:
                        q_row = tl.load(QUERY_PERM + qp_base + q_slot, mask=q_ok, other=0).to(tl.int64)
                    else:
                        q_row = tl.where(q_ok, q_slot, 0).to(tl.int64)
                    if HAS_KEY_PERM:
                        k_row = tl.load(KEY_PERM + kp_base + k_slot, mask=k_ok, other=0).to(tl.int64)
                    else:
                        k_row = tl.where(k_ok, k_slot, 0).to(tl.int64)
                    d_ok = d < HEAD_DIM
                    q = tl.load(Q + q_base + q_row[:, None] * stride_qn + d[None, :],
                                mask=q_ok[:, None] & d_ok[None, :], other=0.0)
                    k = tl.load(K + k_base + k_row[None, :] * stride_kn + d[:, None],
                                mask=k_ok[None, :] & d_ok[:, None], other=0.0)
                acc = tl.dot(q, k, acc, input_precision=DOT_PRECISION)
                if step % STEPS == STEPS - 1:
                    # -- tile epilogue: base-2 logits, the row prefix mask only where a row's limit falls --
                    x = acc * qk_scale
                    if (kt + 1) * BLOCK_N > key_free:
                        x = tl.where(j[None, :] < lim[:, None], x, float("-inf"))
                    if MODE == TILES:
                        p = tl.where(inv_l[:, None] != 0.0, tl.exp2(x - m_row[:, None]) * inv_l[:, None], 0.0)
                        tile = tl.sum(tl.sum(tl.reshape(p, (RB, PB, CB, PB)), axis=3), axis=1)  # (RB, CB)
                        c = kt * CB + offs_cb
                        tl.store(OUT + out_base + rb[:, None].to(tl.int64) * n_kblocks + c[None, :], tile,
                                 mask=rb_ok[:, None] & (c < n_kblocks)[None, :])
                        total += tl.sum(tile, axis=1)
                    else:
                        m_new = tl.maximum(m_i, tl.max(x, axis=1))
                        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
                        p = tl.exp2(x - m_use[:, None])
                        l_i = l_i * tl.exp2(m_i - m_use) + tl.sum(p, axis=1)
                        m_i = m_new
                        if MODE == ONE_PASS:
                            # per (row, key block) sums relative to this tile's running max
                            e = tl.sum(tl.reshape(p, (BLOCK_M, CB, PB)), axis=2)  # (BLOCK_M, CB)
                            tl.store(SCR_E + scr_e_base + offs_m[:, None] * scr_cols + (kt * CB + offs_cb)[None, :], e)
                            tl.store(SCR_M + scr_m_base + offs_m * scr_tiles + kt, m_use)
                    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)

            # -- row epilogue --
            # [Note] rows that see no key give 0; NaN or +inf logits (a NaN or Inf in q or k) make l_i NaN, and
            # such rows give NaN (inv_fin = NaN), as the reference's softmax does: the selection then takes them whole
            unrankable = row_real & (l_i != l_i)  # noqa: PLR0124  (the NaN test: no isnan in triton.language)
            valid = row_real & (l_i > 0)
            m_fin = tl.where(valid, m_i, 0.0)
            inv_fin = tl.where(valid, 1.0 / tl.where(valid, l_i, 1.0), tl.where(unrankable, float("nan"), 0.0))
            valid = valid | unrankable
            n_cols = n_kt * CB
            if MODE == STATS:
                tl.store(STAT_M + stat_base + i, m_fin, mask=i < n_rows_r)
                tl.store(STAT_L + stat_base + i, inv_fin, mask=i < n_rows_r)
            else:
                if MODE == ONE_PASS:
                    tl.debug_barrier()  # scratch written by other threads of this program
                    offs_t = tl.arange(0, BLOCK_T)
                    for t0 in range(0, n_cols, BLOCK_T):
                        c = t0 + offs_t
                        c_ok = c < n_cols
                        e = tl.load(SCR_E + scr_e_base + offs_m[:, None] * scr_cols + c[None, :],
                                    mask=c_ok[None, :], other=0.0)
                        m_t = tl.load(SCR_M + scr_m_base + offs_m[:, None] * scr_tiles + (c // CB)[None, :],
                                      mask=c_ok[None, :], other=0.0)
                        p = tl.where(valid[:, None] & c_ok[None, :],
                                     e * tl.exp2(m_t - m_fin[:, None]) * inv_fin[:, None], 0.0)
                        tile = tl.sum(tl.reshape(p, (RB, PB, BLOCK_T)), axis=1)  # (RB, BLOCK_T)
                        tl.store(OUT + out_base + rb[:, None].to(tl.int64) * n_kblocks + c[None, :], tile,
                                 mask=rb_ok[:, None] & (c < n_kblocks)[None, :])
                        total += tl.sum(tile, axis=1)
                tl.debug_barrier()  # unnormalised OUT rows written by other threads of this program
                _normalise_rows(OUT, out_base, rb, rb_ok, total, n_cols, n_kblocks, BLOCK_T)
                tl.debug_barrier()  # the next item overwrites the scratch


_NUM_SMS: dict[int, int] = {}


def _num_sms(device: torch.device) -> int:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _NUM_SMS:
        _NUM_SMS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _NUM_SMS[index]


def _default_tiles(per_block: int, head_dim: int, on_gpu: bool) -> dict:
    if not on_gpu:  # the CPU interpreter: small tiles keep the tests fast
        return dict(block_m=max(32, per_block), block_n=max(32, per_block), block_d=128, num_warps=4,
                    num_stages=1, programs_per_sm=1)
    return dict(block_m=max(128, per_block), block_n=max(128, per_block), block_d=min(64, head_dim), num_warps=8,
                num_stages=3, programs_per_sm=1)


def _check_inputs(q, k, block_size, stride, scale, segment_size, key_perm, query_perm) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be 4-D (B, H, N, D), got q.shape={tuple(q.shape)}, k.shape={tuple(k.shape)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype:
        raise ValueError(f"q and k must share one dtype of fp16, bf16, fp32, got q.dtype={q.dtype}, k.dtype={k.dtype}")
    if q.device != k.device:
        raise ValueError(f"q and k must be on one device, got q.device={q.device}, k.device={k.device}")
    batch, heads, nq, dim = q.shape
    if k.shape[0] != batch or k.shape[3] != dim or k.shape[1] < 1 or heads % k.shape[1]:
        raise ValueError(f"k must be (B, H_KV, Nk, D) with H_KV dividing H, got q.shape={tuple(q.shape)}, "
                         f"k.shape={tuple(k.shape)}")
    if not 1 <= nq <= k.shape[2]:
        raise ValueError(f"need 1 <= Nq <= Nk, got Nq={nq}, Nk={k.shape[2]}")
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("q and k need a contiguous last dimension (stride 1)")
    if (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 16
            or block_size & (block_size - 1)):
        raise ValueError(f"block_size must be a power of two >= 16, got block_size={block_size!r}")
    if (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1 or stride & (stride - 1)
            or stride > block_size):
        raise ValueError(f"stride must be a power of two <= block_size ({block_size}), got stride={stride!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got scale={scale!r}")
    if segment_size is not None and (isinstance(segment_size, bool) or not isinstance(segment_size, int)
                                     or segment_size < block_size or segment_size % block_size):
        raise ValueError(f"segment_size must be a positive multiple of block_size ({block_size}), "
                         f"got segment_size={segment_size!r}")
    nk, kv_heads = k.shape[2], k.shape[1]
    if key_perm is not None and (key_perm.dim() != 3 or key_perm.shape[0] != batch or key_perm.shape[2] != nk
                                 or key_perm.shape[1] not in (heads, kv_heads) or key_perm.is_floating_point()):
        raise ValueError(f"key_perm must be integer (B, H or H_KV, Nk) = ({batch}, {heads} or {kv_heads}, {nk}), "
                         f"got key_perm {tuple(key_perm.shape)} {key_perm.dtype}")
    if query_perm is not None and (tuple(query_perm.shape) != (batch, heads, nq) or query_perm.is_floating_point()):
        raise ValueError(f"query_perm must be integer (B, H, Nq) = ({batch}, {heads}, {nq}), "
                         f"got query_perm {tuple(query_perm.shape)} {query_perm.dtype}")


def antidiagonal_block_probs_fused(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: int,
    stride: int,
    scale: float,
    segment_size: int | None = None,
    key_perm: torch.Tensor | None = None,
    query_perm: torch.Tensor | None = None,
    token_causal: bool = True,
    one_pass: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
    block_d: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    num_programs: int | None = None,
) -> torch.Tensor:
    """Strided antidiagonal block probabilities, as ``pbs.scoring.antidiagonal_block_probs`` computes them.

    The allowed tiles are ``causal_blocks(Nq, Nk, block_size)``, minus ``same_segment(..., segment_size)`` when
    ``segment_size`` is given (PBS-Attn+: earlier-segment tiles only). Rows with nothing allowed give zeros.

    Args:
        q: (B, H, Nq, D) fp16/bf16/fp32, the last Nq of Nk positions. k: (B, H_KV, Nk, D), same dtype, H_KV | H.
        block_size, stride, scale: plan block size, antidiagonal stride (power of two <= block_size), softmax scale.
        key_perm: (B, H or H_KV, Nk) integer, permuted slot -> original key index (rows gathered in the kernel).
        query_perm: (B, H, Nq) integer, permuted query slot -> original query row.
        token_causal: also mask reshaped keys after the reshaped query (XAttention); False for PBS-Attn+.
        one_pass: one sweep with a per-worker scratch of num_programs * block_m * T * 4.5 bytes; False: two sweeps
            (row statistics, then tiles) with O(B * H * N / stride) extra memory.
        block_m, block_n, block_d, num_warps, num_stages, num_programs: tuning (defaults per device).

    Returns:
        (B, H, R, T) float32, R = plan rows, T = key blocks (in permuted-slot space with ``key_perm``).

    Raises:
        ValueError: on shapes, dtypes or sizes the computation does not define.
    """
    _check_inputs(q, k, block_size, stride, scale, segment_size, key_perm, query_perm)
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    per_block = block_size // stride
    first = (nk - nq) // block_size
    n_kblocks = num_blocks(nk, block_size)
    n_rblocks = n_kblocks - first
    n_rows_r, n_keys_r = n_rblocks * per_block, -(-nk // stride)
    tiles = _default_tiles(per_block, dim, q.is_cuda)
    bm = max(block_m or tiles["block_m"], per_block)
    bn = max(block_n or tiles["block_n"], per_block)
    bd = min(triton.next_power_of_2(block_d or tiles["block_d"]), max(16, triton.next_power_of_2(dim)))
    d_split = -(-dim // bd)
    n_row_tiles = -(-n_rows_r // bm)
    n_items = batch * heads * n_row_tiles
    if num_programs is None:
        num_programs = _num_sms(q.device) * tiles["programs_per_sm"] if q.is_cuda else 4
    n_prog = max(1, min(n_items, num_programs))
    front = nk - nq - first * block_size
    even = (front == 0 and nk % block_size == 0 and n_rows_r % bm == 0 and n_keys_r % bn == 0
            and dim == bd * d_split)

    out = torch.empty(batch, heads, n_rblocks, n_kblocks, dtype=torch.float32, device=q.device)
    dummy_f = torch.empty(1, dtype=torch.float32, device=q.device)
    dummy_i = torch.zeros(1, 1, 1, dtype=torch.int32, device=q.device)
    kp = key_perm if key_perm is not None else dummy_i
    qp = query_perm if query_perm is not None else dummy_i
    kp = kp if kp.stride(-1) == 1 else kp.contiguous()
    qp = qp if qp.stride(-1) == 1 else qp.contiguous()
    scr_tiles = -(-n_keys_r // bn)
    scr_cols = scr_tiles * (bn // per_block)
    common = dict(
        GROUP=heads // kv_heads, S=stride, PB=per_block, HEAD_DIM=dim, BLOCK_D=bd, D_SPLIT=d_split,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_T=_BLOCK_T,
        HAS_KEY_PERM=key_perm is not None, PERM_PER_Q_HEAD=key_perm is not None and key_perm.shape[1] == heads,
        HAS_QUERY_PERM=query_perm is not None, TOKEN_CAUSAL=bool(token_causal),
        HAS_SEGMENTS=segment_size is not None, EVEN=even,
        # fp32 inputs get exact fp32 dots, not TF32; fp16/bf16 products are exact in the fp32 accumulator
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps or tiles["num_warps"], num_stages=num_stages or tiles["num_stages"],
    )

    def launch(mode, stat_m, stat_l, scr_e, scr_m):
        _antidiag_kernel[(n_prog,)](
            q, k, kp, qp, out, stat_m, stat_l, scr_e, scr_m,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            kp.stride(0), kp.stride(1), qp.stride(0), qp.stride(1),
            nq, nk, front, first, n_rows_r, n_keys_r, n_rblocks, n_kblocks,
            (segment_size or block_size) // block_size,
            scale / stride * _LOG2E, n_items, n_prog, n_row_tiles, batch * heads, heads, scr_cols, scr_tiles,
            MODE=mode, **common,
        )

    if one_pass:
        scr_e = torch.empty(n_prog, bm, scr_cols, dtype=torch.float32, device=q.device)
        scr_m = torch.empty(n_prog, bm, scr_tiles, dtype=torch.float32, device=q.device)
        launch(ONE_PASS.value, dummy_f, dummy_f, scr_e, scr_m)
    else:
        stat_m = torch.empty(batch, heads, n_rows_r, dtype=torch.float32, device=q.device)
        stat_l = torch.empty_like(stat_m)
        launch(STATS.value, stat_m, stat_l, dummy_f, dummy_f)
        launch(TILES.value, stat_m, stat_l, dummy_f, dummy_f)
    return out
