"""Pure-PyTorch attention under a SparsePlan: the CPU path and the test oracle for the kernels.

Works one plan row (query block) at a time over gathered key rows, so memory is
O(B·H·block_size·keys_selected) and an Nq×Nk matrix is never built for a whole head. K and V are gathered per
query head straight from the KV-head tensors (``h // group``); they are never repeated in memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .plan import SparsePlan

_TARGET_ELEMENTS = 1 << 26  # gathered elements per chunk of heads (~256 MiB in fp32)


def attend(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float) -> Tensor:
    """Attention of q (B, Hq, Nq, D) over k, v (B, Hkv, Nk, D) restricted to the plan's tiles.

    Softmax and accumulation run in fp32 (fp64 for fp64 inputs); the output has q's dtype and layout.
    Every query attends only to keys at original positions <= its own; a row with no visible key is zero.
    """
    batch, heads, nq, dim = q.shape
    nk = k.shape[2]
    group = heads // k.shape[1]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(batch, heads, nq, v.shape[-1], dtype=q.dtype, device=q.device)
    bs, q_offset, first = plan.block_size, plan.q_offset, plan.first_q_block
    lane = torch.arange(bs, device=q.device)
    b_idx = torch.arange(batch, device=q.device)[:, None, None]

    for row in range(plan.num_rows):
        slot_lo = max(q_offset, (first + row) * bs) - q_offset
        slot_hi = min(nk, (first + row + 1) * bs) - q_offset
        slots = torch.arange(slot_lo, slot_hi, device=q.device)
        keys, key_valid = _row_keys(plan, row, lane, batch, heads)  # (B, H, L) original positions
        width = keys.shape[-1] * (dim + v.shape[-1]) + keys.shape[-1] * slots.numel()
        chunk = max(1, min(heads, _TARGET_ELEMENTS // max(1, batch * width)))
        for h0 in range(0, heads, chunk):
            hs = slice(h0, min(heads, h0 + chunk))
            h_idx = torch.arange(hs.start, hs.stop, device=q.device)[None, :, None]
            if plan.query_perm is None:
                q_rows = slots.expand(batch, hs.stop - hs.start, -1)
            else:
                q_rows = plan.query_perm[:, hs, slot_lo:slot_hi]
            q_tile = q[b_idx, h_idx, q_rows].to(compute)  # (B, h, m, D)
            kk = keys[:, hs]
            k_tile = k[b_idx, h_idx // group, kk].to(compute)  # (B, h, L, D)
            v_tile = v[b_idx, h_idx // group, kk].to(compute)
            scores = torch.matmul(q_tile, k_tile.transpose(-1, -2)) * scale  # (B, h, m, L)
            visible = key_valid[:, hs, None, :] & (kk[:, :, None, :] <= (q_rows + q_offset)[..., None])
            scores = scores.masked_fill(~visible, float("-inf"))
            probs = torch.softmax(scores, dim=-1)
            # a row that sees no key gives 0/0 = NaN in softmax: define its output as 0
            probs = torch.where(visible.any(-1, keepdim=True), probs, torch.zeros_like(probs))
            out[b_idx, h_idx, q_rows] = torch.matmul(probs, v_tile).to(q.dtype)
    return out


def _row_keys(plan: SparsePlan, row: int, lane: Tensor, batch: int, heads: int) -> tuple[Tensor, Tensor]:
    """Original key positions (B, H, L) listed for one plan row, and their validity mask."""
    bs, nk = plan.block_size, plan.seq_len_kv
    parts, valids = [], []
    for num, idx in ((plan.full_kv_num_blocks, plan.full_kv_indices), (plan.kv_num_blocks, plan.kv_indices)):
        blocks = idx[:, :, row].long()  # (B, H, M)
        block_valid = torch.arange(blocks.shape[-1], device=blocks.device) < num[:, :, row, None]
        slots = (blocks[..., None] * bs + lane).flatten(-2)  # (B, H, M*bs)
        valid = (block_valid[..., None] & (slots.view(*blocks.shape, bs) < nk)).flatten(-2)
        slots = slots.clamp(max=nk - 1)
        if plan.key_perm is not None:
            perm = plan.key_perm
            if perm.shape[1] != heads:
                perm = perm.repeat_interleave(heads // perm.shape[1], dim=1)
            slots = torch.gather(perm, -1, slots)
        parts.append(slots)
        valids.append(valid)
    if plan.col_indices is not None:
        cols = plan.col_indices[:, :, row].long()
        parts.append(cols)
        valids.append(torch.arange(cols.shape[-1], device=cols.device) < plan.col_num[:, :, row, None])
    if plan.win_starts is not None:
        starts = plan.win_starts[:, :, row].long()  # (B, H, W) original positions, never permuted
        keys = (starts[..., None] + lane).flatten(-2)  # (B, H, W*bs)
        listed = torch.arange(starts.shape[-1], device=starts.device) < plan.win_num[:, :, row, None]
        valid = listed.repeat_interleave(bs, -1) & (keys < nk)
        parts.append(keys.clamp(max=nk - 1))
        valids.append(valid)
    return torch.cat(parts, -1), torch.cat(valids, -1)

