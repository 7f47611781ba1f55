"""Vertical-slash estimation (MInference, FlexPrefill): column and diagonal mass seen by the last queries."""

from __future__ import annotations

import torch
from torch import Tensor

from .plan import num_blocks


def last_query_probs(q: Tensor, k: Tensor, last_q: int, scale: float) -> tuple[Tensor, Tensor]:
    """Causal fp32 attention of the last ``last_q`` queries over all keys: probs (B, H, m, Nk), positions (m,)."""
    batch, heads, nq, dim = q.shape
    kv_heads, nk = k.shape[1], k.shape[2]
    m = min(last_q, nq)
    pos = torch.arange(nk - m, nk, device=q.device)
    ql = q[:, :, nq - m :].float().reshape(batch, kv_heads, heads // kv_heads * m, dim)
    logits = (torch.matmul(ql, k.float().transpose(-1, -2)) * scale).view(batch, heads, m, nk)
    logits = logits.masked_fill(torch.arange(nk, device=q.device)[None, :] > pos[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1), pos


def column_and_diagonal_sums(probs: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Sums of probs (B, H, m, Nk) per key column and per diagonal offset (query pos − key pos): both (B, H, Nk)."""
    nk = probs.shape[-1]
    vertical = probs.sum(dim=2)
    offset = (pos[:, None] - torch.arange(nk, device=probs.device)[None, :]).clamp(min=0)  # (m, Nk)
    slash = torch.zeros_like(vertical)
    slash.scatter_add_(-1, offset.flatten().expand(*probs.shape[:2], -1), probs.flatten(2))
    return vertical, slash


def slash_block_mask(diag_blocks: Tensor, seq_len_q: int, seq_len_kv: int, block_size: int) -> Tensor:
    """Tiles covered by block diagonals: diag_blocks (B, H, T) bool over d = qb − kb → (B, H, R, T) bool, causal."""
    nkb = num_blocks(seq_len_kv, block_size)
    first = (seq_len_kv - seq_len_q) // block_size
    qb = torch.arange(first, nkb, device=diag_blocks.device)
    kb = torch.arange(nkb, device=diag_blocks.device)
    d = qb[:, None] - kb[None, :]  # (R, T)
    causal = d >= 0
    idx = d.clamp(min=0).flatten().expand(*diag_blocks.shape[:2], -1)
    return torch.gather(diag_blocks, -1, idx).view(*diag_blocks.shape[:2], *d.shape) & causal


def offsets_to_diag_blocks(offsets: Tensor, valid: Tensor, num_kv_blocks: int, block_size: int) -> Tensor:
    """Token diagonal offsets (B, H, n) → the block diagonals they cross: (B, H, T) bool.

    Offset o = d·bs + e links query block qb to key positions in blocks qb − d and, when e > 0, qb − d − 1.
    """
    out = torch.zeros(*offsets.shape[:2], num_kv_blocks + 1, dtype=torch.bool, device=offsets.device)
    d = (offsets // block_size).clamp(max=num_kv_blocks)
    spill = (d + 1).clamp(max=num_kv_blocks)
    out.scatter_(-1, torch.where(valid, d, num_kv_blocks), True)
    out.scatter_(-1, torch.where(valid & (offsets % block_size > 0), spill, num_kv_blocks), True)
    return out[..., :num_kv_blocks]
