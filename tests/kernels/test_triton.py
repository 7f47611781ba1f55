"""The Triton kernel (under TRITON_INTERPRET=1 on CPU) equals the torch reference on the same plan.

fp32 and fp16 only: the interpreter computes bf16 dots wrongly; bf16 is checked on the GPU (scripts/gpu_check.py).
"""

from types import SimpleNamespace

import pytest
import torch

import pbs
from pbs.backends import run_plan
from pbs.config import make_config
from pbs.kernels.block_sparse_attn import KernelConfig, pbs_attn_fwd, permuted_kv_copy
from pbs.methods import get_method
from pbs.synthetic import structured_qkv
from tests.reference import causal_attention_f64, rel_err

PLANS = [
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.7, permute="key")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.7, permute="query")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.7, permute="key+query")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.7, permute="none")),
    ("pbs", dict(block_size=32, segment_size=64, threshold=0.7, share_permutation="kv_head")),
    ("pbs", dict(block_size=16, segment_size=32, threshold=0.7, scoring="antidiagonal", stride=4)),
    ("meanpool", dict(block_size=16, threshold=0.6)),
    ("xattention", dict(block_size=16, stride=4, threshold=0.6, chunk_size=64)),
    ("minference", dict(block_size=16, vertical_size=30, slash_size=50)),
    ("minference", dict(block_size=16, vertical_size=30, slash_size=50, slash_layout="aligned")),
    ("flexprefill", dict(block_size=16, gamma=0.9)),
    ("oracle", dict(block_size=16, segment_size=32, threshold=0.7, permute="key")),
]


def _plan(method, kwargs, q, k, scale):
    spec = get_method(method)
    return spec.plan(q, k, make_config(spec.config_cls, kwargs), scale)


@pytest.mark.parametrize("method,kwargs", PLANS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(PLANS)])
@pytest.mark.parametrize("heads", [(4, 2), (2, 2)], ids=["gqa", "mha"])
@pytest.mark.parametrize("nq,nk", [(203, 203), (77, 203)])
def test_triton_equals_reference_on_same_plan(method, kwargs, heads, nq, nk):
    q, k, v = structured_qkv(2, heads[0], heads[1], nk, 32, seed=nq)
    q = q[:, :, nk - nq :].contiguous()
    scale = 32**-0.5
    plan = _plan(method, kwargs, q, k, scale)
    out = run_plan(q, k, v, plan, scale, "triton")
    ref = run_plan(q, k, v, plan, scale, "torch")
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("dim", [64, 128])
def test_triton_fp16_dense_within_twice_sdpa_error(dim):
    q, k, v = (t.half() for t in structured_qkv(1, 4, 2, 150, dim, seed=dim))
    ref = causal_attention_f64(q, k, v)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = pbs.sparse_attention(q, k, v, method="pbs", backend="triton", threshold=1, block_size=32, segment_size=64)
    assert out.dtype == torch.float16
    assert rel_err(out, ref) <= 2 * rel_err(sdpa, ref) + 1e-4


def test_triton_head_dim_not_power_of_two():
    q, k, v = structured_qkv(1, 2, 1, 70, 48, seed=1)
    out = pbs.sparse_attention(q, k, v, method="meanpool", backend="triton", threshold=1, block_size=16)
    assert rel_err(out, causal_attention_f64(q, k, v)) <= 1e-5


def test_triton_auto_is_torch_on_cpu():
    q, k, v = structured_qkv(1, 2, 1, 64, 32, seed=1)
    _, stats = pbs.sparse_attention(q, k, v, method="meanpool", block_size=16, return_stats=True)
    assert stats.backend == "torch"
    _, stats = pbs.sparse_attention(q, k, v, method="meanpool", block_size=16, backend="triton", return_stats=True)
    assert stats.backend == "triton"


