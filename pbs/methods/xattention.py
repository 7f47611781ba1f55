"""XAttention (arXiv 2503.16428): strided antidiagonal block scoring + cumulative threshold, as its code selects.

Rule, per (batch, query head, plan row) — the row is absolute query block ``qb`` with causal key blocks
``0..qb``; ``p`` are the row's antidiagonal block scores (``pbs.scoring.antidiagonal_block_probs``, rows sum to 1),
``τ`` the threshold:

1. Forced tiles F: the diagonal ``qb``, plus the sink ``0`` unless the row lies in the *first chunk*
   (``qb < chunk_size // block_size``; ``chunk_size`` defaults to the original's choice from Nk, see
   :func:`default_chunk_size`). With ``accounting="corrected"`` F = {0, qb} in every row.
2. The other causal tiles, sorted by decreasing ``p`` (ties: lower key block first), are s_0, s_1, …; with
   C = Σ_F p (summed in float64):
   - rows of the first chunk (``accounting="original"``): s_0 is taken; s_j (j ≥ 1) is taken iff
     C + p(s_0) + … + p(s_{j-2}) < τ — one tile more than the threshold needs;
   - every other row: s_j is taken iff C + p(s_0) + … + p(s_{j-1}) < τ.
   Tiles with p = 0 are never taken. A row whose scores are not finite (a NaN or Inf in q or k) takes every
   causal tile, so the value reaches its output as in SDPA.
3. Selected = taken ∪ {qb} ∪ {0}: the sink is computed in every row (in the first chunk without being credited).

Why (x-attention ``xattn/src/utils.py`` ``find_blocks_chunked`` ~lines 98–146, identical in PBS-Attn's vendored
``pbs_attn/baselines/XAttention.py`` ~lines 465–511): the forced mask sets column 0 and then assigns an ``eye``
over the chunk's diagonal, which in the first chunk (current_index 0) overwrites column 0 for every row but the
first; the cumulative sum is laid out for two forced entries ([0, C, sorted others…]), so a row with one forced
entry takes one tile more; and unselected entries of the index list are set to 0 before the scatter, which
selects key block 0 in every row. Its ``keep_sink``/``keep_recent`` change nothing a causal prefill computes
(``keep_sink`` sets query-block row 0; the diagonal is already forced), so they are not offered.
``threshold >= 1`` selects every causal tile. With ``budget``: the sink and the diagonal plus the highest-scoring
other causal tiles, up to ``round(budget · (qb + 1))`` tiles per row.

``plan`` is the PyTorch reference; ``plan_fused`` builds the same plan with the fused estimation and selection.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import XAttentionConfig
from ..plan import SparsePlan
from ..scoring import antidiagonal_block_probs, block_grid, causal_blocks
from ..selection import select_budget, unrankable_rows
from .registry import register_fused, register_method


def default_chunk_size(seq_len_kv: int) -> int:
    """The original's estimation chunk (``Xattention_prefill``): next_pow2(Nk) clipped to [2048, 2**28 / next_pow2]."""
    pow2 = 1 << (seq_len_kv - 1).bit_length()
    return max(min(max(2048, pow2), 128 * 1024 * 2048 // pow2), 2048)


@register_method("xattention", XAttentionConfig)
def plan(q, k, cfg: XAttentionConfig, scale: float) -> SparsePlan:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    causal = causal_blocks(nq, nk, bs, q.device)
    qb, kb = block_grid(nq, nk, bs, q.device)
    diagonal = kb[None, :] == qb[:, None]  # (R, T)
    sink = (kb[None, :] == 0).expand_as(causal)
    if cfg.budget is not None:
        probs = antidiagonal_block_probs(q, k, causal, bs, cfg.stride, scale, token_causal=True)
        selected = select_budget(probs, causal, (diagonal | sink) & causal, cfg.budget, qb)
    elif cfg.threshold >= 1:
        selected = causal.expand(batch, heads, *causal.shape)
    else:
        chunk_blocks = (cfg.chunk_size or default_chunk_size(nk)) // bs
        first_chunk = (qb < chunk_blocks) & (cfg.accounting == "original")  # (R,)
        credited = diagonal | (sink & ~first_chunk[:, None])
        probs = antidiagonal_block_probs(q, k, causal, bs, cfg.stride, scale, token_causal=True)
        selected = _select(probs, causal & ~credited, credited, first_chunk, cfg.threshold)
    selected = selected | diagonal | (sink & causal)
    return SparsePlan.from_block_mask(selected, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1])


@register_fused("xattention")
def plan_fused(q, k, cfg: XAttentionConfig, scale: float) -> SparsePlan:
    from ..kernels.block_select import RowRule
    from ..kernels.planning import plan_from_scores

    nk, bs = k.shape[2], cfg.block_size
    group = q.shape[1] // k.shape[1]
    lag = (cfg.chunk_size or default_chunk_size(nk)) // bs if cfg.accounting == "original" else 0
    scores = None
    if cfg.budget is not None or cfg.threshold < 1:
        from ..kernels.antidiagonal import antidiagonal_block_probs_fused

        scores = lambda h0, h1: antidiagonal_block_probs_fused(
            q[:, h0:h1], k[:, h0 // group : h1 // group], block_size=bs, stride=cfg.stride, scale=scale,
            token_causal=True,
        )
    return plan_from_scores(
        scores, q=q, num_kv_heads=k.shape[1], seq_len_kv=nk, block_size=bs, rule=RowRule(credit=True, lag_blocks=lag),
        part_width=1, threshold=cfg.threshold, budget=cfg.budget, scores_kind="probs",
    )


def _select(probs: Tensor, candidates: Tensor, credited: Tensor, lagged: Tensor, threshold: float) -> Tensor:
    """Step 2 of the module rule: (B, H, R, T) bool of the candidates taken. ``lagged`` (R,): first-chunk rows."""
    unrankable = unrankable_rows(probs, candidates | credited)  # NaN/Inf in q or k: every candidate
    p = probs.double().masked_fill(unrankable, 0.0)
    credit = (p * credited).sum(-1, keepdim=True)
    ordered, order = torch.sort(p.masked_fill(~candidates, 0.0), dim=-1, descending=True, stable=True)
    before = torch.cumsum(ordered, dim=-1) - ordered  # mass of the higher-ranked candidates
    # first-chunk rows: s_0 free, then the sum lags one tile behind
    lag = torch.nn.functional.pad(before[..., :-1], (1, 0))
    before_lagged = torch.where(torch.arange(p.shape[-1], device=p.device) == 0, -1.0, credit + lag)
    before = torch.where(lagged[:, None], before_lagged, credit + before)
    keep = (before < threshold) & (ordered > 0)
    return torch.zeros_like(keep).scatter(-1, order, keep) | (candidates & unrankable)
