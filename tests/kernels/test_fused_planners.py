"""Fused (Triton) planners vs the torch planners, under TRITON_INTERPRET=1: the same plan, tile for tile.

Same tiles, same full/partial split, same key permutation, for every method and mode with a fused planner,
odd N, Nq < Nk and GQA. Plus the rules the kernels implement, stated independently: ties go to the lower key
block; budget mode lists max(round(budget·(qb+1)), forced) tiles per row, the forced ones and the best-scoring.
"""

import math
import zlib

import pytest
import torch

import pbs
from pbs.scoring import causal_blocks, mean_pooled_block_probs

FUSED_CASES = [
    ("pbs", {"block_size": 32, "segment_size": 64}),
    ("pbs", {"block_size": 32, "segment_size": 64, "permute": "none"}),
    ("pbs", {"block_size": 32, "segment_size": 64, "share_permutation": "kv_head", "threshold": 0.7}),
    ("pbs", {"block_size": 32, "segment_size": 128, "threshold": 0.5, "force_sink": False}),
    ("pbs", {"block_size": 32, "segment_size": 64, "budget": 0.35}),
    ("pbs", {"block_size": 32, "segment_size": 64, "threshold": 1}),
    ("pbs", {"block_size": 32, "segment_size": 64, "permute": "query"}),
    ("pbs", {"block_size": 32, "segment_size": 64, "permute": "key+query", "share_permutation": "kv_head"}),
    ("pbs", {"block_size": 32, "segment_size": 64, "scoring": "antidiagonal", "stride": 4}),
    ("pbs", {"block_size": 32, "segment_size": 64, "scoring": "antidiagonal", "stride": 4, "permute": "key+query",
             "budget": 0.4}),
    ("meanpool", {"block_size": 32}),
    ("meanpool", {"block_size": 32, "threshold": 0.6, "force_sink": False, "force_current": False}),
    ("meanpool", {"block_size": 32, "budget": 0.3}),
    ("xattention", {"block_size": 32, "stride": 4, "threshold": 0.8}),
    ("xattention", {"block_size": 32, "stride": 4, "chunk_size": 64}),
    ("xattention", {"block_size": 32, "stride": 4, "accounting": "corrected", "budget": 0.4}),
    ("minference", {"block_size": 32, "last_q": 32, "vertical_size": 20, "slash_size": 60, "num_sink_columns": 4,
                    "num_local_diagonals": 10}),
    ("minference", {"block_size": 32, "last_q": 32, "budget": 0.35}),
    ("flexprefill", {"block_size": 32}),
    ("flexprefill", {"block_size": 32, "gamma": 0.8, "tau": 0.5, "include_crossing_tile": True, "query_mean": "real"}),
    ("flexprefill", {"block_size": 32, "tau": 10.0, "budget": 0.4}),
]
SHAPES = [  # (B, Hq, Hkv, Nq, Nk, D)
    (1, 4, 2, 333, 333, 32),
    (2, 2, 1, 150, 401, 16),
]


def _inputs(shape, seed, dtype=torch.float32):
    batch, hq, hkv, nq, nk, dim = shape
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, hq, nq, dim, generator=gen, dtype=dtype)
    k = torch.randn(batch, hkv, nk, dim, generator=gen, dtype=dtype)
    # a shared direction gives the block scores some spread, so thresholds select partial rows
    q[..., :4] += 2.0
    k[..., :4] += 2.0 * torch.rand(batch, hkv, nk, 1, generator=gen, dtype=dtype)
    return q, k


def _assert_same_plan(a, b):
    assert b.planner == "triton" and b.planner_note is None
    assert torch.equal(a.block_mask(), b.block_mask())
    assert torch.equal(a.full_kv_num_blocks, b.full_kv_num_blocks)
    assert torch.equal(a.kv_num_blocks, b.kv_num_blocks)
    for num, ia, ib in ((a.full_kv_num_blocks, a.full_kv_indices, b.full_kv_indices),
                        (a.kv_num_blocks, a.kv_indices, b.kv_indices)):
        valid = torch.arange(ib.shape[-1]) < num[..., None]
        width = min(ia.shape[-1], ib.shape[-1])
        assert torch.equal(torch.where(valid[..., :width], ia[..., :width].long(), 0),
                           torch.where(valid[..., :width], ib[..., :width].long(), 0))  # same ascending lists
    for pa, pb in ((a.key_perm, b.key_perm), (a.query_perm, b.query_perm)):
        assert (pa is None) == (pb is None)
        assert pa is None or torch.equal(pa, pb.long())
    for na, ia, nb, ib in ((a.col_num, a.col_indices, b.col_num, b.col_indices),
                           (a.win_num, a.win_starts, b.win_num, b.win_starts)):  # MInference columns and windows
        assert (na is None) == (nb is None)
        if na is not None:
            assert torch.equal(na, nb)
            width = int(na.max()) if na.numel() else 0
            valid = torch.arange(width) < na[..., None]
            assert torch.equal(torch.where(valid, ia[..., :width].long(), 0), torch.where(valid, ib[..., :width].long(), 0))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("method,kwargs", FUSED_CASES, ids=lambda x: str(x))
def test_fused_plan_equals_torch_plan(method, kwargs, shape):
    q, k = _inputs(shape, seed=zlib.crc32(f'{method}{kwargs}{shape}'.encode()) % 1000)
    a = pbs.plan(q, k, method, planner="torch", **kwargs)
    b = pbs.plan(q, k, method, planner="triton", **kwargs)
    _assert_same_plan(a, b)


