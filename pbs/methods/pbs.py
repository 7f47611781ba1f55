"""PBS-Attn (arXiv 2510.21270): segmented key permutation, then block-sparse selection on permuted keys.

Steps (§3, App. D.1): key importance from the last query block → keys sorted inside each segment → block
scores over earlier-segment causal tiles only (mean-pooled, or antidiagonal for PBS-Attn+) → per row the
smallest set of tiles reaching ``threshold`` (or, with ``budget``, the top tiles up to that density) → plus the
sink block and the whole diagonal segment, whose causality the kernel enforces per token on original positions.

``plan`` is the PyTorch reference; ``plan_fused`` builds the same plan with Triton kernels (key permutation
and selection fused, no host synchronisation).
"""

from __future__ import annotations

from ..config import PBSConfig
from ..permutation import key_permutation, query_permutation
from ..plan import SparsePlan, num_blocks, tile_visibility
from ..scoring import (
    antidiagonal_block_probs,
    block_grid,
    causal_blocks,
    mean_pooled_block_probs,
    same_segment,
)
from ..selection import select_budget, select_cumulative, sink_blocks
from .registry import Dense, register_fused, register_method


def _too_short(nk: int, cfg: PBSConfig) -> Dense | None:
    if nk <= cfg.segment_size:
        return Dense(f"seq_len_kv={nk} <= segment_size={cfg.segment_size}: a single segment is computed densely")
    return None


@register_method("pbs", PBSConfig)
def plan(q, k, cfg: PBSConfig, scale: float) -> SparsePlan | Dense:
    batch, heads, nq, _ = q.shape
    nk = k.shape[2]
    if short := _too_short(nk, cfg):
        return short
    bs = cfg.block_size
    key_perm = query_perm = None
    if cfg.permute in ("key", "key+query"):
        key_perm = key_permutation(q, k, bs, cfg.segment_size, scale, cfg.share_permutation)
    if cfg.permute in ("query", "key+query"):
        query_perm = query_permutation(q, k, key_perm, bs, cfg.segment_size)

    causal = causal_blocks(nq, nk, bs, q.device)
    diagonal_segment = same_segment(nq, nk, bs, cfg.segment_size, q.device)
    off_diagonal = causal & ~diagonal_segment  # the tiles whose mass the threshold budgets
    forced = diagonal_segment.expand(batch, heads, *causal.shape)
    if cfg.force_sink:
        forced = forced | sink_blocks(key_perm, causal.shape[0], num_blocks(nk, bs), heads, batch, bs, q.device)
    if cfg.budget is None and cfg.threshold >= 1:
        selected = off_diagonal.expand(batch, heads, *off_diagonal.shape)
    else:
        if cfg.scoring == "mean":
            probs = mean_pooled_block_probs(q, k, off_diagonal, bs, scale, key_perm, query_perm)
        else:
            probs = antidiagonal_block_probs(
                q, k, off_diagonal, bs, cfg.stride, scale, key_perm, query_perm, token_causal=False
            )
        if cfg.budget is not None:
            visible, _ = tile_visibility(key_perm, query_perm, batch, heads, k.shape[1], nq, nk, bs, q.device)
            selected = select_budget(probs, off_diagonal, forced & visible, cfg.budget, block_grid(nq, nk, bs, q.device)[0])
        else:
            selected = select_cumulative(probs, off_diagonal, cfg.threshold)
    return SparsePlan.from_block_mask(
        selected | forced,
        block_size=bs,
        seq_len_q=nq,
        seq_len_kv=nk,
        num_kv_heads=k.shape[1],
        key_perm=key_perm,
        query_perm=query_perm,
    )


@register_fused("pbs")
def plan_fused(q, k, cfg: PBSConfig, scale: float) -> SparsePlan | Dense:
    nk = k.shape[2]
    if short := _too_short(nk, cfg):
        return short
    from ..kernels.block_means import block_means_fused
    from ..kernels.block_select import RowRule
    from ..kernels.key_permutation import key_permutation_fused
    from ..kernels.planning import plan_from_scores, pooled_logits
    from ..kernels.query_permutation import query_permutation_fused

    bs = cfg.block_size
    key_perm = key_bounds = sink = query_perm = query_bounds = None
    if cfg.permute in ("key", "key+query"):
        key_perm, pooled_k, kmin, kmax, sink = key_permutation_fused(
            q, k, bs, cfg.segment_size, scale, cfg.share_permutation
        )
        key_bounds = (kmin, kmax)
    else:
        pooled_k = block_means_fused(k, bs)  # (B, Hkv, T, D)
    scores = None
    if cfg.permute in ("query", "key+query"):
        query_perm, pooled_q, qmin, qmax = query_permutation_fused(q, pooled_k, nk, bs, cfg.segment_size, scale)
        query_bounds = (qmin, qmax)
    elif (cfg.budget is not None or cfg.threshold < 1) and cfg.scoring == "mean":
        pooled_q = block_means_fused(q, bs, front=(nk - q.shape[2]) % bs, scale=scale)  # scale folded in
    if (cfg.budget is not None or cfg.threshold < 1) and cfg.scoring == "antidiagonal":
        from ..kernels.antidiagonal import antidiagonal_block_probs_fused

        group = q.shape[1] // k.shape[1]

        def scores(h0, h1):  # PBS-Attn+: XAttention's estimation on the permuted keys, off the diagonal segment
            perm = None if key_perm is None else key_perm[:, h0:h1] if key_perm.shape[1] == q.shape[1] \
                else key_perm[:, h0 // group : h1 // group]
            return antidiagonal_block_probs_fused(
                q[:, h0:h1], k[:, h0 // group : h1 // group], block_size=bs, stride=cfg.stride, scale=scale,
                segment_size=cfg.segment_size, key_perm=perm,
                query_perm=None if query_perm is None else query_perm[:, h0:h1], token_causal=False,
            )
    elif cfg.budget is not None or cfg.threshold < 1:
        scores = lambda h0, h1: pooled_logits(pooled_q, pooled_k, h0, h1)
    rule = RowRule(exclude_segment=cfg.segment_size // bs, force_sink=cfg.force_sink)
    return plan_from_scores(
        scores, q=q, num_kv_heads=k.shape[1], seq_len_kv=nk, block_size=bs, rule=rule,
        part_width=cfg.segment_size // bs, threshold=cfg.threshold, budget=cfg.budget,
        key_perm=key_perm, key_bounds=key_bounds, sink=sink, query_perm=query_perm, query_bounds=query_bounds,
        scores_kind="probs" if cfg.scoring == "antidiagonal" else "logits",
    )
