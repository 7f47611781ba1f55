"""The FlexAttention backend equals the torch reference on the same plan, and dense causal attention at threshold 1.

On CPU ``flex_attend`` runs eager FlexAttention with the block mask emulated inside ``mask_mod`` (see
pbs/kernels/flex.py); the compiled CUDA path is checked on the GPU.
"""

import pytest
import torch

import pbs
from pbs.backends import run_plan
from pbs.config import make_config
from pbs.kernels import flex
from pbs.methods import get_method
from pbs.plan import SparsePlan
from pbs.reference import attend
from pbs.synthetic import structured_qkv
from tests.reference import causal_attention_f64, rel_err

# small blocks so that 203 tokens span many blocks and segments; thresholds < 1 so the plans are really sparse
SMALL = {
    "pbs": dict(block_size=16, segment_size=32, threshold=0.6),
    "meanpool": dict(block_size=16, threshold=0.6),
    "xattention": dict(block_size=16, stride=4, threshold=0.6),
    "minference": dict(block_size=16, vertical_size=30, slash_size=50),
    "flexprefill": dict(block_size=16, gamma=0.9),
    "oracle": dict(block_size=16, segment_size=32, threshold=0.6),
}
VARIANTS = {
    "pbs": [dict(permute=p) for p in ("key", "query", "key+query", "none")] + [dict(share_permutation="kv_head")],
    "oracle": [dict(permute="none"), dict(permute="key")],
}
PLANS = [(m, {**SMALL[m], **extra}) for m in sorted(SMALL) for extra in VARIANTS.get(m, [{}])]
HEADS = {"gqa": (1, 8, 2), "mha": (2, 4, 4)}  # (batch, q heads, kv heads)


def _plan(method, kwargs, q, k, scale):
    spec = get_method(method)
    return spec.plan(q, k, make_config(spec.config_cls, kwargs), scale)


def _inputs(layout, nq, nk, seed):
    batch, hq, hkv = HEADS[layout]
    q, k, v = structured_qkv(batch, hq, hkv, nk, 32, seed=seed)
    return q[:, :, nk - nq :].contiguous(), k, v


def test_every_sparse_method_is_covered():
    assert set(SMALL) == set(pbs.available_methods()) - {"full"}


@pytest.mark.parametrize("method,kwargs", PLANS, ids=[f"{m}-{'-'.join(map(str, kw.values()))}" for m, kw in PLANS])
@pytest.mark.parametrize("layout", list(HEADS))
@pytest.mark.parametrize("nq,nk", [(203, 203), (77, 203)], ids=["nq=nk=203", "nq=77,nk=203"])
def test_flex_equals_reference_on_same_plan(method, kwargs, layout, nq, nk):
    q, k, v = _inputs(layout, nq, nk, seed=nq + len(PLANS))
    scale = 32**-0.5
    plan = _plan(method, kwargs, q, k, scale)
    assert isinstance(plan, SparsePlan)
    assert plan.density() < 1  # a sparse plan: a wrong block mask would show
    out = run_plan(q, k, v, plan, scale, "flex")
    ref = attend(q, k, v, plan, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("permute", ["key", "query", "key+query", "none"])
@pytest.mark.parametrize("nq,nk", [(203, 203), (77, 203)], ids=["nq=nk=203", "nq=77,nk=203"])
def test_flex_dense_equals_f64_causal(permute, nq, nk):
    q, k, v = _inputs("gqa", nq, nk, seed=nk - nq)
    out = pbs.sparse_attention(q, k, v, method="pbs", backend="flex", threshold=1, block_size=16, segment_size=32,
                               permute=permute)
    ref = causal_attention_f64(q, k, v)
    assert out.dtype == q.dtype
    assert (out.double() - ref).abs().max().item() <= 1e-4
    assert rel_err(out, ref) <= 1e-5


def test_flex_full_method_fewer_queries():
    """method="full" with Nq < Nk runs a dense plan (block 128, unaligned q_offset) on the flex backend."""
    q, k, v = _inputs("gqa", 77, 203, seed=5)
    out = pbs.sparse_attention(q, k, v, method="full", backend="flex")
    assert (out.double() - causal_attention_f64(q, k, v)).abs().max().item() <= 1e-4


def test_flex_rows_with_no_visible_key_are_zero():
    q, k, v = _inputs("gqa", 77, 203, seed=7)
    rows = 203 // 16 + 1 - (203 - 77) // 16
    selected = torch.ones(1, 8, rows, 13, dtype=torch.bool)
    selected[:, :, 2] = False  # plan row 2 lists no tile
    plan = SparsePlan.from_block_mask(selected, block_size=16, seq_len_q=77, seq_len_kv=203, num_kv_heads=2)
    out = run_plan(q, k, v, plan, 0.2, "flex")
    ref = attend(q, k, v, plan, 0.2)
    assert (out - ref).abs().max().item() <= 1e-4
    empty = (torch.arange(77) + 126) // 16 == (203 - 77) // 16 + 2
    assert empty.any() and torch.equal(out[:, :, empty], torch.zeros_like(out[:, :, empty]))


def test_flex_minference_lookup_too_large_raises(monkeypatch):
    q, k, v = _inputs("gqa", 203, 203, seed=1)
    plan = _plan("minference", SMALL["minference"], q, k, 32**-0.5)
    assert plan.col_indices is not None
    monkeypatch.setattr(flex, "_MAX_LOOKUP_ELEMENTS", 1000)
    with pytest.raises(ValueError, match='flex cannot run this MInference plan at this size.*backend="triton"'):
        run_plan(q, k, v, plan, 32**-0.5, "flex")
