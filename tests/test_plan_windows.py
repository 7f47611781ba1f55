"""Key windows in a SparsePlan (MInference's unaligned slash windows): every backend attends exactly to the keys
the plan lists, checked against a float64 softmax over those keys written here."""

import pytest
import torch

from pbs.backends import run_plan
from pbs.plan import SparsePlan, num_blocks


def random_window_plan(batch, heads, nq, nk, bs, seed):
    """Per row: disjoint windows at random unaligned starts (some running past Nk), random columns outside them,
    and a few aligned tiles in a part of the key range the windows leave alone."""
    gen = torch.Generator().manual_seed(seed)
    first = (nk - nq) // bs
    rows, nkb = num_blocks(nk, bs) - first, num_blocks(nk, bs)
    tiles = torch.zeros(batch, heads, rows, nkb, dtype=torch.bool)
    starts = torch.zeros(batch, heads, rows, 8, dtype=torch.long)
    s_valid = torch.zeros_like(starts, dtype=torch.bool)
    cols = torch.zeros(batch, heads, rows, 6, dtype=torch.long)
    c_valid = torch.zeros_like(cols, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            for r in range(rows):
                end = min((first + r + 1) * bs, nk)
                tiles[b, h, r, 0] = end > 2 * bs  # block 0 as an aligned tile; windows start after it
                pos, w = (2 * bs if tiles[b, h, r, 0] else 0), 0
                covered = set(range(bs)) if tiles[b, h, r, 0] else set()
                while pos < end and w < 8:
                    pos += int(torch.randint(0, bs, (1,), generator=gen))
                    if pos >= end:
                        break
                    starts[b, h, r, w], s_valid[b, h, r, w] = pos, True
                    covered |= set(range(pos, pos + bs))
                    pos, w = pos + bs, w + 1
                free = [j for j in range(end) if j not in covered]
                pick = torch.randperm(len(free), generator=gen)[:6].tolist()
                for c, i in enumerate(sorted(pick)):
                    cols[b, h, r, c], c_valid[b, h, r, c] = free[i], True
    return SparsePlan.from_block_mask(tiles, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=1,
                                      col_indices=cols, col_valid=c_valid, win_starts=starts, win_valid=s_valid)


def listed_attention_f64(q, k, v, plan, scale):
    """Softmax over the keys the plan lists for each query's row (and at or before the query), in float64."""
    _batch, heads, nq, _ = q.shape
    nk, bs, first = k.shape[2], plan.block_size, plan.first_q_block
    counts = plan.key_counts()  # (B, H, R, Nk)
    pos = torch.arange(nq) + nk - nq
    allowed = counts[:, :, pos // bs - first] > 0  # (B, H, Nq, Nk)
    allowed &= torch.arange(nk)[None, :] <= pos[:, None]
    group = heads // k.shape[1]
    kk, vv = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    scores = (q.double() @ kk.transpose(-1, -2) * scale).masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)
    return probs @ vv


@pytest.mark.parametrize("nq, nk", [(203, 203), (77, 203), (256, 256)])
@pytest.mark.parametrize("heads", [(4, 2), (2, 2)], ids=["gqa", "mha"])
def test_window_plan_contract_and_reference(nq, nk, heads):
    q, k, v = (torch.randn(2, h, n, 32, generator=torch.Generator().manual_seed(nq + i))
               for i, (h, n) in enumerate([(heads[0], nq), (heads[1], nk), (heads[1], nk)]))
    plan = random_window_plan(2, heads[0], nq, nk, 16, seed=nq)
    assert int(plan.key_counts().max()) == 1
    assert bool((plan.win_starts[plan.win_num > 0] % 16 != 0).any())  # unaligned starts are exercised
    # a window is one tile: tiles = aligned tiles + windows + ceil(columns / 16) per row
    expected = plan.full_kv_num_blocks.sum(-1) + plan.kv_num_blocks.sum(-1) + plan.win_num.sum(-1)
    expected = expected.double() + torch.ceil(plan.col_num.double() / 16).sum(-1)
    assert torch.equal(plan.tiles_per_head(), expected)
    out = run_plan(q, k, v, plan, 0.2, "torch")
    assert (out.double() - listed_attention_f64(q, k, v, plan, 0.2)).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["triton", "flex"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("nq, nk, bs", [(203, 203, 16), (77, 203, 16), (203, 203, 64)])
def test_window_plan_backends_equal_reference(backend, dtype, nq, nk, bs):
    gen = torch.Generator().manual_seed(nk - nq)
    q = torch.randn(1, 4, nq, 32, generator=gen).to(dtype)
    k, v = (torch.randn(1, 2, nk, 32, generator=gen).to(dtype) for _ in range(2))
    plan = random_window_plan(1, 4, nq, nk, bs, seed=nq + 1)
    out = run_plan(q, k, v, plan, 0.2, backend)
    ref = listed_attention_f64(q, k, v, plan, 0.2)
    assert out.dtype == dtype
    assert (out.double() - ref).abs().max() < (1e-5 if dtype == torch.float32 else 3e-3)
