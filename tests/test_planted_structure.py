"""On keys with planted, scattered heavy hitters, key permutation needs fewer blocks at the same threshold."""

import torch

import pbs
from pbs.synthetic import Structure, structured_qkv
from tests.reference import causal_attention_f64, rel_err

# 15% of keys are heavy hitters at random positions: every natural-order block holds some, so mean-pooled
# scores are flat without permutation; sorted to the front of each segment they fill whole blocks.
HEAVY = Structure(sink_logit=10.0, local_logit=6.0, heavy_logit=12.0, heavy_fraction=0.15)
ERROR_BOUND = 0.15  # relative L2 error of the output vs float64 dense attention at threshold 0.9


def test_key_permutation_lowers_density_at_equal_threshold():
    q, k, v = structured_qkv(1, 8, 2, 4096, 64, structure=HEAVY, seed=5)
    ref = causal_attention_f64(q, k, v)
    kw = dict(block_size=64, segment_size=256, threshold=0.9)
    out_key, st_key = pbs.sparse_attention(q, k, v, method="pbs", permute="key", return_stats=True, **kw)
    out_none, st_none = pbs.sparse_attention(q, k, v, method="pbs", permute="none", return_stats=True, **kw)
    assert st_key.density < st_none.density - 0.1, (st_key.density, st_none.density)
    assert rel_err(out_key, ref) < ERROR_BOUND
    assert rel_err(out_none, ref) < ERROR_BOUND


def test_density_falls_with_threshold_and_reaches_one():
    q, k, v = structured_qkv(1, 4, 4, 2048, 64, structure=HEAVY, seed=6)
    densities = [
        pbs.sparse_attention(q, k, v, method="pbs", block_size=64, threshold=t, return_stats=True)[1].density
        for t in (0.5, 0.8, 0.95, 1)
    ]
    assert densities == sorted(densities)
    # threshold 1: every causal tile, plus only those above-diagonal tiles of a diagonal segment that
    # permutation made visible (they hold earlier keys of the segment)
    _, st = pbs.sparse_attention(q, k, v, method="pbs", block_size=64, threshold=1, return_stats=True)
    tiles = st.plan.block_mask()  # (B, H, R, T)
    qb, kb = torch.arange(32)[:, None], torch.arange(32)[None, :]
    assert tiles[..., kb <= qb].all()
    extra = tiles & (kb > qb)
    assert not extra[..., (kb // 4) != (qb // 4)].any()
    assert densities[-1] == 1 + extra.sum().item() / (4 * 32 * 33 / 2) >= 1


def test_stats_fields():
    q, k, v = structured_qkv(2, 4, 2, 1024, 32, seed=7)
    _out, stats = pbs.sparse_attention(q, k, v, method="pbs", block_size=64, return_stats=True)
    assert stats.method == "pbs" and stats.dense_fallback is None and stats.backend == "torch"
    assert stats.per_head.shape == (2, 4)
    assert abs(stats.density - stats.per_head.mean().item()) < 1e-12
    recount = stats.plan.block_mask().sum(dim=(-1, -2)).double() / (16 * 17 / 2)
    assert torch.allclose(stats.per_head, recount)
    _, short = pbs.sparse_attention(q[:, :, :200], k[:, :, :200], v[:, :, :200], method="pbs", return_stats=True)
    assert short.dense_fallback is not None and "segment_size" in short.dense_fallback and short.density == 1.0
