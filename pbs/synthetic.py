"""Structured synthetic q, k, v with the attention patterns sparse methods rely on.

Three planted patterns on top of Gaussian noise, each with a stated logit strength (the extra pre-softmax
score, after the 1/sqrt(D) scale, that a query gives the keys of that pattern):

* sink: key 0 gets ``sink_logit`` from every query;
* local window: ``local_logit`` at distance 0, falling off with distance (sinusoidal position features with
  wavelengths 32–1024 tokens, so each query prefers its recent ~100 tokens);
* scattered heavy hitters: a ``heavy_fraction`` of keys, at random positions across the whole sequence, get
  ``heavy_logit`` from every query (one shared direction per KV head);
* optional long-range recency: ``recency_logit`` at distance 0 falling off slowly over the whole sequence
  (wavelengths 1024 to 8N), as RoPE's low frequencies give real models.

Used by the demo, the tests with planted structure and the kernel benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Structure:
    sink_logit: float = 8.0
    local_logit: float = 5.0
    heavy_logit: float = 6.0
    heavy_fraction: float = 0.01
    noise: float = 1.0  # std of the Gaussian part of q and k
    recency_logit: float = 0.0  # a long-range recency bias (wavelengths up to 8N, like RoPE's low frequencies)


def structured_qkv(
    batch: int,
    q_heads: int,
    kv_heads: int,
    seq_len: int,
    head_dim: int,
    *,
    structure: Structure = Structure(),
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor, Tensor]:
    """q (B, Hq, N, D), k and v (B, Hkv, N, D) with a sink, local windows and scattered heavy hitters.

    Built on ``device`` with a generator there (fast at 128K on a GPU); the same seed gives other numbers on
    another device type, with the same structure. Generated in fp32, then cast to ``dtype``.
    """
    if head_dim < 16:
        raise ValueError(f"head_dim must be >= 16 for the planted structure, got head_dim={head_dim}")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    group = q_heads // kv_heads
    scale = 1.0 / math.sqrt(head_dim)
    noise = structure.noise / head_dim**0.25  # noise logits ~ N(0, noise^2)
    q = torch.randn(batch, q_heads, seq_len, head_dim, generator=gen, device=device) * noise
    k = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen, device=device) * noise
    v = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen, device=device)

    # local window: q_i . k_j = a^2 * sum_f cos(w_f (i - j)) on the first 2F dims
    num_freq = head_dim // 8
    wavelengths = torch.logspace(math.log10(32), math.log10(1024), num_freq)
    angle = torch.arange(seq_len)[:, None] * (2 * math.pi / wavelengths)[None, :]  # (N, F)
    feats = torch.cat([angle.cos(), angle.sin()], dim=-1).to(device)  # (N, 2F)
    amp = math.sqrt(structure.local_logit / (num_freq * scale))
    q[..., : 2 * num_freq] = feats * amp
    k[..., : 2 * num_freq] = feats * amp

    used = 2 * num_freq
    if structure.recency_logit > 0:
        wavelengths = torch.logspace(math.log10(1024), math.log10(8 * max(seq_len, 128)), num_freq)
        angle = torch.arange(seq_len)[:, None] * (2 * math.pi / wavelengths)[None, :]
        feats = torch.cat([angle.cos(), angle.sin()], dim=-1).to(device)
        amp = math.sqrt(structure.recency_logit / (num_freq * scale))
        q[..., used : used + 2 * num_freq] = feats * amp
        k[..., used : used + 2 * num_freq] = feats * amp
        used += 2 * num_freq

    # sink and heavy hitters along one unit direction per KV head, in the remaining dims
    rest = head_dim - used
    u = torch.randn(batch, kv_heads, rest, generator=gen, device=device)
    u = u / u.norm(dim=-1, keepdim=True)
    q_amp = math.sqrt(max(structure.heavy_logit, structure.sink_logit) / scale)
    heavy_amp = structure.heavy_logit / (scale * q_amp)
    sink_amp = structure.sink_logit / (scale * q_amp)
    q[..., used:] += q_amp * u.repeat_interleave(group, dim=1)[:, :, None, :]
    n_heavy = max(1, round(structure.heavy_fraction * seq_len))
    heavy = torch.randperm(seq_len, generator=gen, device=device)[:n_heavy]
    k[:, :, heavy, used:] += heavy_amp * u[:, :, None, :]
    k[:, :, 0, used:] += sink_amp * u
    return q.to(dtype), k.to(dtype), v.to(dtype)
