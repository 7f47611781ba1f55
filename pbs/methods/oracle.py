"""Oracle: PBS's structure with exact block scores — tiles chosen by the true attention mass.

Exact softmax mass per tile (averaged over each query block), over the earlier-segment causal tiles, with
the same threshold rule, diagonal segment and sink as ``pbs``; ``permute="key"`` uses PBS's key permutation.
The upper bound of the paper's analyses (Fig. 1, Tables 4–5). O(N²) work: meant for modest N.
"""

from __future__ import annotations

from ..config import OracleConfig
from ..permutation import key_permutation
from ..plan import SparsePlan, num_blocks, tile_visibility
from ..scoring import block_grid, causal_blocks, exact_block_mass, same_segment
from ..selection import select_budget, select_cumulative, sink_blocks
from .registry import register_method


@register_method("oracle", OracleConfig)
def plan(q, k, cfg: OracleConfig, scale: float) -> SparsePlan:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    key_perm = None
    if cfg.permute == "key" and nk > cfg.segment_size:
        key_perm = key_permutation(q, k, bs, cfg.segment_size, scale)
    diagonal_segment = same_segment(nq, nk, bs, cfg.segment_size, q.device)
    off_diagonal = causal_blocks(nq, nk, bs, q.device) & ~diagonal_segment
    forced = diagonal_segment | sink_blocks(key_perm, off_diagonal.shape[0], num_blocks(nk, bs), heads, batch, bs,
                                            q.device)
    if cfg.budget is None and cfg.threshold >= 1:
        selected = off_diagonal.expand(batch, heads, *off_diagonal.shape)
    else:
        mass = exact_block_mass(q, k, off_diagonal, bs, scale, key_perm)
        if cfg.budget is not None:
            visible, _ = tile_visibility(key_perm, None, batch, heads, k.shape[1], nq, nk, bs, q.device)
            selected = select_budget(mass, off_diagonal, forced & visible, cfg.budget, block_grid(nq, nk, bs, q.device)[0])
        else:
            selected = select_cumulative(mass, off_diagonal, cfg.threshold)
    return SparsePlan.from_block_mask(
        selected | forced, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1], key_perm=key_perm
    )
