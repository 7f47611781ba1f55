"""Vertical-slash estimation (MInference, FlexPrefill): column and diagonal mass seen by the last queries, and
MInference's slash windows."""

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


def slash_windows(row_end: Tensor, offsets: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """MInference's slash windows (``pbs.methods.minference``, step 1) for every row at once.

    row_end: (R,) int64, the unclipped end ``e`` of each row's query block; offsets: (B, H, S) distinct diagonal
    offsets in decreasing order. Returns window starts (B, H, R, W) int64, ascending per row, and their validity.
    One pass over the offsets; each offset adds at most one window per row (opening a range adds its first
    window, extending it the window at the old end).
    """
    batch, heads, n_off = offsets.shape
    rows = row_end.numel()
    device = offsets.device
    e = row_end.view(1, 1, rows).expand(batch, heads, rows)
    starts = torch.zeros(batch, heads, rows, n_off, dtype=torch.int32, device=device)
    count = torch.zeros(batch, heads, rows, dtype=torch.long, device=device)
    end = torch.full((batch, heads, rows), -1, dtype=torch.long, device=device)  # -1: no range yet
    for i in range(n_off):
        o = offsets[:, :, i : i + 1]
        x = torch.clamp(e - o, min=block_size)
        live = o < e
        opens = live & ((end < 0) | (x > end + block_size))
        extends = live & ~opens & (x > end)
        emit = opens | extends
        start = torch.where(opens, x - block_size, end)
        starts.scatter_(-1, count[..., None], torch.where(emit, start, 0).to(torch.int32)[..., None])
        count = count + emit
        end = torch.where(opens, x, torch.where(extends, end + block_size, end))
    width = max(int(count.max()), 1)
    valid = torch.arange(width, device=device) < count[..., None]
    return starts[..., :width].long(), valid


def columns_outside_windows(col: Tensor, starts: Tensor, valid: Tensor, block_size: int) -> Tensor:
    """(B, H, R, V) bool: which columns (original positions) are gathered beside the windows (step 2): those in
    no window of their row and before the end of its last window. starts/valid: (B, H, R, W), ascending."""
    big = torch.iinfo(torch.long).max // 2
    keyed = torch.where(valid, starts, big)  # ascending, padding last
    at = torch.searchsorted(keyed.contiguous(), col.contiguous(), right=True) - 1  # last window starting <= col
    inside = (at >= 0) & (col < torch.gather(keyed, -1, at.clamp(min=0)) + block_size)
    last_end = torch.where(valid, starts + block_size, -1).amax(-1, keepdim=True)
    return ~inside & (col < last_end)
