"""PBS-Attn (arXiv 2510.21270): segmented key permutation, then block-sparse selection on permuted keys.

Steps (§3, App. D.1): key importance from the last query block → keys sorted inside each segment → block
scores over earlier-segment causal tiles only (mean-pooled, or antidiagonal for PBS-Attn+) → per row the
smallest set of tiles reaching ``threshold`` → plus the sink block and the whole diagonal segment, whose
causality the kernel enforces per token on original positions.
"""

from __future__ import annotations

from ..config import PBSConfig
from ..permutation import key_permutation, query_permutation
from ..plan import SparsePlan, num_blocks
from ..scoring import antidiagonal_block_probs, causal_blocks, mean_pooled_block_probs, same_segment
from ..selection import select_cumulative, sink_blocks
from .registry import Dense, register_method


@register_method("pbs", PBSConfig)
def plan(q, k, cfg: PBSConfig, scale: float) -> SparsePlan | Dense:
    batch, heads, nq, _ = q.shape
    nk = k.shape[2]
    if nk <= cfg.segment_size:
        return Dense(f"seq_len_kv={nk} <= segment_size={cfg.segment_size}: a single segment is computed densely")
    bs = cfg.block_size
    key_perm = query_perm = None
    if cfg.permute in ("key", "key+query"):
        key_perm = key_permutation(q, k, bs, cfg.segment_size, scale, cfg.share_permutation)
    if cfg.permute in ("query", "key+query"):
        query_perm = query_permutation(q, k, key_perm, bs, cfg.segment_size)

    causal = causal_blocks(nq, nk, bs, q.device)
    diagonal_segment = same_segment(nq, nk, bs, cfg.segment_size, q.device)
    off_diagonal = causal & ~diagonal_segment  # the tiles whose mass the threshold budgets
    if cfg.threshold >= 1:
        selected = off_diagonal.expand(batch, heads, *off_diagonal.shape)
    elif cfg.scoring == "mean":
        probs = mean_pooled_block_probs(q, k, off_diagonal, bs, scale, key_perm, query_perm)
        selected = select_cumulative(probs, off_diagonal, cfg.threshold)
    else:
        probs = antidiagonal_block_probs(
            q, k, off_diagonal, bs, cfg.stride, scale, key_perm, query_perm, token_causal=False
        )
        selected = select_cumulative(probs, off_diagonal, cfg.threshold)

    selected = selected | diagonal_segment
    if cfg.force_sink:
        selected = selected | sink_blocks(key_perm, selected.shape[2], num_blocks(nk, bs), heads, batch, bs, q.device)
    return SparsePlan.from_block_mask(
        selected,
        block_size=bs,
        seq_len_q=nq,
        seq_len_kv=nk,
        num_kv_heads=k.shape[1],
        key_perm=key_perm,
        query_perm=query_perm,
    )
