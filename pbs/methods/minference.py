"""MInference vertical-slash (arXiv 2407.02490), estimated for every head from the last queries, as its code selects.

Estimation, per (batch, query head): the last ``last_q`` queries attend causally over all keys (fp32 softmax,
``scale``); column sums give the vertical scores, sums per diagonal offset o = query − key the slash scores. The
first ``num_sink_columns`` columns and the offsets below ``num_local_diagonals`` are forced (+inf); the top
``max(vertical_size, num_sink_columns)`` columns and ``max(slash_size, 50)`` offsets are kept (at most Nk; ties:
lower position / smaller offset first, so offset 0 is always kept).

Layout ``slash_layout="windows"`` (the original's), per plan row = query block of absolute positions
``[a, a + bs)``, ``e = a + bs`` (bs = block_size, 64 in the original):

1. Offsets o < e, in decreasing order, give window ends ``x = max(e − o, bs)`` (non-decreasing). Ranges are
   built in that order: the first x opens the range [x − bs, x); each next x with x > end + bs closes the range
   and opens [x − bs, x); with end < x <= end + bs it extends the range to end + bs (up to bs − 1 keys past x);
   otherwise nothing. Each range [s, t) (t − s a multiple of bs) is listed as the windows s, s + bs, …, t − bs;
   a window covers keys [start, start + bs) ∩ [0, Nk), token-causally masked. Windows starting at or after Nk
   hold no key and are dropped.
2. A kept column is gathered iff it lies in no window and before the last range's end (so only columns left of
   the diagonal range, all visible to the whole row).

Ranges are disjoint and columns lie outside them, so no key is listed twice. This is MInference's
``convert_vertical_slash_indexes`` (``csrc/vertical_slash_index.cu`` ~lines 27–99), called by
``vertical_slash_sparse_attention`` (``minference/ops/pit_sparse_flash_attention_v2.py``) from PBS-Attn's vendored
``pbs_attn/baselines/Minference.py``. With Nq < Nk rows are the absolute blocks holding the queries.

Layout ``slash_layout="aligned"``: each kept offset marks the block diagonals it crosses (⌊o/bs⌋ and, when
o % bs > 0, the next); those aligned tiles are computed and columns outside them gathered. Both layouts list
every key on a kept diagonal; they differ in the keys around them and in tile count (README).

Budget mode (``budget``, a target density; not in the original): aligned ``block_size`` tiles, each scored by
its estimated mass ``V[kb] + S[qb − kb]`` (V: vertical sums per key block, S: slash sums per block of bs offsets,
o // bs), key block 0 and the diagonal forced, per row the top tiles up to ``round(budget · (qb + 1))``.

A head whose estimate is not finite (a NaN or Inf in q or k reached the last queries) keeps every block diagonal
instead (``_offsets``): its windows cover every causal key, so it runs dense and the value reaches the output as
in SDPA; in budget mode its rows take every tile (``pbs.selection``).

``plan`` is the PyTorch reference; ``plan_fused`` builds the same plan with fused estimation and index building.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import MInferenceConfig
from ..plan import SparsePlan, num_blocks
from ..scoring import block_grid, causal_blocks
from ..selection import select_budget
from ..vertical_slash import (
    column_and_diagonal_sums,
    columns_outside_windows,
    last_query_probs,
    offsets_to_diag_blocks,
    slash_block_mask,
    slash_windows,
)
from .registry import NotFused, register_fused, register_method


@register_method("minference", MInferenceConfig)
def plan(q, k, cfg: MInferenceConfig, scale: float) -> SparsePlan:
    nq, nk, bs = q.shape[2], k.shape[2], cfg.block_size
    probs, pos = last_query_probs(q, k, cfg.last_q, scale)
    vertical, slash = column_and_diagonal_sums(probs, pos)  # (B, H, Nk) each
    if cfg.budget is not None:
        qb, kb = block_grid(nq, nk, bs, q.device)
        causal = causal_blocks(nq, nk, bs, q.device)
        forced = causal & ((kb[None, :] == 0) | (kb[None, :] == qb[:, None]))
        selected = select_budget(_tile_scores(vertical, slash, nq, nk, bs), causal, forced, cfg.budget, qb)
        return SparsePlan.from_block_mask(selected | forced, block_size=bs, seq_len_q=nq, seq_len_kv=nk,
                                          num_kv_heads=k.shape[1])
    unrankable = ~torch.isfinite(vertical).all(-1)  # (B, H): a NaN or Inf in q or k reached the estimate
    inf = torch.tensor(float("inf"), device=q.device)
    vertical[..., : cfg.num_sink_columns] = inf
    slash[..., : cfg.num_local_diagonals] = inf
    n_vertical = min(max(cfg.vertical_size, cfg.num_sink_columns), nk)
    columns = _top(vertical, n_vertical).sort(dim=-1).values  # (B, H, V) original key positions, ascending
    offsets = _offsets(slash, cfg, nk, unrankable, widen=bool(unrankable.any()))  # (B, H, S) descending
    if cfg.slash_layout == "aligned":
        return _aligned_plan(columns, offsets, nq, nk, bs, k.shape[1])
    qb, _ = block_grid(nq, nk, bs, q.device)
    starts, valid = slash_windows((qb + 1) * bs, offsets, bs)  # (B, H, R, W)
    valid = valid & (starts < nk)  # only a ragged last row can hold such windows (no key in them)
    col = columns[:, :, None, :].expand(-1, -1, qb.numel(), -1)  # (B, H, R, V)
    return SparsePlan.from_block_mask(
        torch.zeros(*starts.shape[:3], num_blocks(nk, bs), dtype=torch.bool, device=q.device),
        block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1],
        col_indices=col, col_valid=columns_outside_windows(col, starts, valid, bs),
        win_starts=starts, win_valid=valid,
    )


@register_fused("minference")
def plan_fused(q, k, cfg: MInferenceConfig, scale: float) -> SparsePlan:
    if cfg.slash_layout == "aligned" and cfg.budget is None:
        raise NotFused("slash_layout='aligned' has no fused planner")
    from ..kernels.block_select import RowRule
    from ..kernels.planning import plan_from_scores
    from ..kernels.slash_windows import slash_windows_fused
    from ..kernels.vertical_slash import last_query_sums_fused

    nq, nk, bs = q.shape[2], k.shape[2], cfg.block_size
    vertical, slash = last_query_sums_fused(q, k, cfg.last_q, scale)
    if cfg.budget is not None:
        scores = lambda h0, h1: _tile_scores(vertical[:, h0:h1], slash[:, h0:h1], nq, nk, bs)
        return plan_from_scores(
            scores, q=q, num_kv_heads=k.shape[1], seq_len_kv=nk, block_size=bs,
            rule=RowRule(force_sink=True, force_diagonal=True), part_width=1, threshold=1.0, budget=cfg.budget,
            scores_kind="probs",
        )
    unrankable = ~torch.isfinite(vertical).all(-1)
    vertical[..., : cfg.num_sink_columns] = float("inf")
    slash[..., : cfg.num_local_diagonals] = float("inf")
    columns = _top(vertical, min(max(cfg.vertical_size, cfg.num_sink_columns), nk)).sort(dim=-1).values
    offsets = _offsets(slash, cfg, nk, unrankable, widen=True)  # no host sync: always wide enough
    win_num, win_starts, col_num, col_indices = slash_windows_fused(offsets, columns, nq, nk, bs)
    empty_num = torch.zeros_like(win_num)
    empty_idx = torch.zeros(*win_num.shape, 1, dtype=torch.int32, device=q.device)
    return SparsePlan(
        block_size=bs, seq_len_q=nq, seq_len_kv=nk, kv_num_blocks=empty_num, kv_indices=empty_idx,
        full_kv_num_blocks=empty_num.clone(), full_kv_indices=empty_idx.clone(), col_num=col_num,
        col_indices=col_indices, win_num=win_num, win_starts=win_starts, planner="triton",
    )


def _tile_scores(vertical: Tensor, slash: Tensor, nq: int, nk: int, bs: int) -> Tensor:
    """Budget mode's tile scores (B, H, R, T): vertical mass of the key block + slash mass of the block diagonal."""
    nkb = num_blocks(nk, bs)
    pad = nkb * bs - nk
    v_blocks = torch.nn.functional.pad(vertical, (0, pad)).view(*vertical.shape[:-1], nkb, bs).sum(-1)
    s_blocks = torch.nn.functional.pad(slash, (0, pad)).view(*slash.shape[:-1], nkb, bs).sum(-1)
    qb, kb = block_grid(nq, nk, bs, vertical.device)
    diag = (qb[:, None] - kb[None, :]).clamp(min=0)  # (R, T)
    return v_blocks[:, :, None, :] + s_blocks[:, :, diag]


