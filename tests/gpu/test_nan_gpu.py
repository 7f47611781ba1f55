"""NaN/Inf propagation on the GPU (CUDA only, ``pytest -m gpu``): the fused planners and our Triton kernel give
SDPA's NaN pattern, element for element, for every method (the CPU twin under the interpreter is
``tests/test_nan_propagation.py``; ``tl.maximum`` and friends may treat NaN differently on the GPU)."""

import pytest
import torch

import pbs

from ..test_nan_propagation import KWARGS, VARIANTS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run `pytest -m gpu` on a GPU machine"),
]

CASES = {**{m: (m, kw) for m, kw in KWARGS.items()}, **VARIANTS}


@pytest.mark.parametrize("where", ["nan_key", "inf_key", "nan_last_query"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_nan_pattern_equals_sdpa_on_the_gpu(name, where):
    method, kwargs = CASES[name]
    g = torch.Generator(device="cuda").manual_seed(3)
    n, d = 100, 16
    q, k, v = (torch.randn(1, h, n, d, generator=g, device="cuda", dtype=torch.float16) for h in (2, 1, 1))
    if where == "nan_key":
        k[0, 0, 41] = float("nan")
    elif where == "inf_key":
        k[0, 0, 70] = float("inf")
    else:
        q[0, 0, n - 2] = float("nan")
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = pbs.sparse_attention(q, k, v, method, backend="triton", planner="triton", short_seq_policy=False, **kwargs)
    assert torch.equal(out.isnan(), ref.isnan())
