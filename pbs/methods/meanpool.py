"""MeanPooling baseline: mean-pooled block scores over all causal tiles, no permutation (the paper's §4.1).

``plan`` is the PyTorch reference; ``plan_fused`` builds the same plan with the fused selection kernel.
"""

from __future__ import annotations

from ..config import MeanPoolConfig
from ..plan import SparsePlan
from ..scoring import block_grid, causal_blocks, mean_pooled_block_probs
from ..selection import select_budget, select_cumulative
from .registry import register_fused, register_method


@register_method("meanpool", MeanPoolConfig)
def plan(q, k, cfg: MeanPoolConfig, scale: float) -> SparsePlan:
    nq, nk, bs = q.shape[2], k.shape[2], cfg.block_size
    causal = causal_blocks(nq, nk, bs, q.device)
    forced = causal.new_zeros(causal.shape)
    if cfg.force_sink:
        forced[:, 0] = True
    if cfg.force_current:
        forced = forced | _diagonal(causal)
    probs = mean_pooled_block_probs(q, k, causal, bs, scale)
    if cfg.budget is not None:
        selected = select_budget(probs, causal, forced, cfg.budget, block_grid(nq, nk, bs, q.device)[0])
    else:
        selected = select_cumulative(probs, causal, cfg.threshold)
    return SparsePlan.from_block_mask(
        selected | forced, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1]
    )


@register_fused("meanpool")
def plan_fused(q, k, cfg: MeanPoolConfig, scale: float) -> SparsePlan:
    from ..kernels.block_means import block_means_fused
    from ..kernels.block_select import RowRule
    from ..kernels.planning import plan_from_scores, pooled_logits

    nk, bs = k.shape[2], cfg.block_size
    scores = None
    if cfg.budget is not None or cfg.threshold < 1:
        pooled_q = block_means_fused(q, bs, front=(nk - q.shape[2]) % bs, scale=scale)  # scale folded in
        pooled_k = block_means_fused(k, bs)
        scores = lambda h0, h1: pooled_logits(pooled_q, pooled_k, h0, h1)
    rule = RowRule(force_sink=cfg.force_sink, force_diagonal=cfg.force_current)
    return plan_from_scores(
        scores, q=q, num_kv_heads=k.shape[1], seq_len_kv=nk, block_size=bs, rule=rule, part_width=1,
        threshold=cfg.threshold, budget=cfg.budget, scores_kind="logits",
    )


def _diagonal(causal):
    """(R, T) bool: the last causal tile of each row (the query block's own key block)."""
    last = causal.sum(-1) - 1
    return causal & (causal.cumsum(-1) - 1 == last[:, None])
