"""FlexPrefill (arXiv 2502.20766): per head, query-aware pooled blocks or a vertical-slash pattern, as its code selects.

Rule, per (batch, query head); T = ⌈Nk / bs⌉ key blocks, R plan rows (absolute query blocks), ``bs`` = block_size,
γ = gamma. Budgets in blocks: ``lo = ⌈min_budget / bs⌉``, ``hi = min(⌈max_budget / bs⌉, T)`` (no cap: T).

1. The last m = min(bs, Nq) queries attend causally over all keys (fp32 softmax, ``scale``): ``vertical[j]`` is
   the mean probability of key j, ``slash[o]`` the summed probability at diagonal offset o = query − key, / m.
2. Budgets: ``n(x) = #{i : cumsum(sort_desc(x))_i <= γ} + 1`` positions; ``n_v = n(vertical) // unit + 1`` and
   ``n_s = n(slash) // unit + 1``, clamped to [lo, hi]; ``unit = budget_unit`` (128, the original's literal)
   or bs when None.
3. Pooled scores: ``V[kb]`` = Σ vertical over key block kb (aligned to position 0). ``S[d]`` = Σ slash over the
   offsets of *end-aligned* diagonal block d = T − 1 − ⌊(Nk − 1 − o) / bs⌋: offsets 0..r−1 form d = 0 and each
   next bs offsets the next d, r = Nk mod bs (bs when 0), so with ragged Nk the groups are not o // bs.
4. Query-aware test: ``a = softmax_kb(mean(last m queries)·scale · mean_k(block kb))`` over all T blocks;
   ``js = sqrt(½ Σ a·log(a/μ) + ½ Σ V·log(V/μ))``, μ = (a + V)/2. The head is query-aware iff js < τ (a NaN
   divergence, from a zero-mass block, is not); then n_v = n_s = lo.
5. Vertical: V[0] := +inf, the n_v highest blocks (ties: lower index) → tiles (qb, kb), kb <= qb. Slash:
   S[0] := +inf, the n_s highest diagonals (ties: lower d) → tiles (qb, qb − d). Block 0 and diagonal 0 are
   therefore forced *inside* the budgets.
6. Query-aware heads add the cover tiles: pooled queries per row (``query_mean="padded"``: the row's query sum
   / bs, zeros counted for a ragged block; ``"real"``: mean of its real rows), fp32 softmax over the row's
   causal blocks of (pooled q · scale · pooled k); all R·T entries sorted descending (ties: row-major order),
   inclusive cumsum c; a tile is kept iff c <= γ·R (``include_crossing_tile=True``: iff c − p < γ·R).
Dense when Nk <= max(2·bs, lo·bs); γ >= 1 selects every causal tile.

Where it comes from: PBS-Attn's vendored ``pbs_attn/baselines/Flexprefill.py`` ``get_active_blocks`` (~lines
946–1104, the copy the paper ran) and ByteDance's ``flex_prefill/ops/flex_prefill_attention.py`` (~lines
1661–1779): ``sum_all_diagonal_matrix`` indexes diagonal N−1−i and ``torch_bhn_sumpool`` pads at the end (the
end-aligned groups), ``score_cover_topk(...) // 128 + 1`` (the literal 128), ``vertical[..., :1] = inf`` and
``slash[..., -1:] = inf`` before top-k (forcing inside the budget), ``score_cover_idx`` blanks entries whose
inclusive cumsum exceeds γ·T (the crossing tile dropped), and the vendored copy averages the zero-padded last
query block (ByteDance rescales it, ~line 1772: ``query_mean="real"``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..config import FlexPrefillConfig
from ..permutation import pooled_keys
from ..plan import SparsePlan, num_blocks
from ..scoring import block_grid, causal_blocks, masked_softmax, pooled_queries
from ..vertical_slash import column_and_diagonal_sums, last_query_probs, slash_block_mask
from .registry import Dense, register_method


@register_method("flexprefill", FlexPrefillConfig)
def plan(q, k, cfg: FlexPrefillConfig, scale: float) -> SparsePlan | Dense:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    lo = math.ceil(cfg.min_budget / bs)
    if nk <= max(2 * bs, lo * bs):
        return Dense(f"seq_len_kv={nk} <= max(2*block_size, min_budget blocks): FlexPrefill runs dense")
    causal = causal_blocks(nq, nk, bs, q.device)
    if cfg.gamma >= 1:
        return SparsePlan.from_block_mask(causal.expand(batch, heads, *causal.shape), block_size=bs, seq_len_q=nq,
                                          seq_len_kv=nk, num_kv_heads=k.shape[1])
    nkb = num_blocks(nk, bs)
    hi = nkb if cfg.max_budget is None else min(math.ceil(cfg.max_budget / bs), nkb)
    unit = cfg.budget_unit or bs

    probs, pos = last_query_probs(q, k, bs, scale)  # (B, H, m, Nk)
    m = probs.shape[2]
    vertical = probs.mean(dim=2)  # (B, H, Nk)
    slash = column_and_diagonal_sums(probs, pos)[1] / m  # (B, H, Nk) by offset
    v_budget = (_cover_count(vertical, cfg.gamma) // unit + 1).clamp(lo, hi)  # (B, H) blocks
    s_budget = (_cover_count(slash, cfg.gamma) // unit + 1).clamp(lo, hi)
    v_blocks = _block_sums(vertical, nkb, bs)  # (B, H, T) by key block
    s_blocks = _block_sums(slash.flip(-1), nkb, bs).flip(-1)  # (B, H, T) by end-aligned diagonal block

    pk = pooled_keys(k, None, heads, bs)  # (B, H, T, D)
    mean_q = q[:, :, nq - m :].float().mean(dim=2, keepdim=True) * scale
    avg_qk = torch.softmax(torch.matmul(mean_q, pk.transpose(-1, -2)).squeeze(2), dim=-1)
    query_aware = _sqrt_js(avg_qk, v_blocks) < cfg.tau  # (B, H)
    v_budget = torch.where(query_aware, lo, v_budget)
    s_budget = torch.where(query_aware, lo, s_budget)

    top_v = _top_mask(_force_first(v_blocks), v_budget)  # (B, H, T) key-block columns
    top_s = _top_mask(_force_first(s_blocks), s_budget)  # (B, H, T) block diagonals
    selected = (top_v[:, :, None, :] & causal) | slash_block_mask(top_s, nq, nk, bs)
    if bool(query_aware.any()):
        cover = _cover_tiles(q, pk, nk, causal, cfg, scale)
        selected = selected | (cover & query_aware[:, :, None, None])
    return SparsePlan.from_block_mask(selected, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1])


def _cover_tiles(q: Tensor, pk: Tensor, seq_len_kv: int, causal: Tensor, cfg: FlexPrefillConfig,
                 scale: float) -> Tensor:
    """Step 6: (B, H, R, T) bool, the pooled block attention's top tiles covering gamma of its R rows."""
    nq, bs = q.shape[2], cfg.block_size
    pq = pooled_queries(q, None, seq_len_kv, bs)  # (B, H, R, D): mean over each row's real queries
    if cfg.query_mean == "padded":  # sum / bs: absent rows count as zeros
        qb, _ = block_grid(nq, seq_len_kv, bs, q.device)
        real = torch.clamp((qb + 1) * bs, max=seq_len_kv) - torch.clamp(qb * bs, min=seq_len_kv - nq)
        pq = pq * (real.float() / bs)[:, None]
    attn = masked_softmax(torch.matmul(pq * scale, pk.transpose(-1, -2)), causal)  # (B, H, R, T)
    ordered, order = torch.sort(attn.flatten(2), dim=-1, descending=True, stable=True)
    covered = torch.cumsum(ordered, dim=-1)
    budget = cfg.gamma * causal.shape[0]
    keep = (covered - ordered < budget) if cfg.include_crossing_tile else (covered <= budget)
    keep = keep & (ordered > 0)
    return torch.zeros_like(keep).scatter(-1, order, keep).view_as(attn)


