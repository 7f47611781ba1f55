"""The fused planners' common tail: block scores per chunk of heads -> ``select_blocks`` -> a SparsePlan.

Scores are materialised only at block-grid size and only for a chunk of heads at a time (at most
``_SCORE_BYTES``), so a planner's extra memory stays a small fraction of one layer's K/V at 128K. No host
synchronisation: list widths are static (the full list is as wide as the key blocks, the partial list as wide
as the rule allows).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..plan import SparsePlan, num_blocks
from .block_select import RowRule, index_dtype, select_blocks

_SCORE_BYTES = 32 * 2**20  # fp32 block scores held at once (one chunk of heads)


def pooled_logits(pooled_q: Tensor, pooled_k: Tensor, h0: int, h1: int) -> Tensor:
    """Mean-pooled block logits of query heads h0..h1: (B, h, R, T) fp32 = pooled_q · pooled_kᵀ (the softmax scale
    is folded into pooled_q).

    pooled_q: (B, H, R, D); pooled_k: (B, Hk, T, D) with Hk = H (one per query head) or H / G (per KV head,
    shared by the G query heads of its group; chunks are aligned to groups).
    """
    heads, hk = pooled_q.shape[1], pooled_k.shape[1]
    if hk == heads:
        return torch.matmul(pooled_q[:, h0:h1], pooled_k[:, h0:h1].transpose(-1, -2))
    group = heads // hk
    batch, _, rows, dim = pooled_q.shape
    pq = pooled_q[:, h0:h1].reshape(batch, (h1 - h0) // group, group * rows, dim)
    logits = torch.matmul(pq, pooled_k[:, h0 // group : h1 // group].transpose(-1, -2))
    return logits.view(batch, h1 - h0, rows, -1)


def plan_from_scores(
    scores: Callable[[int, int], Tensor] | None,
    *,
    q: Tensor,
    num_kv_heads: int,
    seq_len_kv: int,
    block_size: int,
    rule: RowRule,
    part_width: int,
    threshold: float,
    budget: float | None,
    scores_kind: str,
    key_perm: Tensor | None = None,
    key_bounds: tuple[Tensor, Tensor] | None = None,
    sink: Tensor | None = None,
    query_perm: Tensor | None = None,
    query_bounds: tuple[Tensor, Tensor] | None = None,
    score_bytes: int = _SCORE_BYTES,
) -> SparsePlan:
    """Run ``select_blocks`` over chunks of heads and assemble the plan.

    scores(h0, h1) -> (B, h1 - h0, R, T) block scores (``scores_kind``: see ``select_blocks``) of those
    query heads; None when every candidate is selected (threshold >= 1, no budget). ``score_bytes`` bounds the
    fp32 scores of one chunk of heads (lower it when ``scores`` needs several such buffers).
    """
    batch, heads, nq, _ = q.shape
    nkb = num_blocks(seq_len_kv, block_size)
    rows = nkb - (seq_len_kv - nq) // block_size
    device = q.device
    idx_dtype = index_dtype(nkb)
    full_num = torch.empty(batch, heads, rows, dtype=torch.int32, device=device)  # every row is written
    full_idx = torch.zeros(batch, heads, rows, nkb, dtype=idx_dtype, device=device)
    part_num = torch.empty_like(full_num)
    part_idx = torch.zeros(batch, heads, rows, max(1, min(part_width, nkb)), dtype=idx_dtype, device=device)
    group = heads // num_kv_heads
    per_head = max(1, batch * rows * nkb * 4)
    chunk = max(group, (score_bytes // per_head) // group * group)
    for h0 in range(0, heads, chunk):
        h1 = min(heads, h0 + chunk)
        select_blocks(
            scores(h0, h1) if scores is not None else None,
            (full_num[:, h0:h1], full_idx[:, h0:h1], part_num[:, h0:h1], part_idx[:, h0:h1]),
            rule=rule, seq_len_q=nq, seq_len_kv=seq_len_kv, block_size=block_size, num_heads=heads, head_offset=h0,
            scores_kind=scores_kind, threshold=threshold, budget=budget, key_bounds=key_bounds, sink=sink,
            query_bounds=query_bounds,
        )
    return SparsePlan(
        block_size=block_size, seq_len_q=nq, seq_len_kv=seq_len_kv,
        kv_num_blocks=part_num, kv_indices=part_idx, full_kv_num_blocks=full_num, full_kv_indices=full_idx,
        key_perm=key_perm, query_perm=query_perm, planner="triton",
    )
