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
Dense when Nk <= max(2·bs, lo·bs); γ >= 1 selects every causal tile. Non-finite estimates (a NaN or Inf in q or k):
a head whose vertical scores are not finite, and a row whose pooled attention is not, take every causal tile, so
the value reaches the output as in SDPA.

Budget mode (``budget``, a target density; not in the original): steps 1–4 as above, then per head one score per
causal tile — the pooled block attention of step 6 for a query-aware head, ``V[kb] + S[qb − kb]`` otherwise —
block 0 and the diagonal forced, and per row the top tiles up to ``round(budget · (qb + 1))``.

``plan`` is the PyTorch reference; ``plan_fused`` builds the same plan with the fused estimation (the last
queries' vertical/slash sums without their probability matrix) and selection, in chunks of heads.

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
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import FlexPrefillConfig
from ..permutation import pooled_keys
from ..plan import SparsePlan, num_blocks
from ..scoring import block_grid, causal_blocks, masked_softmax, pooled_queries
from ..selection import select_budget, unrankable_rows
from ..vertical_slash import column_and_diagonal_sums, last_query_probs, slash_block_mask
from .registry import Dense, register_fused, register_method


@register_method("flexprefill", FlexPrefillConfig)
def plan(q, k, cfg: FlexPrefillConfig, scale: float) -> SparsePlan | Dense:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    if short := _too_short(nk, cfg):
        return short
    causal = causal_blocks(nq, nk, bs, q.device)
    if cfg.gamma >= 1 and cfg.budget is None:
        return SparsePlan.from_block_mask(causal.expand(batch, heads, *causal.shape), block_size=bs, seq_len_q=nq,
                                          seq_len_kv=nk, num_kv_heads=k.shape[1])
    probs, pos = last_query_probs(q, k, bs, scale)  # (B, H, m, Nk)
    vertical, slash = column_and_diagonal_sums(probs, pos)
    est = _estimate(q, k, vertical, slash, probs.shape[2], cfg, scale)
    if cfg.budget is not None:
        qb, kb = block_grid(nq, nk, bs, q.device)
        forced = causal & ((kb[None, :] == 0) | (kb[None, :] == qb[:, None]))
        scores = _budget_scores(q, est, nk, causal, cfg, scale, 0, heads)
        selected = select_budget(scores, causal, forced, cfg.budget, qb) | forced
    else:
        selected = _vertical_slash_tiles(est, nq, nk, bs, causal, 0, heads)
        if bool(est.query_aware.any()):
            cover = _cover_tiles(q, est.pooled_k, nk, causal, cfg, scale)
            selected = selected | (cover & est.query_aware[:, :, None, None])
        selected = selected | (causal & est.unrankable[:, :, None, None])
    return SparsePlan.from_block_mask(selected, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1])


@register_fused("flexprefill")
def plan_fused(q, k, cfg: FlexPrefillConfig, scale: float) -> SparsePlan | Dense:
    from ..kernels.block_select import RowRule
    from ..kernels.planning import plan_from_scores
    from ..kernels.vertical_slash import last_query_sums_fused

    _batch, _heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    if short := _too_short(nk, cfg):
        return short
    common = dict(q=q, num_kv_heads=k.shape[1], seq_len_kv=nk, block_size=bs, part_width=1)
    if cfg.gamma >= 1 and cfg.budget is None:
        return plan_from_scores(None, rule=RowRule(), threshold=1.0, budget=None, scores_kind="probs", **common)
    vertical, slash = last_query_sums_fused(q, k, bs, scale)
    est = _estimate(q, k, vertical, slash, min(bs, nq), cfg, scale)
    causal = causal_blocks(nq, nk, bs, q.device)
    if cfg.budget is not None:
        scores = lambda h0, h1: _budget_scores(q, est, nk, causal, cfg, scale, h0, h1)
        return plan_from_scores(scores, rule=RowRule(force_sink=True, force_diagonal=True), threshold=1.0,
                                budget=cfg.budget, scores_kind="probs", score_bytes=8 * 2**20, **common)

    def selection(h0, h1):  # every head's cover is computed: skipping the others would need a host sync
        tiles = _vertical_slash_tiles(est, nq, nk, bs, causal, h0, h1)
        cover = _cover_tiles(q[:, h0:h1], est.pooled_k[:, h0:h1], nk, causal, cfg, scale)
        tiles = tiles | (cover & est.query_aware[:, h0:h1, None, None])
        return (tiles | (causal & est.unrankable[:, h0:h1, None, None])).float()

    # the cover's sort keeps ~6 block-grid buffers per head alive: chunks of 8 MiB of scores
    return plan_from_scores(selection, rule=RowRule(), threshold=1.0, budget=None, scores_kind="mask",
                            score_bytes=8 * 2**20, **common)


@dataclass
class _Estimate:
    """Steps 1–4 for every head: block scores, budgets, the query-aware decision, pooled keys (B, H, T, D), and
    which heads' estimates are not finite (``unrankable`` (B, H): they compute every causal tile)."""

    v_blocks: Tensor
    s_blocks: Tensor
    v_budget: Tensor
    s_budget: Tensor
    query_aware: Tensor
    pooled_k: Tensor
    unrankable: Tensor


