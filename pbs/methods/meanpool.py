"""MeanPooling baseline: mean-pooled block scores over all causal tiles, no permutation (the paper's §4.1)."""

from __future__ import annotations

from ..config import MeanPoolConfig
from ..plan import SparsePlan
from ..scoring import causal_blocks, mean_pooled_block_probs
from ..selection import select_cumulative
from .registry import register_method


@register_method("meanpool", MeanPoolConfig)
def plan(q, k, cfg: MeanPoolConfig, scale: float) -> SparsePlan:
    nq, nk, bs = q.shape[2], k.shape[2], cfg.block_size
    causal = causal_blocks(nq, nk, bs, q.device)
    probs = mean_pooled_block_probs(q, k, causal, bs, scale)
    selected = select_cumulative(probs, causal, cfg.threshold)
    if cfg.force_sink:
        selected[..., 0] = True
    if cfg.force_current:
        selected = selected | _diagonal(causal)
    return SparsePlan.from_block_mask(selected, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1])


def _diagonal(causal):
    """(R, T) bool: the last causal tile of each row (the query block's own key block)."""
    last = causal.sum(-1) - 1
    return causal & (causal.cumsum(-1) - 1 == last[:, None])
