"""FlexPrefill (arXiv 2502.20766): per head, query-aware pooled blocks or a vertical-slash pattern.

From the last query block: vertical (column) and slash (diagonal) mass; budgets are the fewest positions
whose sorted mass exceeds ``gamma``, in blocks. A head whose pooled block estimate agrees with the vertical
distribution (sqrt Jensen–Shannon divergence < ``tau``) is query-aware: it also gets the pooled block
attention's top tiles covering ``gamma`` of the flattened mass, and minimum vertical/slash budgets.
"""

from __future__ import annotations

import torch

from ..config import FlexPrefillConfig
from ..permutation import pooled_keys
from ..plan import SparsePlan, num_blocks
from ..scoring import causal_blocks, masked_softmax, pooled_queries
from ..vertical_slash import column_and_diagonal_sums, last_query_probs, slash_block_mask
from .registry import Dense, register_method


@register_method("flexprefill", FlexPrefillConfig)
def plan(q, k, cfg: FlexPrefillConfig, scale: float) -> SparsePlan | Dense:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    if nk <= max(2 * bs, cfg.min_budget * bs):
        return Dense(f"seq_len_kv={nk} <= 2*block_size: FlexPrefill runs dense")
    nkb = num_blocks(nk, bs)
    probs, pos = last_query_probs(q, k, bs, scale)
    m = probs.shape[2]
    vertical, slash = column_and_diagonal_sums(probs, pos)
    vertical, slash = vertical / m, slash / m
    v_blocks = _block_sums(vertical, nkb, bs)  # (B, H, T)
    s_blocks = _block_sums(slash, nkb, bs)  # (B, H, T) mass per block diagonal d

    max_budget = cfg.max_budget or nkb
    v_budget = _budget(vertical, cfg.gamma, bs).clamp(cfg.min_budget, max_budget)  # (B, H) blocks
    s_budget = _budget(slash, cfg.gamma, bs).clamp(cfg.min_budget, max_budget)

    # query-aware test: pooled estimate of the last block's attention vs the measured column mass
    causal = causal_blocks(nq, nk, bs, q.device)
    pq = pooled_queries(q, None, nk, bs)  # (B, H, R, D)
    pk = pooled_keys(k, None, heads, bs)  # (B, H, T, D)
    block_attn = masked_softmax(torch.matmul(pq, pk.transpose(-1, -2)) * scale, causal)  # (B, H, R, T)
    mean_q = q[:, :, nq - m :].float().mean(dim=2, keepdim=True)  # (B, H, 1, D)
    avg_qk = masked_softmax(torch.matmul(mean_q, pk.transpose(-1, -2)) * scale, causal[-1:]).squeeze(2)
    divergence = _sqrt_js(avg_qk, v_blocks / v_blocks.sum(-1, keepdim=True).clamp(min=1e-30))
    query_aware = divergence < cfg.tau  # (B, H)
    v_budget = torch.where(query_aware, cfg.min_budget, v_budget)
    s_budget = torch.where(query_aware, cfg.min_budget, s_budget)

    top_v = _top_mask(v_blocks, v_budget)  # (B, H, T) key-block columns
    top_v[..., 0] = True  # first vertical block always kept
    top_s = _top_mask(s_blocks, s_budget)  # (B, H, T) block diagonals
    top_s[..., 0] = True  # the diagonal always kept
    selected = (top_v[:, :, None, :] & causal) | slash_block_mask(top_s, nq, nk, bs)

    rows = causal.shape[0]
    if cfg.gamma >= 1:
        pooled_pick = causal.expand_as(block_attn)
    else:
        flat = block_attn.flatten(2)
        ordered, order = torch.sort(flat, dim=-1, descending=True, stable=True)
        keep = ((torch.cumsum(ordered, -1) - ordered) < cfg.gamma * rows) & (ordered > 0)
        pooled_pick = torch.zeros_like(keep).scatter(-1, order, keep).view_as(block_attn)
    selected = selected | (pooled_pick & query_aware[:, :, None, None])
    return SparsePlan.from_block_mask(selected, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1])


def _block_sums(x, nkb, bs):
    pad = nkb * bs - x.shape[-1]
    return torch.nn.functional.pad(x, (0, pad)).view(*x.shape[:-1], nkb, bs).sum(-1)


def _budget(scores, gamma, bs):
    """Positions needed for the sorted cumulative mass to exceed gamma, in blocks (//bs + 1): (B, H) int64."""
    if gamma >= 1:
        return torch.full(scores.shape[:-1], scores.shape[-1] // bs + 1, dtype=torch.long, device=scores.device)
    ordered = torch.sort(scores, dim=-1, descending=True).values
    total = ordered.sum(-1, keepdim=True).clamp(min=1e-30)
    needed = (torch.cumsum(ordered, -1) / total < gamma).sum(-1) + 1
    return needed // bs + 1


def _top_mask(scores, budget):
    """(B, H, T) bool: the ``budget`` (B, H) highest-scoring entries per head."""
    rank = torch.argsort(torch.argsort(scores, dim=-1, descending=True, stable=True), dim=-1)
    return rank < budget[..., None]


def _sqrt_js(p, q):
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (torch.log(a.clamp(min=1e-30)) - torch.log(b.clamp(min=1e-30)))).sum(-1)
    return torch.sqrt((0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp(min=0))