def _too_short(nk: int, cfg: FlexPrefillConfig) -> Dense | None:
    if nk <= max(2 * cfg.block_size, math.ceil(cfg.min_budget / cfg.block_size) * cfg.block_size):
        return Dense(f"seq_len_kv={nk} <= max(2*block_size, min_budget blocks): FlexPrefill runs dense")
    return None


def _estimate(q, k, vertical_sum, slash_sum, m, cfg: FlexPrefillConfig, scale) -> _Estimate:
    nq, nk, bs, heads = q.shape[2], k.shape[2], cfg.block_size, q.shape[1]
    nkb = num_blocks(nk, bs)
    lo = math.ceil(cfg.min_budget / bs)
    hi = nkb if cfg.max_budget is None else min(math.ceil(cfg.max_budget / bs), nkb)
    unit = cfg.budget_unit or bs
    vertical, slash = vertical_sum / m, slash_sum / m  # (B, H, Nk): mean over the m queries, by key / offset
    v_budget = (_cover_count(vertical, cfg.gamma) // unit + 1).clamp(lo, hi)  # (B, H) blocks
    s_budget = (_cover_count(slash, cfg.gamma) // unit + 1).clamp(lo, hi)
    v_blocks = _block_sums(vertical, nkb, bs)  # (B, H, T) by key block
    s_blocks = _block_sums(slash.flip(-1), nkb, bs).flip(-1)  # (B, H, T) by end-aligned diagonal block
    pk = pooled_keys(k, None, heads, bs)  # (B, H, T, D)
    mean_q = q[:, :, nq - m :].float().mean(dim=2, keepdim=True) * scale
    avg_qk = torch.softmax(torch.matmul(mean_q, pk.transpose(-1, -2)).squeeze(2), dim=-1)
    query_aware = _sqrt_js(avg_qk, v_blocks) < cfg.tau  # (B, H)
    return _Estimate(v_blocks, s_blocks, torch.where(query_aware, lo, v_budget),
                     torch.where(query_aware, lo, s_budget), query_aware, pk, ~torch.isfinite(vertical).all(-1))


def _vertical_slash_tiles(est: _Estimate, nq, nk, bs, causal, h0, h1) -> Tensor:
    """Step 5 for heads h0..h1: (B, h, R, T) bool."""
    top_v = _top_mask(_force_first(est.v_blocks[:, h0:h1]), est.v_budget[:, h0:h1])  # key-block columns
    top_s = _top_mask(_force_first(est.s_blocks[:, h0:h1]), est.s_budget[:, h0:h1])  # block diagonals
    return (top_v[:, :, None, :] & causal) | slash_block_mask(top_s, nq, nk, bs)


def _budget_scores(q, est: _Estimate, nk, causal, cfg, scale, h0, h1) -> Tensor:
    """Budget mode's tile scores for heads h0..h1: (B, h, R, T)."""
    nq, bs = q.shape[2], cfg.block_size
    qb, kb = block_grid(nq, nk, bs, q.device)
    diag = (qb[:, None] - kb[None, :]).clamp(min=0)
    vs = est.v_blocks[:, h0:h1, None, :] + est.s_blocks[:, h0:h1][:, :, diag]
    attn = _pooled_attention(q[:, h0:h1], est.pooled_k[:, h0:h1], nk, causal, cfg, scale)
    return torch.where(est.query_aware[:, h0:h1, None, None], attn, vs)


def _pooled_attention(q: Tensor, pk: Tensor, seq_len_kv: int, causal: Tensor, cfg: FlexPrefillConfig,
                      scale: float) -> Tensor:
    """Step 6's pooled block attention: (B, H, R, T) fp32 softmax over each row's causal blocks."""
    nq, bs = q.shape[2], cfg.block_size
    pq = pooled_queries(q, None, seq_len_kv, bs)  # (B, H, R, D): mean over each row's real queries
    if cfg.query_mean == "padded":  # sum / bs: absent rows count as zeros
        qb, _ = block_grid(nq, seq_len_kv, bs, q.device)
        real = torch.clamp((qb + 1) * bs, max=seq_len_kv) - torch.clamp(qb * bs, min=seq_len_kv - nq)
        pq = pq * (real.float() / bs)[:, None]
    return masked_softmax(torch.matmul(pq * scale, pk.transpose(-1, -2)), causal)  # (B, H, R, T)


def _cover_tiles(q: Tensor, pk: Tensor, seq_len_kv: int, causal: Tensor, cfg: FlexPrefillConfig,
                 scale: float) -> Tensor:
    """Step 6: (B, H, R, T) bool, the pooled block attention's top tiles covering gamma of its R rows."""
    attn = _pooled_attention(q, pk, seq_len_kv, causal, cfg, scale)
    unrankable = unrankable_rows(attn, causal)  # a NaN/Inf query: the row takes every causal tile
    ordered, order = torch.sort(attn.masked_fill(unrankable, 0.0).flatten(2), dim=-1, descending=True, stable=True)
    covered = torch.cumsum(ordered, dim=-1)
    budget = cfg.gamma * causal.shape[0]
    keep = (covered - ordered < budget) if cfg.include_crossing_tile else (covered <= budget)
    keep = keep & (ordered > 0)
    return torch.zeros_like(keep).scatter(-1, order, keep).view_as(attn) | (causal & unrankable)


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
