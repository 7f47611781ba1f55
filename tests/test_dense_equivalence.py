"""Every method at its densest setting equals causal attention (fp32 vs a float64 reference, fp16 vs SDPA's own error)."""

import itertools

import pytest
import torch

import pbs
from tests.reference import DENSEST, causal_attention_f64, rel_err

PBS_VARIANTS = [
    dict(permute="key"),
    dict(permute="query"),
    dict(permute="key+query"),
    dict(permute="none"),
    dict(scoring="antidiagonal", stride=4),
    dict(share_permutation="kv_head"),
]
LENGTHS = [1, 17, 128, 255, 256, 257, 1000, 2053]
HEADS = [(4, 4), (8, 2)]
HEAD_DIMS = [32, 64, 128]


def _inputs(batch, hq, hkv, nq, nk, dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, hq, nq, dim, generator=gen).to(dtype)
    k = torch.randn(batch, hkv, nk, dim, generator=gen).to(dtype)
    v = torch.randn(batch, hkv, nk, dim, generator=gen).to(dtype)
    return q, k, v


def _cases():
    """Every method × length × head_dim, with batch and head layout cycling so each value is covered."""
    for i, (method, n, dim) in enumerate(itertools.product(DENSEST, LENGTHS, HEAD_DIMS)):
        batch = 1 + i % 2
        hq, hkv = HEADS[(i // 2) % 2]
        yield pytest.param(method, n, dim, batch, hq, hkv, id=f"{method}-N{n}-D{dim}-B{batch}-H{hq}x{hkv}")


@pytest.mark.parametrize("method,n,dim,batch,hq,hkv", list(_cases()))
def test_fp32_dense_equivalence(method, n, dim, batch, hq, hkv):
    q, k, v = _inputs(batch, hq, hkv, n, n, dim, torch.float32, seed=n * 7 + dim)
    out = pbs.sparse_attention(q, k, v, method=method, **DENSEST[method])
    assert out.shape == q.shape and out.dtype == q.dtype
    assert rel_err(out, causal_attention_f64(q, k, v)) <= 1e-5


@pytest.mark.parametrize("variant", PBS_VARIANTS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
@pytest.mark.parametrize("n", [255, 257, 1000])
def test_fp32_dense_equivalence_pbs_variants(variant, n):
    q, k, v = _inputs(2, 8, 2, n, n, 64, torch.float32, seed=n)
    out = pbs.sparse_attention(q, k, v, method="pbs", **{**DENSEST["pbs"], **variant})
    assert rel_err(out, causal_attention_f64(q, k, v)) <= 1e-5


@pytest.mark.parametrize("method", list(DENSEST))
@pytest.mark.parametrize("nq,nk", [(1, 300), (17, 300), (100, 1000), (255, 2053)])
def test_fp32_dense_equivalence_fewer_queries(method, nq, nk):
    """Nq < Nk: the queries are the last Nq positions (bottom-right causal alignment)."""
    q, k, v = _inputs(2, 8, 2, nq, nk, 64, torch.float32, seed=nq + nk)
    out = pbs.sparse_attention(q, k, v, method=method, **DENSEST[method])
    assert out.shape == q.shape
    assert rel_err(out, causal_attention_f64(q, k, v)) <= 1e-5


@pytest.mark.parametrize("method", list(DENSEST))
@pytest.mark.parametrize("n", [257, 1000])
def test_fp16_within_twice_sdpa_error(method, n):
    """fp16: our error vs float64 is at most 2× that of fp16 SDPA (math backend on CPU) vs float64."""
    q, k, v = _inputs(1, 8, 2, n, n, 64, torch.float16, seed=n + 1)
    ref = causal_attention_f64(q, k, v)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = pbs.sparse_attention(q, k, v, method=method, **DENSEST[method])
    assert out.dtype == torch.float16
    assert rel_err(out, ref) <= 2 * rel_err(sdpa, ref)