VARIANTS = {
    "descriptors": KernelConfig(kv_descriptors=True),
    "permuted-copy": KernelConfig(permuted_copy=True),
    "copy+descriptors": KernelConfig(permuted_copy=True, kv_descriptors=True),
    "copy-chunked": KernelConfig(permuted_copy=True, copy_budget=0.5),
    "copy-chunked-gqa-rows": KernelConfig(permuted_copy=True, copy_budget=0.5, schedule="gqa_rows"),
    "heavy-first": KernelConfig(schedule="heavy_first"),
    "rows-reversed": KernelConfig(schedule="rows_reversed"),
    "gqa-rows": KernelConfig(schedule="gqa_rows"),
    "q-descriptors": KernelConfig(q_descriptors=True),
    "k-row-major": KernelConfig(k_row_major=True, kv_descriptors=False),
    "pointers": KernelConfig(kv_descriptors=False),
    "unfolded-scale": KernelConfig(fold_scale=False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("method,kwargs", [PLANS[0], PLANS[2], PLANS[4], PLANS[8], PLANS[9]],
                         ids=["pbs-key", "pbs-key+query", "pbs-kv-head", "minference", "minference-aligned"])
@pytest.mark.parametrize("nq,nk", [(77, 203), (203, 203)])
def test_kernel_variants_equal_reference(variant, method, kwargs, nq, nk):
    """Every launch variant the benchmarks compare computes the same function (odd N, Nq < Nk, GQA, fp32)."""
    q, k, v = structured_qkv(2, 4, 2, nk, 32, seed=7)
    q = q[:, :, nk - nq :].contiguous()
    k = k.transpose(1, 2).contiguous().transpose(1, 2)  # K strided as a (B, N, H, D) cache view
    scale = 32**-0.5
    plan = _plan(method, kwargs, q, k, scale)
    out = pbs_attn_fwd(q, k, v, plan, scale, VARIANTS[variant])
    ref = run_plan(q, k, v, plan, scale, "torch")
    assert (out - ref).abs().max().item() <= 1e-4


def test_permuted_kv_copy_gathers_rows():
    k = torch.randn(2, 2, 50, 32)
    perm = torch.stack([torch.randperm(50) for _ in range(2 * 4)]).view(2, 4, 50).to(torch.int32)
    out = permuted_kv_copy(k, perm)
    ref = torch.stack([torch.stack([k[b, h // 2, perm[b, h].long()] for h in range(4)]) for b in range(2)])
    assert out.is_contiguous() and torch.equal(out, ref)


def test_permuted_kv_copy_of_a_head_chunk():
    """A chunk of permutation heads (head_offset) gathers from the KV heads of its absolute head index."""
    k = torch.randn(1, 2, 40, 16)
    perm = torch.stack([torch.randperm(40) for _ in range(4)]).view(1, 4, 40).to(torch.int32)
    out = permuted_kv_copy(k, perm[:, 2:], head_offset=2, group=2)
    ref = torch.stack([k[0, 1, perm[0, h].long()] for h in (2, 3)])[None]
    assert torch.equal(out, ref)


@pytest.mark.parametrize("share,heads,kv_heads,budget,expected", [
    ("q_head", 32, 8, 0.25, 2), ("kv_head", 32, 8, 0.25, 8), ("q_head", 28, 4, 0.25, 1), ("q_head", 4, 2, 0.1, 1),
])
def test_copy_chunk_respects_the_budget(share, heads, kv_heads, budget, expected):
    """Copies of one chunk (K and V per permutation head, each 1/kv_heads of K+V) stay within budget × (K+V)."""
    from pbs.kernels.block_sparse_attn import copy_chunk_heads

    perm_heads = heads if share == "q_head" else kv_heads
    plan = SimpleNamespace(key_perm=torch.zeros(1, perm_heads, 8))
    chunk = copy_chunk_heads(plan, heads, kv_heads, budget)
    assert chunk == expected
    copies = chunk // (heads // perm_heads)
    assert copies == 1 or copies / kv_heads <= budget


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("block_size", [64, 128])
def test_gpu_defaults_fit_hopper_shared_memory(dtype, dim, block_size):
    """Q tile + (K and V tiles) x stages of the GPU defaults stay within an H100/H200 block's 227 KiB of shared
    memory, and the tiles divide the plan's block size."""
    from pbs.kernels.block_sparse_attn import kernel_config

    plan = SimpleNamespace(block_size=block_size)
    cfg = kernel_config(plan, dim, on_gpu=True, dtype=dtype)
    elt = torch.tensor([], dtype=dtype).element_size()
    smem = (cfg.block_m * dim + cfg.num_stages * 2 * cfg.block_n * dim) * elt
    assert smem <= 227 * 1024, (cfg, smem)
    assert block_size % cfg.block_m == 0 and block_size % cfg.block_n == 0