def test_row_groups_select_as_one_launch(monkeypatch):
    # long sequences sort early rows at a narrower width (rows in groups); force the grouping at a small size
    from pbs.kernels import block_select

    monkeypatch.setattr(block_select, "_MIN_GROUP_BLOCKS", 4)
    q, k = _inputs((1, 2, 1, 600, 700, 16), seed=11)
    for method, kwargs in (("pbs", {"block_size": 32, "segment_size": 64}), ("meanpool", {"block_size": 32})):
        assert len(block_select._row_groups(19, 3, 22, 2)) > 1
        _assert_same_plan(pbs.plan(q, k, method, planner="torch", **kwargs),
                          pbs.plan(q, k, method, planner="triton", **kwargs))


def test_fused_block_means():
    from pbs.kernels.block_means import block_means_fused
    from pbs.permutation import block_means

    x = torch.randn(2, 3, 77, 24, dtype=torch.float16)
    for front in (0, 5, 31):
        torch.testing.assert_close(block_means_fused(x, 32, front=front, scale=0.5), block_means(x, 32, front) * 0.5)


def test_fused_plan_fp16_inputs():
    q, k = _inputs((1, 4, 2, 300, 300, 32), seed=5, dtype=torch.float16)
    kwargs = {"block_size": 32, "segment_size": 64}
    _assert_same_plan(pbs.plan(q, k, "pbs", planner="torch", **kwargs), pbs.plan(q, k, "pbs", planner="triton", **kwargs))


def test_ties_go_to_the_lower_key_block():
    # identical keys: every block score of a row ties, so the threshold takes the first tiles in index order
    nk, bs = 320, 32
    q = torch.randn(1, 2, nk, 16, generator=torch.Generator().manual_seed(1))
    k = torch.ones(1, 1, nk, 16)
    plan = pbs.plan(q, k, "meanpool", planner="triton", block_size=bs, threshold=0.5, force_sink=False,
                    force_current=False)
    mask = plan.block_mask()[0, 0]
    for row in range(mask.shape[0]):
        n = row + 1  # causal tiles, each with mass 1/n: take tiles while the mass before them is below 0.5
        want = sum(1 for i in range(n) if i / n < 0.5 - 1e-6)
        assert mask[row].nonzero().flatten().tolist() == list(range(want))
    _assert_same_plan(pbs.plan(q, k, "meanpool", planner="torch", block_size=bs, threshold=0.5, force_sink=False,
                               force_current=False), plan)


@pytest.mark.parametrize("planner", ["torch", "triton"])
def test_budget_lists_the_forced_and_the_best_tiles(planner):
    # meanpool with sink + diagonal forced: row r (query block r) lists max(round(budget*(r+1)), forced) tiles:
    # the forced ones and, among the rest, the highest mean-pooled scores
    q, k = _inputs((1, 2, 1, 480, 480, 16), seed=3)
    budget, bs = 0.4, 32
    plan = pbs.plan(q, k, "meanpool", planner=planner, block_size=bs, budget=budget)
    mask = plan.block_mask()
    probs = mean_pooled_block_probs(q, k, causal_blocks(480, 480, bs), bs, 1 / math.sqrt(16))
    for h in range(2):
        for row in range(mask.shape[2]):
            forced = {0, row}
            want = max(math.floor(budget * (row + 1) + 0.5), len(forced))
            picked = set(mask[0, h, row].nonzero().flatten().tolist())
            assert len(picked) == want and forced <= picked
            rest = sorted(set(range(row + 1)) - forced, key=lambda j: (-probs[0, h, row, j].item(), j))
            assert picked - forced == set(rest[: want - len(forced)])


def test_unsupported_settings_use_the_torch_planner_and_say_so():
    q, k = _inputs((1, 2, 1, 256, 256, 16), seed=0)
    plan = pbs.plan(q, k, "oracle", planner="triton", block_size=32, segment_size=64)
    assert plan.planner == "torch" and "has none" in plan.planner_note
    assert pbs.plan(q, k, "pbs", planner="torch", block_size=32, segment_size=64).planner_note is None


def test_plan_then_attend_equals_sparse_attention_and_is_reusable():
    q, k = _inputs((1, 4, 2, 300, 300, 32), seed=7)
    v = torch.randn_like(k)
    kwargs = {"block_size": 32, "segment_size": 64, "threshold": 0.8}
    plan = pbs.plan(q, k, "pbs", **kwargs)
    out1 = pbs.attend(q, k, v, plan)
    out2 = pbs.attend(q, k, v, plan)
    ref, stats = pbs.sparse_attention(q, k, v, "pbs", return_stats=True, **kwargs)
    assert torch.equal(out1, out2) and torch.equal(out1, ref)
    assert stats.planner == "torch" and abs(stats.density - plan.density()) < 1e-12
    text = repr(plan)
    assert f"density={plan.density():.4f}" in text and "block_size=32" in text and "key_perm=(1, 4, 300)" in text
    dense = pbs.plan(q, k, "full")
    assert isinstance(dense, pbs.Dense) and torch.allclose(pbs.attend(q, k, v, dense), pbs.sparse_attention(q, k, v, "full"))


def test_plan_and_attend_reject_bad_arguments():
    q, k = _inputs((1, 2, 1, 256, 256, 16), seed=0)
    with pytest.raises(ValueError, match="planner"):
        pbs.plan(q, k, "pbs", planner="cuda")
    plan = pbs.plan(q, k, "meanpool", block_size=32)
    q2, k2 = _inputs((1, 2, 1, 300, 300, 16), seed=0)
    with pytest.raises(ValueError, match="plan does not match"):
        pbs.attend(q2, k2, k2, plan)
    with pytest.raises(ValueError, match="plan must be"):
        pbs.attend(q, k, k, "dense")
    with pytest.raises(ValueError, match="budget"):
        pbs.plan(q, k, "pbs", budget=1.5)
