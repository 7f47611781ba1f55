"""XAttention (arXiv 2503.16428): strided antidiagonal block scoring + cumulative threshold, no permutation.

Forced tiles (``keep_sink``: key block 0; ``keep_recent``: the diagonal block) count toward the threshold.
"""

from __future__ import annotations

from ..config import XAttentionConfig
from ..plan import SparsePlan
from ..scoring import antidiagonal_block_probs, causal_blocks
from ..selection import select_cumulative
from .meanpool import _diagonal
from .registry import register_method


@register_method("xattention", XAttentionConfig)
def plan(q, k, cfg: XAttentionConfig, scale: float) -> SparsePlan:
    batch, heads, nq, _ = q.shape
    nk, bs = k.shape[2], cfg.block_size
    causal = causal_blocks(nq, nk, bs, q.device)
    forced = causal.new_zeros(causal.shape)
    if cfg.keep_sink:
        forced[:, 0] = True
    if cfg.keep_recent:
        forced = forced | _diagonal(causal)
    if cfg.threshold >= 1:
        selected = causal.expand(batch, heads, *causal.shape)
    else:
        probs = antidiagonal_block_probs(q, k, causal, bs, cfg.stride, scale, token_causal=True)
        credit = (probs * forced).sum(-1)
        selected = select_cumulative(probs, causal & ~forced, cfg.threshold, credit)
    return SparsePlan.from_block_mask(
        selected | forced, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=k.shape[1]
    )
