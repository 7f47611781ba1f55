"""The benchmark's inputs: structured synthetic q, k, v on the device, and random causal block plans."""

from __future__ import annotations

import torch
from torch import Tensor

from pbs.plan import SparsePlan, num_blocks
from pbs.synthetic import Structure, structured_qkv


def make_inputs(cfg, seq_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """``pbs.synthetic.structured_qkv`` built on the configured device (``cfg``: a BenchConfig)."""
    args = (cfg.batch, cfg.q_heads, cfg.kv_heads, seq_len, cfg.head_dim)
    return structured_qkv(*args, structure=Structure(**cfg.structure), seed=cfg.seed, dtype=getattr(torch, cfg.dtype),
                          device=cfg.device)


def random_block_plan(batch: int, heads: int, kv_heads: int, seq_len: int, block_size: int, density: float,
                      seed: int, device=None) -> SparsePlan:
    """A causal block-sparse plan with ``plan.density() ≈ density`` (Nq = Nk = seq_len, no permutation).

    The diagonal tile and key block 0 are always on; every other causal tile is on with probability p, chosen
    so that the expected count hits the target: each (batch, head) gets exactly round(p · free tiles) of its free
    causal tiles, uniformly at random, so the density is exact up to one tile (unless the target is below what
    the forced tiles already give: 2T−1 of T(T+1)/2 tiles, T = ⌈N / block_size⌉, e.g. 0.119 at 4K with B=128).
    Off-diagonal tiles are full (no mask), diagonal tiles partial (token causal mask), as FlexAttention's
    BlockMask has them.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    t = num_blocks(seq_len, block_size)
    rows = torch.arange(t, device=device)
    causal = rows[None, :] <= rows[:, None]
    forced = causal & ((rows[None, :] == rows[:, None]) | (rows[None, :] == 0))
    free = causal & ~forced
    n_free, n_forced, total = int(free.sum()), int(forced.sum()), t * (t + 1) // 2
    want = min(max(round(density * total) - n_forced, 0), n_free)
    mask = forced.expand(batch, heads, t, t).clone()
    if want > 0:
        gen = torch.Generator(device=device).manual_seed(seed)
        score = torch.rand(batch, heads, t * t, generator=gen, device=device)
        score = score.masked_fill(~free.flatten(), 2.0)  # never chosen
        kth = torch.sort(score, dim=-1).values[..., want - 1 : want]  # (B, H, 1)
        mask |= (score <= kth).view(batch, heads, t, t) & free
    return SparsePlan.from_block_mask(mask, block_size=block_size, seq_len_q=seq_len, seq_len_kv=seq_len,
                                      num_kv_heads=kv_heads)