def _cover_count(scores: Tensor, gamma: float) -> Tensor:
    """(B, H) int64: entries whose descending inclusive cumsum stays <= gamma, plus one (the original's count)."""
    ordered = torch.sort(scores, dim=-1, descending=True).values
    return (torch.cumsum(ordered, dim=-1) <= gamma).sum(-1) + 1


def _block_sums(x: Tensor, nkb: int, bs: int) -> Tensor:
    """Sums over consecutive bs-wide groups of the last dim, zero-padded at the end: (..., T)."""
    pad = nkb * bs - x.shape[-1]
    return torch.nn.functional.pad(x, (0, pad)).view(*x.shape[:-1], nkb, bs).sum(-1)


def _force_first(scores: Tensor) -> Tensor:
    out = scores.clone()
    out[..., 0] = float("inf")
    return out


def _top_mask(scores: Tensor, budget: Tensor) -> Tensor:
    """(B, H, T) bool: the ``budget`` (B, H) highest-scoring entries per head (ties: lower index first)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    taken = torch.arange(scores.shape[-1], device=scores.device) < budget[..., None]
    return torch.zeros_like(taken).scatter(-1, order, taken)


def _sqrt_js(p: Tensor, q: Tensor) -> Tensor:
    """The original's square-root Jensen–Shannon divergence, unclamped: a zero entry gives NaN (not query-aware)."""
    m = (p + q) / 2
    return torch.sqrt(0.5 * (p * torch.log(p / m)).sum(-1) + 0.5 * (q * torch.log(q / m)).sum(-1))
