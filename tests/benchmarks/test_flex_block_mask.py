"""A plan's FlexAttention BlockMask built once (``pbs.kernels.flex.plan_block_mask``) and FlexAttention on it
(``attend_block_mask``): the tiles are the plan's, and the output is the torch reference's on the same plan."""

import pytest
import torch

from benchmarks.inputs import random_block_plan
from pbs.backends import run_plan
from pbs.kernels.flex import attend_block_mask, plan_block_mask
from pbs.plan import SparsePlan


@pytest.mark.parametrize("nq,nk", [(256, 256), (130, 320), (128, 320)])
def test_block_mask_is_the_plan_and_attention_is_the_reference(nq, nk):
    torch.manual_seed(0)
    bs, heads, kv_heads = 32, 4, 2
    q = torch.randn(2, heads, nq, 16, dtype=torch.float64)
    k, v = torch.randn(2, 2, kv_heads, nk, 16, dtype=torch.float64).unbind(0)
    rows = (nk + bs - 1) // bs - (nk - nq) // bs
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(2, heads, rows, (nk + bs - 1) // bs, generator=gen) < 0.4
    plan = SparsePlan.from_block_mask(mask, block_size=bs, seq_len_q=nq, seq_len_kv=nk, num_kv_heads=kv_heads)
    if plan.q_offset % bs:
        with pytest.raises(ValueError, match="q_offset"):
            plan_block_mask(plan)
        return
    block_mask = plan_block_mask(plan)
    assert torch.equal(block_mask.to_dense().bool()[:, :, : plan.num_rows], plan.block_mask())
    eager = plan_block_mask(plan, compiled=False)  # eager FlexAttention ignores tiles: mask_mod applies them
    out = attend_block_mask(q, k, v, eager, 0.25, compiled=False)
    ref = run_plan(q, k, v, plan, 0.25, "torch")
    seen = plan.block_mask().any(-1).repeat_interleave(bs, -1)[..., plan.q_offset % bs:][..., :nq]
    torch.testing.assert_close(out[seen], ref[seen], rtol=1e-10, atol=1e-10)  # rows that see no key: NaN vs 0


def test_random_block_plan_and_its_block_mask():
    plan = random_block_plan(2, 4, 2, 4096, 64, 0.22, seed=1)
    assert torch.equal(plan_block_mask(plan).to_dense().bool(), plan.block_mask())


def test_plans_that_rearrange_the_inputs_are_refused():
    import pbs

    q = torch.randn(1, 2, 512, 16)
    k = torch.randn(1, 1, 512, 16)
    permuted = pbs.plan(q, k, "pbs", block_size=64, segment_size=128)
    gathered = pbs.plan(q, k, "minference", block_size=64, vertical_size=70, slash_size=100, last_q=64)
    assert permuted.key_perm is not None and (gathered.col_indices is not None or gathered.win_starts is not None)
    for plan in (permuted, gathered):
        with pytest.raises(ValueError, match="without permutations, gathered columns or key windows"):
            plan_block_mask(plan)