def _offsets(slash: Tensor, cfg: MInferenceConfig, nk: int, unrankable: Tensor, widen: bool) -> Tensor:
    """The kept diagonal offsets (B, H, S), in decreasing order: the top ``max(slash_size, 50)`` (at most Nk).

    A head whose estimate is not finite (``unrankable``, a NaN or Inf in q or k) cannot be ranked: it keeps one
    offset per block diagonal (0, bs, 2·bs, ...), whose windows merge into one range covering every causal key,
    so the head runs dense and the value reaches its output as in SDPA. ``widen``: pad the list to that many
    offsets when the budget is smaller, with offsets past every row's end (never live).
    """
    bs = cfg.block_size
    nkb = num_blocks(nk, bs)
    top = _top(slash, min(max(cfg.slash_size, 50), nk))
    width = max(top.shape[-1], nkb) if widen else top.shape[-1]
    slot = torch.arange(width, device=slash.device)
    dead = nkb * bs + slot  # distinct, beyond every row's end
    top = torch.cat([top, dead[: width - top.shape[-1]].expand(*top.shape[:2], -1)], dim=-1)
    if widen:
        every = torch.where(slot < nkb, slot * bs, dead)
        top = torch.where(unrankable[..., None], every, top)
    return top.sort(dim=-1, descending=True).values


def _top(scores: Tensor, n: int) -> Tensor:
    """Indices of the n highest scores along the last dim (ties: lower index first)."""
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :n]


def _aligned_plan(columns: Tensor, offsets: Tensor, nq: int, nk: int, bs: int, kv_heads: int) -> SparsePlan:
    nkb = num_blocks(nk, bs)
    diag = offsets_to_diag_blocks(offsets, torch.ones_like(offsets, dtype=torch.bool), nkb, bs)
    tiles = slash_block_mask(diag, nq, nk, bs)  # (B, H, R, T)
    qb, _ = block_grid(nq, nk, bs, columns.device)
    row_last_pos = torch.clamp((qb + 1) * bs - 1, max=nk - 1)  # (R,)
    col = columns[:, :, None, :].expand(-1, -1, qb.numel(), -1)  # (B, H, R, V)
    in_tile = torch.gather(tiles, -1, col // bs)
    col_valid = (col <= row_last_pos[:, None]) & ~in_tile
    return SparsePlan.from_block_mask(tiles, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=kv_heads,
                                      col_indices=col, col_valid=col_valid)
