"""MInference vertical-slash (arXiv 2407.02490), estimated for every head from the last queries.

As the original kernel computes it: slashes become 64-wide key blocks per 64-row query block, and vertical
columns not already inside those blocks are gathered individually. [Note] The original places slash blocks
at unaligned offsets; ours are aligned key blocks, which may add up to one extra tile per slash range (more
keys computed, none dropped).
"""

from __future__ import annotations

import torch

from ..config import MInferenceConfig
from ..plan import SparsePlan, num_blocks
from ..scoring import block_grid
from ..vertical_slash import column_and_diagonal_sums, last_query_probs, offsets_to_diag_blocks, slash_block_mask
from .registry import register_method


@register_method("minference", MInferenceConfig)
def plan(q, k, cfg: MInferenceConfig, scale: float) -> SparsePlan:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    nkb = num_blocks(nk, bs)
    probs, pos = last_query_probs(q, k, cfg.last_q, scale)
    vertical, slash = column_and_diagonal_sums(probs, pos)  # (B, H, Nk) each
    inf = torch.tensor(float("inf"), device=q.device)
    vertical[..., : cfg.num_sink_columns] = inf
    slash[..., : cfg.num_local_diagonals] = inf
    n_vertical = min(max(cfg.vertical_size, cfg.num_sink_columns), nk)
    n_slash = min(max(cfg.slash_size, 50), nk)
    columns = torch.topk(vertical, n_vertical, dim=-1).indices  # (B, H, V) original key positions
    offsets = torch.topk(slash, n_slash, dim=-1).indices  # (B, H, S) diagonal offsets

    diag = offsets_to_diag_blocks(offsets, torch.ones_like(offsets, dtype=torch.bool), nkb, bs)
    tiles = slash_block_mask(diag, nq, nk, bs)  # (B, H, R, T)

    qb, _ = block_grid(nq, nk, bs, q.device)
    row_last_pos = torch.clamp((qb + 1) * bs - 1, max=nk - 1)  # (R,)
    col = columns[:, :, None, :].expand(-1, -1, qb.numel(), -1)  # (B, H, R, V)
    in_tile = torch.gather(tiles, -1, col // bs)
    col_valid = (col <= row_last_pos[:, None]) & ~in_tile
    return SparsePlan.from_block_mask(
        tiles,
        block_size=bs,
        seq_len_q=nq,
        seq_len_kv=nk,
        num_kv_heads=k.shape[1],
        col_indices=col,
        col_valid=col_valid,
    )
