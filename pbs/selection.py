"""Block selection: cumulative-mass (top-p) choice per query-block row, and the tiles methods force on.

Non-finite scores (a NaN or Inf in q or k that the row sees) cannot be ranked: such a row takes every candidate,
so the value reaches the row's output as it does in SDPA (never dropped, never turned into zeros).
"""

from __future__ import annotations

import torch
from torch import Tensor


def select_cumulative(probs: Tensor, candidates: Tensor, threshold: float, credit: Tensor | None = None) -> Tensor:
    """Smallest set of candidate tiles per row whose mass reaches ``threshold``, the crossing tile included.

    probs: (..., T) block probabilities; candidates: bool, broadcastable to probs; credit: (...,) mass already
    covered by forced tiles (counts toward the threshold). Tiles are taken in decreasing order while the mass
    taken before them is below the threshold; zero-mass tiles are never taken, so a row with no mass selects
    nothing. ``threshold >= 1`` selects every candidate, and so does a row with a non-finite candidate score.
    Returns bool of probs' shape.
    """
    candidates = candidates.expand_as(probs)
    if threshold >= 1:
        return candidates.clone()
    unrankable = unrankable_rows(probs, candidates)
    p = probs.float().masked_fill(~candidates | unrankable, 0.0)
    ordered, order = torch.sort(p, dim=-1, descending=True, stable=True)
    before = torch.cumsum(ordered, dim=-1) - ordered
    if credit is not None:
        before = before + credit[..., None]
    keep = (before < threshold) & (ordered > 0)
    return torch.zeros_like(candidates).scatter(-1, order, keep) | (candidates & unrankable)


def select_budget(scores: Tensor, candidates: Tensor, forced: Tensor, budget: float, row_blocks: Tensor) -> Tensor:
    """Budget selection: per row the top candidate tiles by score, up to ``round(budget * (qb + 1))`` tiles with
    the forced ones counted first (``qb + 1`` = the row's causal tiles, the paper's density denominator).

    scores: (B, H, R, T) block scores; candidates, forced: bool broadcastable to scores (``forced`` = the forced
    tiles that will be listed); row_blocks: (R,) absolute query block of each row. Ties go to the lower key block;
    a row with a non-finite candidate score takes every candidate. Returns the selected candidates (forced tiles
    not included), bool.
    """
    candidates, forced = candidates.expand_as(scores), forced.expand_as(scores)
    want = torch.floor(budget * (row_blocks.double() + 1) + 0.5).long()  # (R,)
    extra = (want[:, None] - forced.sum(-1, keepdim=True)).clamp(min=0)  # (B, H, R, 1)
    free = candidates & ~forced
    unrankable = unrankable_rows(scores, candidates)
    p = scores.float().masked_fill(~free | unrankable, -1.0)
    order = torch.sort(p, dim=-1, descending=True, stable=True).indices
    rank = torch.arange(p.shape[-1], device=p.device)
    keep = rank < extra
    return (torch.zeros_like(free).scatter(-1, order, keep) | unrankable) & free


def unrankable_rows(scores: Tensor, candidates: Tensor) -> Tensor:
    """(..., 1) bool: rows whose candidate scores are not all finite (a NaN or Inf in q or k): they take every
    candidate."""
    return (candidates & ~torch.isfinite(scores)).any(-1, keepdim=True)


def sink_blocks(key_perm: Tensor | None, rows: int, num_kv_blocks: int, heads: int, batch: int, block_size: int,
                device=None) -> Tensor:
    """(B, H, R, T) bool: the key block holding original token 0, in every row."""
    out = torch.zeros(batch, heads, rows, num_kv_blocks, dtype=torch.bool, device=device)
    if key_perm is None:
        out[..., 0] = True
        return out
    slot_of_zero = torch.argmax((key_perm == 0).to(torch.int8), dim=-1)  # (B, Hp)
    block = (slot_of_zero // block_size).repeat_interleave(heads // key_perm.shape[1], dim=1)
    out.scatter_(-1, block[:, :, None, None].expand(batch, heads, rows, 1), True)
    return out
