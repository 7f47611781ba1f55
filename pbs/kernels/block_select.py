"""Block selection on the GPU: block scores of one plan row -> the plan's full / partial index lists, in one launch.

The fused counterpart of ``pbs.selection.select_cumulative`` + the forced tiles + ``SparsePlan.from_block_mask``:
one program per (b, head, plan row) reads the row's scores (logits, softmaxed here over the candidate tiles, or
probabilities), selects, adds the forced tiles, drops tiles no query of the row can see and writes the survivors
as ascending key-block lists split into full tiles (no mask) and partial tiles (token causal mask). No host
synchronisation: the lists are allocated at their worst-case width.

Selection rules (same as the torch reference, ties broken by the lower key-block index):
* threshold: tiles in decreasing score order while the mass taken before them (plus ``credit``) is below the
  threshold; zero-mass tiles are never taken; ``threshold >= 1`` takes every candidate.
* a row with a non-finite score (a NaN or Inf in q or k) takes every candidate (``pbs.selection``).
* budget: per row, the forced tiles plus the top candidates by score up to ``round(budget * (qb + 1))`` tiles,
  ``qb + 1`` being the row's causal tiles (the paper's density denominator).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor


@dataclass(frozen=True)
class RowRule:
    """Which tiles of a row are candidates and which are forced (constexpr flags of the kernel).

    exclude_segment: blocks per segment whose diagonal segment is forced and not a candidate (PBS), 0 = none.
    force_sink: the key block holding original token 0; force_diagonal: the row's own key block.
    credit: XAttention's rule (``pbs.methods.xattention``): sink and diagonal forced, their mass credited toward the
    threshold (the sink's not in rows with qb < lag_blocks, which take one tile more), sums in fp64.
    """

    exclude_segment: int = 0
    force_sink: bool = False
    force_diagonal: bool = False
    credit: bool = False
    lag_blocks: int = 0


@triton.jit
def _select_kernel(
    SCORES, KMIN, KMAX, SINK, QMIN, QMAX, FULL_NUM, FULL_IDX, PART_NUM, PART_IDX,
    stride_sb, stride_sh, stride_sr,
    stride_kb, stride_kh, stride_zb, stride_qb, stride_qh,
    stride_fnb, stride_fnh, stride_fib, stride_fih, stride_fir,
    stride_pnb, stride_pnh, stride_pib, stride_pih, stride_pir,
    seq_len_kv, q_offset, first_q_block, num_kv_blocks, head_offset, row_offset, threshold, budget, lag_blocks,
    H: tl.constexpr, HEADS_PER_PERM: tl.constexpr, T_PAD: tl.constexpr, BS: tl.constexpr,
    EXCLUDE_SEGMENT: tl.constexpr, FORCE_SINK: tl.constexpr, FORCE_DIAGONAL: tl.constexpr, CREDIT: tl.constexpr,
    IS_LOGITS: tl.constexpr, IS_MASK: tl.constexpr, SELECT_ALL: tl.constexpr, USE_BUDGET: tl.constexpr,
    HAS_KEY_PERM: tl.constexpr, HAS_QUERY_PERM: tl.constexpr, PART_WIDTH: tl.constexpr,
):
    row = row_offset + tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H  # head within the chunk
    hg = head_offset + h  # head in the whole tensor (for permutation-head lookups)
    qb = first_q_block + row
    kb = tl.arange(0, T_PAD)
    in_range = kb < num_kv_blocks
    causal = in_range & (kb <= qb)

    # -- candidates and forced tiles --
    if CREDIT:  # XAttention: sink and diagonal forced, their mass credited (the sink not in lagged rows)
        lagged = qb < lag_blocks
        forced = in_range & ((kb == qb) | (kb == 0))
        credited = in_range & ((kb == qb) | ((kb == 0) & ~lagged))
        cand = causal & ~credited
    elif EXCLUDE_SEGMENT > 0:
        forced = in_range & ((kb // EXCLUDE_SEGMENT) == (qb // EXCLUDE_SEGMENT))
        cand = causal & ~forced
    else:
        forced = kb < 0
        cand = causal
    if FORCE_DIAGONAL:
        forced = forced | (kb == qb)
    hp = hg // HEADS_PER_PERM
    if FORCE_SINK:
        if HAS_KEY_PERM:
            sink = tl.load(SINK + b.to(tl.int64) * stride_zb + hp)
        else:
            sink = 0
        forced = forced | (kb == sink)

    # -- which tiles the row's queries can see, and which need no mask (original positions) --
    if HAS_KEY_PERM:
        kb_ptr = b.to(tl.int64) * stride_kb + hp * stride_kh + kb
        kmin = tl.load(KMIN + kb_ptr, mask=in_range, other=0)
        kmax = tl.load(KMAX + kb_ptr, mask=in_range, other=0)
    else:
        kmin = kb * BS
        kmax = tl.minimum(kb * BS + BS - 1, seq_len_kv - 1)
    if HAS_QUERY_PERM:
        q_ptr = b.to(tl.int64) * stride_qb + hg * stride_qh + row
        qmin = tl.load(QMIN + q_ptr)
        qmax = tl.load(QMAX + q_ptr)
    else:
        qmin = tl.maximum(qb * BS, q_offset)
        qmax = tl.minimum(qb * BS + BS - 1, seq_len_kv - 1)
    visible = in_range & (kmin <= qmax)
    full = kmax <= qmin

    # -- selection --
    if SELECT_ALL:
        sel = cand
    elif IS_MASK:  # the scores are a selection already (nonzero = selected)
        s = tl.load(SCORES + b.to(tl.int64) * stride_sb + h * stride_sh + row * stride_sr + kb, mask=cand, other=0.0)
        sel = cand & (s != 0)
    else:
        s = tl.load(SCORES + b.to(tl.int64) * stride_sb + h * stride_sh + row * stride_sr + kb, mask=causal,
                    other=0.0).to(tl.float32)
        if CREDIT:
            # a NaN or Inf score (from q or k) makes the row unrankable: it takes every candidate (as the reference)
            unrankable = tl.sum((causal & ~(tl.abs(s) < float("inf"))).to(tl.int32), 0) > 0
            s = tl.where(s == s, s, 0.0)  # noqa: PLR0124  (NaN -> 0: no isnan in triton.language)
            credit = tl.sum(tl.where(credited & causal, s, 0.0).to(tl.float64), 0)
        if IS_LOGITS:
            x = tl.where(cand, s, float("-inf"))
            x_max = tl.max(x, 0)
            e = tl.exp(x - tl.where(x_max == float("-inf"), 0.0, x_max))
            p = e / tl.sum(e, 0)
        else:
            p = tl.where(cand, s, 0.0)
        if not CREDIT:
            unrankable = tl.sum((cand & ~(tl.abs(p) < float("inf"))).to(tl.int32), 0) > 0
        p = tl.where(cand & (p == p) & ~unrankable, p, 0.0)  # noqa: PLR0124  (NaN test)
        # rank by descending score, ties by ascending index: sort the scores (fp32), find the value v of the last
        # tile taken, then take every tile above v and the first tiles equal to v in index order
        if USE_BUDGET:
            listed_forced = tl.sum((forced & visible).to(tl.int32), 0)
            want = tl.floor(budget * (qb + 1) + 0.5).to(tl.int32)
            n_take = tl.maximum(want - listed_forced, 0)
            pool = cand & ~forced
            ranked = tl.where(pool, p, -1.0)
            ordered = tl.sort(ranked, descending=True)
            v = tl.sum(tl.where(kb == n_take - 1, ordered, 0.0), 0)
            v = tl.where(n_take > tl.sum(pool.to(tl.int32), 0), -1.0, v)
        else:
            pool = cand
            ranked = p
            ordered = tl.sort(ranked, descending=True)
            if CREDIT:  # sums in fp64, as the reference; lagged rows take one tile more (the original's layout)
                ordered64 = ordered.to(tl.float64)
                before64 = tl.cumsum(ordered64, 0) - ordered64 + credit
                keep = (before64 < threshold) & (ordered > 0)
                n_take = tl.sum(keep.to(tl.int32), 0)
                n_take = tl.where(lagged, tl.minimum(n_take + 1, tl.sum((ordered > 0).to(tl.int32), 0)), n_take)
            else:
                before = tl.cumsum(ordered, 0) - ordered
                keep = (before < threshold) & (ordered > 0)
                n_take = tl.sum(keep.to(tl.int32), 0)
            v = tl.sum(tl.where(kb == n_take - 1, ordered, 0.0), 0)
        above = pool & (ranked > v)
        ties = pool & (ranked == v)
        tie_rank = tl.cumsum(ties.to(tl.int32), 0)
        sel = (above | (ties & (tie_rank <= n_take - tl.sum(above.to(tl.int32), 0)))) & (n_take > 0)
        sel = sel | (cand & unrankable)

    final = ((sel | forced) & visible).to(tl.int32)  # [Note] int32 round trip: the interpreter's int1 '&' can
    full_sel = (final * full.to(tl.int32)) != 0        # yield a non-bool store mask
    part_sel = (final * (1 - full.to(tl.int32))) != 0
    base_b = b.to(tl.int64)
    pos = tl.cumsum(full_sel.to(tl.int32), 0) - 1
    tl.store(FULL_IDX + base_b * stride_fib + h * stride_fih + row * stride_fir + pos,
             kb.to(FULL_IDX.dtype.element_ty), mask=full_sel)
    tl.store(FULL_NUM + base_b * stride_fnb + h * stride_fnh + row, tl.sum(full_sel.to(tl.int32), 0))
    pos = tl.cumsum(part_sel.to(tl.int32), 0) - 1
    tl.store(PART_IDX + base_b * stride_pib + h * stride_pih + row * stride_pir + pos,
             kb.to(PART_IDX.dtype.element_ty), mask=part_sel & (pos < PART_WIDTH))
    tl.store(PART_NUM + base_b * stride_pnb + h * stride_pnh + row, tl.sum(part_sel.to(tl.int32), 0))


def index_dtype(num_kv_blocks: int) -> torch.dtype:
    """int16 key-block indices while they fit (half the bytes of a (B, H, R, T) list), else int32."""
    return torch.int16 if num_kv_blocks <= torch.iinfo(torch.int16).max else torch.int32


def select_blocks(
    scores: Tensor | None,
    out: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    rule: RowRule,
    seq_len_q: int,
    seq_len_kv: int,
    block_size: int,
    num_heads: int,
    head_offset: int = 0,
    scores_kind: str = "logits",
    threshold: float = 0.9,
    budget: float | None = None,
    key_bounds: tuple[Tensor, Tensor] | None = None,
    sink: Tensor | None = None,
    query_bounds: tuple[Tensor, Tensor] | None = None,
) -> None:
    """Select the tiles of a chunk of heads and write them into ``out`` = (full_num, full_idx, part_num, part_idx).

    scores: (B, h, R, T) block scores of ``scores_kind`` "logits" (softmaxed over the candidates here), "probs"
    or "mask" (nonzero = selected; no threshold, no forced tiles) for heads ``head_offset ..
    head_offset + h`` of ``num_heads`` query heads (None when ``threshold >= 1``); out tensors are views of the
    plan's (B, h, R, ...) lists.
    key_bounds: (kmin, kmax) (B, Hp, T) int32 original-position bounds of permuted key blocks (None = natural
    order), with ``sink`` (B, Hp) int32 the block of key 0; query_bounds: (qmin, qmax) (B, H, R) for permuted
    queries. A partial list narrower than a row's partial tiles would drop tiles: callers size it by the rule.
    """
    full_num, full_idx, part_num, part_idx = out
    if scores_kind not in ("logits", "probs", "mask"):
        raise ValueError(f"scores_kind must be 'logits', 'probs' or 'mask', got scores_kind={scores_kind!r}")
    batch, heads, rows = full_num.shape
    nkb = -(-seq_len_kv // block_size)
    select_all = budget is None and threshold >= 1 and scores_kind != "mask"
    if scores is None and not select_all:
        raise ValueError("select_blocks needs scores unless threshold >= 1")
    dummy = torch.zeros(1, 1, 1, dtype=torch.int32, device=full_num.device)
    sc = scores if scores is not None else dummy.float()
    kmin, kmax = key_bounds if key_bounds is not None else (dummy, dummy)
    sink_t = sink if sink is not None else dummy[0]
    qmin, qmax = query_bounds if query_bounds is not None else (dummy, dummy)
    heads_per_perm = num_heads // kmin.shape[1] if key_bounds is not None else 1
    first = (seq_len_kv - seq_len_q) // block_size
    for r0, r1 in _row_groups(rows, first, nkb, rule.exclude_segment):
        # the last key block any row of the group can list: its causal end, or its diagonal segment's end
        last_qb = first + r1 - 1
        last_kb = last_qb if rule.exclude_segment == 0 else (last_qb // rule.exclude_segment + 1) * rule.exclude_segment - 1
        t_pad = max(16, triton.next_power_of_2(min(nkb, last_kb + 1)))
        _select_kernel[(r1 - r0, batch * heads)](
            sc, kmin, kmax, sink_t, qmin, qmax, full_num, full_idx, part_num, part_idx,
            sc.stride(0), sc.stride(1), sc.stride(2),
            kmin.stride(0), kmin.stride(1), sink_t.stride(0), qmin.stride(0), qmin.stride(1),
            full_num.stride(0), full_num.stride(1), full_idx.stride(0), full_idx.stride(1), full_idx.stride(2),
            part_num.stride(0), part_num.stride(1), part_idx.stride(0), part_idx.stride(1), part_idx.stride(2),
            seq_len_kv, seq_len_kv - seq_len_q, first, nkb, head_offset, r0,
            float(min(threshold, 1.0)), float(budget or 0.0), rule.lag_blocks,
            H=heads, HEADS_PER_PERM=heads_per_perm, T_PAD=t_pad, BS=block_size,
            EXCLUDE_SEGMENT=rule.exclude_segment, FORCE_SINK=rule.force_sink, FORCE_DIAGONAL=rule.force_diagonal,
            CREDIT=rule.credit, IS_LOGITS=scores_kind == "logits",
            IS_MASK=scores_kind == "mask", SELECT_ALL=select_all, USE_BUDGET=budget is not None,
            HAS_KEY_PERM=key_bounds is not None, HAS_QUERY_PERM=query_bounds is not None,
            PART_WIDTH=part_idx.shape[-1], num_warps=_SELECT_WARPS,
        )


_SELECT_WARPS = 4
_MIN_GROUP_BLOCKS = 256  # below this many key blocks one launch is cheaper than sorting shorter rows


def _row_groups(rows: int, first: int, nkb: int, segment_blocks: int) -> list[tuple[int, int]]:
    """Plan rows split so each group's rows span at most twice the key blocks of its shortest row.

    Early rows have few causal tiles; sorting them at the full row width wastes work (~35% of it at 4 groups).
    """
    if nkb < _MIN_GROUP_BLOCKS:
        return [(0, rows)]
    bounds, end = [], nkb
    while end > _MIN_GROUP_BLOCKS // 2 and len(bounds) < 3:
        end //= 2
        bounds.append(end)
    cuts = sorted({min(max(b - first, 0), rows) for b in bounds} | {0, rows})
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
