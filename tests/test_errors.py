"""Bad inputs raise ValueError naming the argument and its value; NaN/Inf inputs neither raise nor hang."""

import re
import signal

import pytest
import torch

import pbs


def t(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def good(n=64, b=1, hq=2, hkv=1, d=8):
    return t(b, hq, n, d, seed=1), t(b, hkv, n, d, seed=2), t(b, hkv, n, d, seed=3)


def raises(match):
    return pytest.raises(ValueError, match=match)


# ---------------------------------------------------------------- tensor checks


@pytest.mark.parametrize("which", ["q", "k", "v"])
@pytest.mark.parametrize("shape", [(2, 64, 8), (1, 1, 2, 64, 8)])
def test_wrong_rank(which, shape):
    q, k, v = good()
    args = {"q": q, "k": k, "v": v}
    args[which] = t(*shape)
    with raises(rf"{which} must have rank 4.*{which}\.shape={re.escape(str(shape))}"):
        pbs.sparse_attention(args["q"], args["k"], args["v"], method="full")


def test_mismatched_head_dim():
    q = t(1, 2, 64, 16)
    _, k, v = good(d=8)
    with raises(r"head_dim.*q\.shape\[-1\]=16.*k\.shape\[-1\]=8"):
        pbs.sparse_attention(q, k, v, method="full")


def test_mismatched_batch():
    q = t(2, 2, 64, 8)
    _, k, v = good(b=1)
    with raises(r"batch.*q\.shape\[0\]=2.*k\.shape\[0\]=1"):
        pbs.sparse_attention(q, k, v, method="full")


def test_hq_not_multiple_of_hkv():
    q = t(1, 3, 64, 8)
    k, v = t(1, 2, 64, 8), t(1, 2, 64, 8)
    with raises(r"multiple.*q\.shape\[1\]=3.*k\.shape\[1\]=2"):
        pbs.sparse_attention(q, k, v, method="full")


def test_nq_greater_than_nk():
    q = t(1, 2, 65, 8)
    _, k, v = good(n=64)
    with raises(r"Nq.*q\.shape\[2\]=65.*k\.shape\[2\]=64"):
        pbs.sparse_attention(q, k, v, method="full")


def test_mixed_dtypes():
    q, k, v = good()
    with raises(r"dtype.*q\.dtype=torch\.float32.*k\.dtype=torch\.float16"):
        pbs.sparse_attention(q, k.half(), v, method="full")


def test_k_v_shape_mismatch():
    q, k, _ = good()
    v = t(1, 1, 63, 8)
    with raises(r"k\.shape=\(1, 1, 64, 8\).*v\.shape=\(1, 1, 63, 8\)"):
        pbs.sparse_attention(q, k, v, method="full")


# ---------------------------------------------------------------- kwargs


@pytest.mark.parametrize("method", ["pbs", "meanpool", "xattention", "minference", "flexprefill", "oracle"])
@pytest.mark.parametrize("bad", [48, 8])
def test_block_size_invalid(method, bad):
    q, k, v = good()
    kwargs = {"block_size": bad}
    if method in ("pbs", "oracle"):
        kwargs["segment_size"] = 256
    if method in ("pbs", "xattention"):
        kwargs["stride"] = 8  # valid for every block size tested; the block_size check must fire
    with raises(rf"block_size.*block_size={bad}\b"):
        pbs.sparse_attention(q, k, v, method=method, **kwargs)


@pytest.mark.parametrize("method", ["pbs", "oracle"])
def test_segment_size_not_multiple_of_block_size(method):
    q, k, v = good()
    with raises(r"segment_size.*segment_size=40\b"):
        pbs.sparse_attention(q, k, v, method=method, block_size=16, segment_size=40)


@pytest.mark.parametrize("method", ["pbs", "meanpool", "xattention", "oracle"])
@pytest.mark.parametrize("bad", [0, -1, 0.0])
def test_threshold_non_positive(method, bad):
    q, k, v = good()
    with raises(rf"threshold.*threshold={re.escape(repr(bad))}$"):
        pbs.sparse_attention(q, k, v, method=method, threshold=bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_flexprefill_gamma_non_positive(bad):
    q, k, v = good()
    with raises(rf"gamma.*gamma={bad}$"):
        pbs.sparse_attention(q, k, v, method="flexprefill", gamma=bad)


def test_unknown_method():
    q, k, v = good()
    with raises(r"method.*'sparse-magic'"):
        pbs.sparse_attention(q, k, v, method="sparse-magic")


@pytest.mark.parametrize("method", ["pbs", "full", "meanpool"])
def test_unknown_kwarg(method):
    q, k, v = good()
    with raises(r"blocksize=64"):
        pbs.sparse_attention(q, k, v, method=method, blocksize=64)


def test_permute_invalid():
    q, k, v = good()
    with raises(r"permute.*permute='foo'"):
        pbs.sparse_attention(q, k, v, method="pbs", permute="foo")
    with raises(r"permute.*permute='query'"):  # oracle supports only "none" and "key"
        pbs.sparse_attention(q, k, v, method="oracle", permute="query")


def test_scoring_invalid():
    q, k, v = good()
    with raises(r"scoring.*scoring='foo'"):
        pbs.sparse_attention(q, k, v, method="pbs", scoring="foo")


def test_share_permutation_invalid():
    q, k, v = good()
    with raises(r"share_permutation.*share_permutation='foo'"):
        pbs.sparse_attention(q, k, v, method="pbs", share_permutation="foo")


def test_stride_invalid():
    q, k, v = good()
    with raises(r"stride.*stride=256\b"):
        pbs.sparse_attention(q, k, v, method="xattention", block_size=128, stride=256)
    with raises(r"stride.*stride=3\b"):
        pbs.sparse_attention(q, k, v, method="pbs", stride=3)


def test_backend_invalid():
    q, k, v = good()
    with raises(r"backend.*backend='cuda-magic'"):
        pbs.sparse_attention(q, k, v, method="pbs", backend="cuda-magic")


def test_causal_false():
    q, k, v = good()
    with raises(r"causal.*causal=False"):
        pbs.sparse_attention(q, k, v, method="full", causal=False)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_scale_invalid(bad):
    q, k, v = good()
    with raises(rf"scale.*scale={re.escape(repr(bad))}"):
        pbs.sparse_attention(q, k, v, method="full", scale=bad)


# ---------------------------------------------------------------- NaN / Inf inputs


@pytest.fixture
def no_hang():
    """Fail (instead of hanging) if the test body runs longer than 30 s (SIGALRM, main thread)."""

    def on_alarm(signum, frame):
        raise TimeoutError("sparse_attention did not return within 30 s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def method_kwargs(method):
    return {
        "full": {},
        "pbs": {"block_size": 16, "segment_size": 32},
        "oracle": {"block_size": 16, "segment_size": 32},
        "meanpool": {"block_size": 16},
        "xattention": {"block_size": 16},
        "minference": {"block_size": 16},
        "flexprefill": {"block_size": 16},
    }.get(method, {})


@pytest.mark.parametrize("method", pbs.available_methods())
@pytest.mark.parametrize("where", ["q", "k"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_inf_inputs_do_not_raise(method, where, bad, no_hang):
    n = 300
    b, hq, hkv, d = 1, 4, 2, 16
    q, k, v = t(b, hq, n, d, seed=5), t(b, hkv, n, d, seed=6), t(b, hkv, n, d, seed=7)
    target = q if where == "q" else k
    target[0, 0, 17] = bad  # one bad row
    target[0, 1, 200:] = bad  # a bad stretch at the end (the rows the estimators look at)
    out = pbs.sparse_attention(q, k, v, method=method, **method_kwargs(method))
    assert out.shape == q.shape and out.dtype == q.dtype
    # a query whose scores are all finite and that sees no bad key is unaffected: row 5 of head 2 (kv head 1)
    # sees keys 0..5 only, none of which is bad, and q[0, 2] is clean
    assert torch.isfinite(out[0, 2, 5]).all()


@pytest.mark.parametrize("method", pbs.available_methods())
def test_all_nan_inputs_do_not_raise(method, no_hang):
    n = 300
    q = torch.full((1, 2, n, 16), float("nan"))
    k = torch.full((1, 1, n, 16), float("nan"))
    v = t(1, 1, n, 16, seed=8)
    out = pbs.sparse_attention(q, k, v, method=method, **method_kwargs(method))
    assert out.shape == q.shape


# ---------------------------------------------------------------- edge cases: one rule for every method


@pytest.mark.parametrize("method", pbs.available_methods())
@pytest.mark.parametrize("shape_q,shape_kv", [((0, 2, 64, 8), (0, 1, 64, 8)), ((1, 0, 64, 8), (1, 1, 64, 8)),
                                              ((1, 0, 64, 8), (1, 0, 64, 8)), ((1, 2, 0, 8), (1, 1, 64, 8))])
def test_empty_inputs_give_an_empty_output_and_nan_density(method, shape_q, shape_kv):
    q, k, v = t(*shape_q), t(*shape_kv), t(*shape_kv)
    out, stats = pbs.sparse_attention(q, k, v, method, return_stats=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert stats.density != stats.density and "empty input" in stats.dense_fallback  # NaN: no tile at all
    plan = pbs.plan(q, k, method)
    assert isinstance(plan, pbs.Dense) and "empty input" in plan.reason
    assert pbs.attend(q, k, v, plan).shape == q.shape


def test_zero_kv_heads_with_query_heads():
    q, k, v = t(1, 2, 64, 8), t(1, 0, 64, 8), t(1, 0, 64, 8)
    with raises(r"multiple.*q\.shape\[1\]=2.*k\.shape\[1\]=0"):
        pbs.sparse_attention(q, k, v, method="pbs")


@pytest.mark.parametrize("method", ["full", "pbs"])
def test_head_dim_zero(method):
    q, k, v = t(1, 2, 64, 0), t(1, 1, 64, 0), t(1, 1, 64, 0)
    with raises(r"head_dim must be >= 1.*q\.shape\[-1\]=0"):
        pbs.sparse_attention(q, k, v, method=method)
    with raises(r"head_dim must be >= 1"):
        pbs.plan(q, k, method)


@pytest.mark.parametrize("method", ["full", "pbs", "xattention"])
def test_meta_tensors(method):
    q, k, v = (torch.empty(1, h, 512, 8, device="meta") for h in (2, 1, 1))
    with raises(r"q\.device=meta"):
        pbs.sparse_attention(q, k, v, method=method)
    with raises(r"q\.device=meta"):
        pbs.plan(q, k, method)


@pytest.mark.parametrize("arg", ["backend", "planner"])
def test_triton_on_the_cpu_without_the_interpreter(arg, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = good()
    with raises(rf"{arg}='triton' runs on CUDA devices.*q\.device=cpu.*{arg}='torch'"):
        pbs.sparse_attention(q, k, v, method="xattention", block_size=16, **{arg: "triton"})
    if arg == "planner":
        with raises(r"planner='triton'"):
            pbs.plan(q, k, "pbs", planner="triton")
    else:
        with raises(r"backend='triton'"):
            pbs.attend(q, k, v, pbs.plan(q, k, "full"), backend="triton")
    # auto stays usable on the CPU
    assert pbs.sparse_attention(q, k, v, method="xattention", block_size=16).shape == q.shape
