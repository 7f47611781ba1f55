"""Kernel benchmark: dense attention backends, our kernel vs FlexAttention on shared block masks, methods end to end.

Three sections per sequence length, on structured synthetic inputs (``pbs.synthetic``; built on the device):

* ``dense``: SDPA with each backend (cuDNN, flash, memory-efficient; causal, GQA-native), FlexAttention causal
  (compiled) and ours on a plan that lists every causal tile (``ours_dense``).
* ``block_sparse``: random causal block masks at fixed densities (diagonal tile and block 0 always on), the same
  plan run by our kernel and by FlexAttention.
* ``methods``: each method end to end (planning + our kernel), with the paper's Table 7 breakdown: permutation,
  selection (planning minus permutation), attention on the prebuilt plan, total, overhead.

Timing: CUDA events around each call after warm-up, L2 flushed before each rep (outside the timed region, as
``triton.testing.do_bench``), median and p10/p90 of the reps; on CPU ``time.perf_counter``. Speedups are against
the fastest dense SDPA backend at the same sequence length in the same run. No hydra import here: the Hydra app
is ``experiments/bench_kernels.py`` (config ``conf/bench_kernels.yaml``, mirrored by ``DEFAULT_CONFIG``).
"""

from __future__ import annotations

import copy
import csv
import gc
import inspect
import math
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .backends import dense_plan, run_dense, run_plan
from .config import make_config
from .methods import Dense, get_method
from .plan import SparsePlan, num_blocks
from .provenance import provenance  # noqa: F401  (re-exported for the benchmark app)
from .synthetic import Structure, structured_qkv

COLUMNS = [
    "section", "variant", "seq_len", "batch", "q_heads", "kv_heads", "head_dim", "dtype", "density",
    "median_ms", "p10_ms", "p90_ms", "tflops_dense_equiv", "tflops_computed", "peak_mem_gib",
    "permutation_ms", "selection_ms", "plan_ms", "attention_ms", "total_ms", "overhead_pct",
    "speedup_vs_fastest_dense", "plan_peak_gib", "planner", "error",
]
_INT_COLUMNS = {"seq_len", "batch", "q_heads", "kv_heads", "head_dim"}
_STR_COLUMNS = {"section", "variant", "dtype", "planner", "error"}

SDPA_BACKENDS = {
    "sdpa_cudnn": "CUDNN_ATTENTION", "sdpa_flash": "FLASH_ATTENTION", "sdpa_efficient": "EFFICIENT_ATTENTION",
}
DENSE_VARIANTS = (*SDPA_BACKENDS, "flex_causal", "ours_dense")
KV_REPEAT_SUFFIX = "_kvrep"
TARGET_LONG = (32768, 65536, 131072)  # "32K–128K" in the targets
TARGET_MAX = 131072  # "at 128K"

# Mirrors conf/bench_kernels.yaml (a test checks they agree); run_benchmark fills missing keys from here.
DEFAULT_CONFIG: dict = {
    "seq_lens": [4096, 8192, 16384, 32768, 65536, 131072],
    "batch": 1,
    "q_heads": 32,
    "kv_heads": 8,
    "head_dim": 128,
    "dtype": "bfloat16",
    "device": "cuda",
    "seed": 0,
    "kernel_backend": "triton",
    "planner": "auto",
    "sections": ["dense", "block_sparse", "methods"],
    "dense_variants": list(DENSE_VARIANTS),
    "kv_repeat_fallback": True,
    "flex_compile": True,
    "block_size": 128,
    "densities": [0.1, 0.22, 0.4, 0.6],
    "warmup": 5,
    "reps": 20,
    "max_seconds_per_measurement": 10.0,
    "flush_l2": True,
    "structure": {"sink_logit": 10.0, "local_logit": 6.0, "heavy_logit": 12.0, "heavy_fraction": 0.15, "noise": 1.0,
                  "recency_logit": 8.0},
    "common_method_kwargs": {"block_size": None, "segment_size": None},
    "methods": {
        "pbs": {"method": "pbs", "kwargs": {}},
        "pbs_permute_none": {"method": "pbs", "kwargs": {"permute": "none"}},
        "pbs_antidiagonal": {"method": "pbs", "kwargs": {"scoring": "antidiagonal"}},
        "meanpool": {"method": "meanpool", "kwargs": {}},
        "xattention": {"method": "xattention", "kwargs": {}},
        "minference": {"method": "minference", "kwargs": {}},
        "flexprefill": {"method": "flexprefill", "kwargs": {}},
    },
    "out_dir": "results/kernels",
    "merge": False,
    "progress": True,
}


# ---------------------------------------------------------------------------------------------------------------
# timing and memory


def _on_cuda(device) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def time_cuda(fn: Callable[[], object], warmup: int = 5, reps: int = 20, *, device=None, flush_l2: bool = True,
              max_seconds: float | None = None, min_reps: int = 5) -> dict:
    """Median / p10 / p90 milliseconds of ``fn()`` over ``reps`` calls after ``warmup`` calls.

    CUDA: one pair of events around each call, the L2 cache flushed (a 256 MiB memset) before each call outside
    the timed region, synchronized before and after; inputs are not rotated. CPU (or ``device`` not CUDA):
    ``time.perf_counter`` per call. ``max_seconds`` caps the timed reps (never below ``min_reps``) from the last
    warm-up call's time, so slow variants do not take minutes, and stops the warm-up once it has taken a quarter
    of ``max_seconds`` (after at least one call); the reps actually used are returned as ``reps``.
    """
    cuda = _on_cuda(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    last = spent = 0.0
    for _ in range(max(warmup, 1)):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        last = time.perf_counter() - t0
        spent += last
        if max_seconds is not None and spent > max_seconds / 4:
            break
    n = reps
    if max_seconds is not None and last > 0:
        n = max(min(reps, min_reps), min(reps, int(max_seconds / last)))
    n = max(n, 1)
    times = []
    if cuda:
        cache = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda") if flush_l2 else None
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        sync()
        for i in range(n):
            if cache is not None:
                cache.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        sync()
        times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
        del cache
    else:
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "p10_ms": _percentile(times, 10), "p90_ms": _percentile(times, 90),
            "reps": n}


def _percentile(values: list[float], pct: float) -> float:
    """Linear-interpolation percentile (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * pct / 100
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def peak_mem_gib(fn: Callable[[], object], device=None) -> float:
    """Peak CUDA memory of one ``fn()`` above what was allocated before it, in GiB (output included); NaN on CPU."""
    if not _on_cuda(device):
        return float("nan")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return (peak - before) / 2**30


def _free_memory(device) -> None:
    gc.collect()
    if _on_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------
# inputs and plans


def make_inputs(cfg: dict, seq_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """The benchmark's inputs: ``pbs.synthetic.structured_qkv`` built on the configured device."""
    structure = Structure(**cfg["structure"])
    dtype = getattr(torch, cfg["dtype"])
    args = (cfg["batch"], cfg["q_heads"], cfg["kv_heads"], seq_len, cfg["head_dim"])
    return structured_qkv(*args, structure=structure, seed=cfg["seed"], dtype=dtype, device=cfg["device"])


def random_block_plan(batch: int, heads: int, kv_heads: int, seq_len: int, block_size: int, density: float,
                      seed: int, device=None) -> SparsePlan:
    """A causal block-sparse plan with ``plan.density() ≈ density`` (Nq = Nk = seq_len, no permutation).

    The diagonal tile and key block 0 are always on; every other causal tile is on with probability p, chosen
    so that the expected count hits the target: each (batch, head) gets exactly round(p · free tiles) of its free
    causal tiles, uniformly at random, so the density is exact up to one tile (unless the target is below what
    the forced tiles already give: 2T−1 of T(T+1)/2 tiles, T = ⌈N / block_size⌉, e.g. 0.119 at 4K with B=128).
    Off-diagonal tiles are full (no mask), diagonal tiles partial (token causal mask), as FlexAttention's
    BlockMask has them.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    t = num_blocks(seq_len, block_size)
    rows = torch.arange(t, device=device)
    causal = rows[None, :] <= rows[:, None]
    forced = causal & ((rows[None, :] == rows[:, None]) | (rows[None, :] == 0))
    free = causal & ~forced
    n_free, n_forced, total = int(free.sum()), int(forced.sum()), t * (t + 1) // 2
    want = min(max(int(round(density * total)) - n_forced, 0), n_free)
    mask = forced.expand(batch, heads, t, t).clone()
    if want > 0:
        gen = torch.Generator(device=device).manual_seed(seed)
        score = torch.rand(batch, heads, t * t, generator=gen, device=device)
        score = score.masked_fill(~free.flatten(), 2.0)  # never chosen
        kth = torch.sort(score, dim=-1).values[..., want - 1 : want]  # (B, H, 1)
        mask |= (score <= kth).view(batch, heads, t, t) & free
    return SparsePlan.from_block_mask(mask, block_size=block_size, seq_len_q=seq_len, seq_len_kv=seq_len,
                                      num_kv_heads=kv_heads)


# ---------------------------------------------------------------------------------------------------------------
# variants


def _causal_mask_mod(b, h, q_idx, kv_idx):  # module level, so compiled FlexAttention is not re-traced per call
    return q_idx >= kv_idx


_COMPILED_FLEX = None


def compiled_flex_attention():
    """``torch.compile(flex_attention)``, once per process, with a recompile limit that fits every length."""
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        dynamo_config = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.7; set whichever exists
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, max(64, getattr(dynamo_config, name)))
        # fullgraph: hitting the recompile limit is an error, never a silent eager fallback (which would
        # materialize the N×N scores and ignore the block mask)
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False, fullgraph=True)
    return _COMPILED_FLEX


def _sdpa_fn(q: Tensor, k: Tensor, v: Tensor, backend_name: str, kv_repeat: bool = False) -> Callable[[], Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)
    if kv_repeat:  # for a backend that rejects enable_gqa: K/V repeated once, outside the timed call
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        extra = {}
    else:
        extra = {"enable_gqa": True}

    def fn():
        with sdpa_kernel(backend):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, **extra)

    return fn


def sdpa_kv_repeat(q: Tensor, k: Tensor, v: Tensor, name: str) -> Callable[[], Tensor]:
    """SDPA variant ``name`` (a key of SDPA_BACKENDS) on K/V repeated to the query heads."""
    return _sdpa_fn(q, k, v, SDPA_BACKENDS[name], kv_repeat=True)


def _flex_causal_fn(q: Tensor, k: Tensor, v: Tensor, compile_flex: bool) -> Callable[[], Tensor]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    kwargs = {}
    if compile_flex and "_compile" in inspect.signature(create_block_mask).parameters:
        kwargs["_compile"] = True  # never materializes the N×N mask
    block_mask = create_block_mask(_causal_mask_mod, None, None, q.shape[2], k.shape[2], device=q.device, **kwargs)
    attn = compiled_flex_attention() if compile_flex else flex_attention
    return lambda: attn(q, k, v, block_mask=block_mask, enable_gqa=True)


def flex_block_mask(plan: SparsePlan):
    """The FlexAttention ``BlockMask`` of a plan without permutations or gathered columns, Nq == Nk.

    Full tiles -> full blocks (no mask_mod), partial tiles -> causal ``mask_mod``; index lists padded to the
    number of key blocks, as FlexAttention expects.
    """
    from torch.nn.attention.flex_attention import BlockMask

    if plan.key_perm is not None or plan.query_perm is not None or plan.col_indices is not None:
        raise ValueError("flex_block_mask needs a plan without permutations or gathered columns")
    if plan.seq_len_q != plan.seq_len_kv:
        raise ValueError(f"flex_block_mask needs Nq == Nk, got {plan.seq_len_q} and {plan.seq_len_kv}")
    nkb = plan.num_kv_blocks

    def widen(idx):
        return torch.nn.functional.pad(idx, (0, nkb - idx.shape[-1])).to(torch.int32).contiguous()

    extra = {}
    if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters:
        extra["compute_q_blocks"] = False  # forward only
    return BlockMask.from_kv_blocks(
        plan.kv_num_blocks.contiguous(), widen(plan.kv_indices), plan.full_kv_num_blocks.contiguous(),
        widen(plan.full_kv_indices), BLOCK_SIZE=plan.block_size, mask_mod=_causal_mask_mod,
        seq_lengths=(plan.seq_len_q, plan.seq_len_kv), **extra,
    )


def flex_prebuilt_fn(q: Tensor, k: Tensor, v: Tensor, plan: SparsePlan, scale: float,
                     compile_flex: bool = True) -> Callable[[], Tensor]:
    """FlexAttention on the plan's BlockMask built once, outside the timed call (kernel time only).

    ``compile_flex=False`` runs eager FlexAttention, a math path that ignores the block mask (CPU smoke runs).
    """
    block_mask = flex_block_mask(plan)
    if compile_flex:
        attn = compiled_flex_attention()
    else:
        from torch.nn.attention.flex_attention import flex_attention as attn
    return lambda: attn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)


def _failing(exc: BaseException) -> Callable[[], Tensor]:
    message = _describe(exc)

    def fn():
        raise RuntimeError(f"setup failed: {message}")

    return fn


def dense_variants(q: Tensor, k: Tensor, v: Tensor, *, kernel_backend: str = "triton", block_size: int = 128,
                   include=DENSE_VARIANTS, compile_flex: bool = True) -> dict[str, Callable[[], Tensor]]:
    """name -> zero-argument callable running dense causal attention (Nq == Nk) on q, k, v.

    ``sdpa_cudnn`` / ``sdpa_flash`` / ``sdpa_efficient``: SDPA forced to one backend (is_causal, enable_gqa);
    ``flex_causal``: compiled FlexAttention with a causal ``create_block_mask`` (enable_gqa);
    ``ours_dense``: ``run_plan`` with every causal tile on ``kernel_backend``.
    Setup happens here (outside any timed region); a variant whose setup fails gets a callable that raises, so
    the caller records it as absent on its first call, with the exception text.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    out: dict[str, Callable[[], Tensor]] = {}
    for name in include:
        try:
            if name in SDPA_BACKENDS:
                out[name] = _sdpa_fn(q, k, v, SDPA_BACKENDS[name])
            elif name == "flex_causal":
                out[name] = _flex_causal_fn(q, k, v, compile_flex)
            elif name == "ours_dense":
                plan = dense_plan(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], block_size, q.device)
                out[name] = (lambda plan=plan: run_plan(q, k, v, plan, scale, kernel_backend))
            else:
                raise ValueError(f"unknown dense variant {name!r}; choose from {list(DENSE_VARIANTS)}")
        except Exception as exc:  # noqa: BLE001  (recorded, not raised)
            out[name] = _failing(exc)
    return out


# ---------------------------------------------------------------------------------------------------------------
# method breakdown and FLOPs


def dense_causal_flops(batch: int, q_heads: int, head_dim: int, seq_len: int) -> float:
    """QKᵀ and PV over the causal triangle: 4 · B · Hq · D · N(N+1)/2."""
    return 4.0 * batch * q_heads * head_dim * (seq_len * (seq_len + 1) / 2)


def tflops(batch: int, q_heads: int, head_dim: int, seq_len: int, ms: float,
           density: float = 1.0) -> tuple[float, float]:
    """(dense-equivalent TFLOP/s, computed TFLOP/s = dense-equivalent × density) for a call of ``ms``."""
    if not (ms > 0) or math.isnan(ms):
        return float("nan"), float("nan")
    dense = dense_causal_flops(batch, q_heads, head_dim, seq_len) / (ms * 1e-3) / 1e12
    return dense, dense * density


def method_breakdown(q: Tensor, k: Tensor, v: Tensor, method: str, kwargs: dict | None = None, *,
                     kernel_backend: str = "triton", planner: str = "auto", warmup: int = 5, reps: int = 20,
                     device=None, flush_l2: bool = True, max_seconds: float | None = None) -> dict:
    """Table 7 of the paper for one method, from the library's public steps.

    total: ``pbs.sparse_attention(method, backend=kernel_backend, planner=planner, short_seq_policy=False)`` end
    to end (median, with p10/p90; the policy is off so the sparse path is what is timed); plan: ``pbs.plan``
    alone; attention: ``pbs.attend`` on the prebuilt plan; permutation: PBS's key (and query) permutation alone
    (the fused kernels with the fused planner), else 0; selection = plan − permutation (clamped at 0);
    overhead = plan / total · 100. Memory: ``peak_mem_gib`` of the end-to-end call (output included),
    ``plan_peak_gib`` of ``pbs.plan`` alone (the plan's own tensors included). ``planner`` says what built the
    plan ("triton", "torch", with the reason when a fused planner was not used). ``error`` holds the first
    failure of a part (the parts measured before it are kept); ``note`` a dense fallback.
    """
    from . import attend, plan, sparse_attention

    kwargs = dict(kwargs or {})
    scale = 1.0 / math.sqrt(q.shape[-1])
    cfg = make_config(get_method(method).config_cls, kwargs)
    timing = dict(warmup=warmup, reps=reps, device=device, flush_l2=flush_l2, max_seconds=max_seconds)
    nan = float("nan")
    res = {"permutation_ms": 0.0, "selection_ms": nan, "plan_ms": nan, "attention_ms": nan, "total_ms": nan,
           "overhead_pct": nan, "median_ms": nan, "p10_ms": nan, "p90_ms": nan, "density": nan, "peak_mem_gib": nan,
           "plan_peak_gib": nan, "planner": "", "error": "", "note": ""}
    step = "end to end"
    try:
        with torch.no_grad():
            def e2e():
                return sparse_attention(q, k, v, method=method, backend=kernel_backend, planner=planner,
                                        short_seq_policy=False, **kwargs)

            e2e()  # first call: a failing method is recorded here
            t = time_cuda(e2e, **timing)
            res.update(median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], total_ms=t["median_ms"])
            res["peak_mem_gib"] = peak_mem_gib(e2e, device)

            step = "planner"
            make_plan = lambda: plan(q, k, method, planner=planner, short_seq_policy=False, **kwargs)  # noqa: E731
            result = make_plan()
            if isinstance(result, Dense):
                res["density"] = 1.0
                res["planner"] = "dense"
                res["note"] = f"dense fallback: {result.reason}" if result.reason else ""
            else:
                res["density"] = result.density()
                res["planner"] = result.planner + (f" ({result.planner_note})" if result.planner_note else "")
            res["plan_ms"] = time_cuda(make_plan, **timing)["median_ms"]
            res["plan_peak_gib"] = peak_mem_gib(make_plan, device)

            step = "attention"
            res["attention_ms"] = time_cuda(lambda: attend(q, k, v, result, backend=kernel_backend),
                                            **timing)["median_ms"]
            fused = not isinstance(result, Dense) and result.planner == "triton"
            del result

            step = "permutation"
            permute = getattr(cfg, "permute", "none") if method == "pbs" else "none"
            if permute != "none" and k.shape[2] > cfg.segment_size:
                res["permutation_ms"] = time_cuda(lambda: _permutation(q, k, cfg, scale, fused), **timing)["median_ms"]
            res["selection_ms"] = max(res["plan_ms"] - res["permutation_ms"], 0.0)
            res["overhead_pct"] = res["plan_ms"] / res["total_ms"] * 100
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{step}: {_describe(exc)}"
    return res


def _permutation(q: Tensor, k: Tensor, cfg, scale: float, fused: bool):
    """PBS's permutation step alone (Table 7's "Permutation"), as the planner that built the plan runs it."""
    key_perm = pooled = None
    if fused:
        from .kernels.block_means import block_means_fused
        from .kernels.key_permutation import key_permutation_fused
        from .kernels.query_permutation import query_permutation_fused

        if cfg.permute in ("key", "key+query"):
            key_perm, pooled, *_ = key_permutation_fused(q, k, cfg.block_size, cfg.segment_size, scale,
                                                         cfg.share_permutation)
        if cfg.permute in ("query", "key+query"):
            pooled = pooled if pooled is not None else block_means_fused(k, cfg.block_size)
            return query_permutation_fused(q, pooled, k.shape[2], cfg.block_size, cfg.segment_size, scale)
        return key_perm
    from .permutation import key_permutation, query_permutation

    if cfg.permute in ("key", "key+query"):
        key_perm = key_permutation(q, k, cfg.block_size, cfg.segment_size, scale, cfg.share_permutation)
    if cfg.permute in ("query", "key+query"):
        return query_permutation(q, k, key_perm, cfg.block_size, cfg.segment_size)
    return key_perm


# ---------------------------------------------------------------------------------------------------------------
# the benchmark


def _describe(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        text = "OOM " + text
    return text[:300]


def complete_config(cfg) -> dict:
    """A plain dict: ``DEFAULT_CONFIG`` updated with ``cfg`` (a mapping; nested mappings merged one level)."""
    out = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in dict(cfg).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "methods":
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def method_kwargs(cfg: dict, name: str) -> tuple[str, dict]:
    """(method, kwargs) of methods[name], with the non-null common_method_kwargs its config has as fields."""
    import dataclasses

    entry = cfg["methods"][name]
    method = entry["method"]
    fields = {f.name for f in dataclasses.fields(get_method(method).config_cls)}
    kwargs = {k: v for k, v in (cfg.get("common_method_kwargs") or {}).items() if v is not None and k in fields}
    kwargs.update(entry.get("kwargs") or {})
    return method, kwargs


def _row(cfg: dict, section: str, variant: str, seq_len: int) -> dict:
    row = {c: float("nan") for c in COLUMNS}
    row.update(section=section, variant=variant, seq_len=seq_len, batch=cfg["batch"], q_heads=cfg["q_heads"],
               kv_heads=cfg["kv_heads"], head_dim=cfg["head_dim"], dtype=cfg["dtype"], error="")
    return row


def _measure(cfg: dict, row: dict, fn: Callable[[], Tensor]) -> dict:
    """Fill timing, TFLOP/s and peak memory of ``fn`` into ``row`` (density must be set); errors go to ``error``."""
    device = cfg["device"]
    try:
        with torch.no_grad():
            fn()  # first call: a variant that raises here is absent
            t = time_cuda(fn, cfg["warmup"], cfg["reps"], device=device, flush_l2=cfg["flush_l2"],
                          max_seconds=cfg["max_seconds_per_measurement"])
            row.update(median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"])
            row["peak_mem_gib"] = peak_mem_gib(fn, device)
        dense, computed = tflops(row["batch"], row["q_heads"], row["head_dim"], row["seq_len"], row["median_ms"],
                                 row["density"])
        row.update(tflops_dense_equiv=dense, tflops_computed=computed)
    except Exception as exc:  # noqa: BLE001
        row["error"] = _describe(exc)
    return row


def run_benchmark(cfg) -> list[dict]:
    """Run the configured sections at every sequence length; one dict per (section, variant, length), see COLUMNS."""
    from tqdm import tqdm

    cfg = complete_config(cfg)
    device = cfg["device"]
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch.cuda.is_available() is False; pass device=cpu for a smoke run")
    backend = cfg["kernel_backend"]
    scale = 1.0 / math.sqrt(cfg["head_dim"])
    rows: list[dict] = []
    lengths = tqdm(cfg["seq_lens"], desc="seq_len", unit="N", disable=not cfg.get("progress", True))
    for seq_len in lengths:
        q, k, v = make_inputs(cfg, seq_len)
        here: list[dict] = []

        if "dense" in cfg["sections"]:
            variants = dense_variants(q, k, v, kernel_backend=backend, block_size=cfg["block_size"],
                                      include=cfg["dense_variants"], compile_flex=cfg["flex_compile"])
            for name in list(variants):
                lengths.set_postfix_str(f"dense {name}")
                row = _row(cfg, "dense", name, seq_len)
                row["density"] = 1.0
                here.append(_measure(cfg, row, variants.pop(name)))
                _free_memory(device)
                if row["error"] and name in SDPA_BACKENDS and cfg["kv_repeat_fallback"]:
                    lengths.set_postfix_str(f"dense {name}{KV_REPEAT_SUFFIX}")
                    rep = _row(cfg, "dense", name + KV_REPEAT_SUFFIX, seq_len)
                    rep["density"] = 1.0
                    try:
                        fn = sdpa_kv_repeat(q, k, v, name)
                    except Exception as exc:  # noqa: BLE001
                        fn = _failing(exc)
                    here.append(_measure(cfg, rep, fn))
                    del fn
                    _free_memory(device)

        if "block_sparse" in cfg["sections"]:
            for i, target in enumerate(cfg["densities"]):
                plan = random_block_plan(cfg["batch"], cfg["q_heads"], cfg["kv_heads"], seq_len, cfg["block_size"],
                                         target, cfg["seed"] * 1000 + i, device)
                density = plan.density()
                for name in ("ours_sparse", "flex_sparse", "flexmask_sparse"):
                    lengths.set_postfix_str(f"block {name} d={target}")
                    row = _row(cfg, "block_sparse", f"{name}_d{target:g}", seq_len)
                    row["density"] = density
                    try:
                        if name == "ours_sparse":
                            fn = lambda: run_plan(q, k, v, plan, scale, backend)
                        elif name == "flex_sparse":  # our flex backend: plan -> BlockMask inside each call
                            fn = lambda: run_plan(q, k, v, plan, scale, "flex")
                        else:  # FlexAttention alone: the BlockMask built once, outside the timed call
                            fn = flex_prebuilt_fn(q, k, v, plan, scale, cfg["flex_compile"])
                    except Exception as exc:  # noqa: BLE001
                        fn = _failing(exc)
                    here.append(_measure(cfg, row, fn))
                    del fn
                    _free_memory(device)
                del plan

        if "methods" in cfg["sections"]:
            for name in cfg["methods"]:
                lengths.set_postfix_str(f"method {name}")
                row = _row(cfg, "methods", name, seq_len)
                try:
                    method, kwargs = method_kwargs(cfg, name)
                    res = method_breakdown(q, k, v, method, kwargs, kernel_backend=backend,
                                           planner=cfg["planner"], warmup=cfg["warmup"],
                                           reps=cfg["reps"], device=device, flush_l2=cfg["flush_l2"],
                                           max_seconds=cfg["max_seconds_per_measurement"])
                except Exception as exc:  # noqa: BLE001  (bad method name or kwargs)
                    res = {"error": _describe(exc)}
                note = res.pop("note", "")
                row.update(res)
                if note and not row["error"]:
                    row["error"] = f"note: {note}"
                dense, computed = tflops(cfg["batch"], cfg["q_heads"], cfg["head_dim"], seq_len, row["total_ms"],
                                         row["density"])
                row.update(tflops_dense_equiv=dense, tflops_computed=computed)
                here.append(row)
                _free_memory(device)

        _add_speedups(here)
        rows.extend(here)
        del q, k, v
        _free_memory(device)
    return rows


def _ok(row: dict) -> bool:
    return (not row.get("error") or str(row["error"]).startswith("note:")) and _finite(row.get("median_ms"))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fastest_dense_ms(rows: list[dict], seq_len: int) -> float:
    """Fastest dense SDPA backend (kv-repeat fallbacks included) at ``seq_len``; NaN if none ran."""
    times = [r["median_ms"] for r in rows if r["section"] == "dense" and r["seq_len"] == seq_len
             and r["variant"].startswith("sdpa_") and _ok(r)]
    return min(times) if times else float("nan")


def _add_speedups(rows: list[dict]) -> None:
    for seq_len in {r["seq_len"] for r in rows}:
        ref = fastest_dense_ms(rows, seq_len)
        for r in rows:
            if r["seq_len"] == seq_len:
                ms = r["total_ms"] if r["section"] == "methods" else r["median_ms"]
                r["speedup_vs_fastest_dense"] = ref / ms if _finite(ms) and ms > 0 and _finite(ref) else float("nan")


# ---------------------------------------------------------------------------------------------------------------
# provenance, targets, output


def gpu_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _find(rows, section, variant, seq_len):
    for r in rows:
        if r["section"] == section and r["variant"] == variant and r["seq_len"] == seq_len:
            return r
    return None


def evaluate_targets(rows: list[dict]) -> list[dict]:
    """The issue's targets, each {target, status: met | missed | incomplete | not measured, measured}."""
    out = []

    def add(target, values, ok, need, info=()):
        """values: list of (label, number or None); ok(number) -> bool; need: labels that must be measured."""
        got = [(lbl, x) for lbl, x in values if x is not None and _finite(x)]
        if not got:
            status = "not measured"
        elif not all(ok(x) for _, x in got):
            status = "missed"
        elif len(got) < need:
            status = "incomplete"
        else:
            status = "met"
        measured = "; ".join(f"{lbl}: {x:.3g}" if x is not None and _finite(x) else f"{lbl}: not measured"
                             for lbl, x in values)
        measured = "; ".join([measured, *info])
        out.append({"target": target, "status": status, "measured": measured})

    def speedup(section, variant, n):
        r = _find(rows, section, variant, n)
        return r["speedup_vs_fastest_dense"] if r and _ok(r) else None

    add("ours (all causal tiles) >= 0.75x the fastest dense SDPA at 32K-128K",
        [(f"N={n} ours/fastest", speedup("dense", "ours_dense", n)) for n in TARGET_LONG], lambda x: x >= 0.75,
        len(TARGET_LONG))
    add("PBS end to end at 128K >= 3.0x the fastest dense SDPA",
        [(f"N={TARGET_MAX} speedup", speedup("methods", "pbs", TARGET_MAX))], lambda x: x >= 3.0, 1)
    ratios = []
    for n in TARGET_LONG:
        ours = _find(rows, "block_sparse", "ours_sparse_d0.22", n)
        flex = [r for v in ("flex_sparse_d0.22", "flexmask_sparse_d0.22")
                if (r := _find(rows, "block_sparse", v, n)) is not None and _ok(r)]
        ratio = min(r["median_ms"] for r in flex) / ours["median_ms"] if ours and _ok(ours) and flex else None
        ratios.append((f"N={n} fastest flex ms / ours ms", ratio))
    add("ours >= 1.2x FlexAttention on the same block mask (density 0.22; the faster of flex_sparse and "
        "flexmask_sparse), 32K-128K", ratios, lambda x: x >= 1.2, len(TARGET_LONG))
    pbs_row = _find(rows, "methods", "pbs", TARGET_MAX)
    overhead = pbs_row["overhead_pct"] if pbs_row and _ok(pbs_row) else None
    add("PBS planning overhead (permutation + selection) <= 5% of total at 128K",
        [(f"N={TARGET_MAX} overhead %", overhead)], lambda x: x <= 5.0, 1)
    r = pbs_row
    info = []
    for variant in ("ours_dense",):  # the kernel alone (plan prebuilt): shows whether K/V are ever copied
        kr = _find(rows, "dense", variant, TARGET_MAX)
        if kr and _ok(kr) and _finite(kr["peak_mem_gib"]):
            info.append(f"info, {variant} kernel alone: {_extra_mem_pct(kr):.3g}")
    add("extra peak memory at 128K (PBS end to end, beyond the output) <= 10% of the K+V bytes",
        [(f"N={TARGET_MAX} (peak - output) / (K+V) %",
          _extra_mem_pct(r) if r and _ok(r) and _finite(r["peak_mem_gib"]) else None)],
        lambda x: x <= 10.0, 1, info)
    return out


def _extra_mem_pct(r: dict) -> float:
    """(peak memory − output bytes) as a percentage of the K+V bytes, for one row."""
    item = torch.empty((), dtype=getattr(torch, r["dtype"])).element_size()
    kv = 2 * r["batch"] * r["kv_heads"] * r["seq_len"] * r["head_dim"] * item
    out_bytes = r["batch"] * r["q_heads"] * r["seq_len"] * r["head_dim"] * item
    return (r["peak_mem_gib"] * 2**30 - out_bytes) / kv * 100


def _fmt(x, digits: int = 3) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "—"
        return f"{x:.{digits}g}" if abs(x) < 1e5 else f"{x:.0f}"
    return str(x)


def _md_table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(label for _, label in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c, ""))[:120].replace("|", "/") for c, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


_SECTION_COLUMNS = {
    "dense": [("variant", "variant"), ("seq_len", "N"), ("median_ms", "median ms"), ("p10_ms", "p10"),
              ("p90_ms", "p90"), ("tflops_dense_equiv", "TFLOP/s"), ("speedup_vs_fastest_dense", "vs fastest SDPA"),
              ("peak_mem_gib", "peak GiB"), ("error", "error")],
    "block_sparse": [("variant", "variant"), ("seq_len", "N"), ("density", "density"), ("median_ms", "median ms"),
                     ("p10_ms", "p10"), ("p90_ms", "p90"), ("tflops_dense_equiv", "TFLOP/s dense-equiv"),
                     ("tflops_computed", "TFLOP/s computed"), ("speedup_vs_fastest_dense", "vs fastest SDPA"),
                     ("peak_mem_gib", "peak GiB"), ("error", "error")],
    "methods": [("variant", "variant"), ("seq_len", "N"), ("density", "density"), ("permutation_ms", "perm ms"),
                ("selection_ms", "select ms"), ("plan_ms", "plan ms"), ("attention_ms", "attn ms"),
                ("total_ms", "total ms"), ("overhead_pct", "overhead %"), ("tflops_dense_equiv", "TFLOP/s dense-equiv"),
                ("speedup_vs_fastest_dense", "vs fastest SDPA"), ("plan_peak_gib", "plan peak GiB"),
                ("peak_mem_gib", "peak GiB"), ("planner", "planner"), ("error", "error")],
}


def _read_csv(path: Path) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for rec in csv.DictReader(fh):
            row = {}
            for c in COLUMNS:
                val = rec.get(c, "")
                if c in _STR_COLUMNS:
                    row[c] = val
                elif c in _INT_COLUMNS:
                    row[c] = int(val)
                else:
                    row[c] = float(val) if val not in ("", None) else float("nan")
            rows.append(row)
    return rows


def write_results(rows: list[dict], prov: dict, out_dir: str | os.PathLike, merge: bool = False,
                  cfg: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<gpu-slug>.csv`` and ``.md``; returns their paths.

    ``merge``: keep the rows of an existing CSV whose sequence lengths this run did not measure (so a long sweep
    can be split over several commands; each length's rows, speedups included, still come from one run).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = gpu_slug(prov["gpu"])
    csv_path, md_path = out_dir / f"{slug}.csv", out_dir / f"{slug}.md"
    cfg = complete_config(cfg or {})
    kept_lengths: list[int] = []
    if merge and csv_path.exists():
        mine = {r["seq_len"] for r in rows}
        old = [r for r in _read_csv(csv_path) if r["seq_len"] not in mine]
        kept_lengths = sorted({r["seq_len"] for r in old})
        rows = old + list(rows)
    order = {"dense": 0, "block_sparse": 1, "methods": 2}
    rows = sorted(rows, key=lambda r: (order.get(r["section"], 9), r["seq_len"]))

    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: ("" if isinstance(r.get(c), float) and math.isnan(r[c]) else
                                 (f"{r[c]:.6g}" if isinstance(r.get(c), float) else r.get(c, ""))) for c in COLUMNS})

    s = cfg["structure"]
    first = rows[0] if rows else {}
    on_gpu = prov["gpu"] != "cpu"
    builder = "`pbs.synthetic.structured_qkv`" + (" (built on the GPU)" if on_gpu else "")
    timer = ("CUDA events around each call, L2 flushed (256 MiB memset) before each call outside the timed region"
             if on_gpu else "`time.perf_counter` around each call (CPU run)")
    lines = [f"# Kernel benchmark: {prov['gpu']}", "", "## Provenance", "", "```"]
    lines += [f"{key}: {value}" for key, value in prov.items()]
    lines += ["```", ""]
    if kept_lengths:
        lines += [f"Rows for N = {kept_lengths} were kept from an earlier run in this CSV (merge=true); the "
                  "provenance above is the latest command's.", ""]
    lines += [
        "## Inputs",
        "",
        f"- Structured synthetic attention inputs ({builder}): batch {first.get('batch')}, "
        f"{first.get('q_heads')} query heads, "
        f"{first.get('kv_heads')} KV heads (GQA), head_dim {first.get('head_dim')}, {first.get('dtype')}, seed "
        f"{cfg['seed']}; planted patterns with logit strengths (pre-softmax, after the 1/sqrt(D) scale): sink at "
        f"token 0 +{s['sink_logit']}, local window +{s['local_logit']} at distance 0 (falling off over ~100 tokens), "
        f"scattered heavy hitters +{s['heavy_logit']} on a fraction {s['heavy_fraction']} of the keys, long-range "
        f"recency +{s.get('recency_logit', 0.0)} (0 = off); Gaussian noise std {s['noise']}.",
        "- Causal prefill, Nq = Nk = N. Dense causal FLOPs = 4·B·Hq·D·N(N+1)/2; `TFLOP/s dense-equiv` = that / "
        "time, "
        "`TFLOP/s computed` = dense-equiv × block density.",
        f"- `block_sparse`: random causal block masks (block {cfg['block_size']}), diagonal tile and key block 0 "
        "always on, other causal tiles chosen uniformly at random per head to hit the target density; the same "
        "SparsePlan runs on our kernel (`ours_sparse_d<target>`), through our FlexAttention backend "
        "(`flex_sparse_d<target>`: `run_plan(..., \"flex\")`, which converts the plan to a BlockMask inside each call) "
        "and through compiled FlexAttention on a BlockMask built once outside the timed call "
        "(`flexmask_sparse_d<target>`: the kernel alone). "
        "The `density` column is the plan's measured tile density.",
        "- `methods`: end to end = `pbs.sparse_attention(method, backend=..., planner=...)`; plan = `pbs.plan` "
        "alone (the `planner` column says which planner built it: `triton` = fused kernels, `torch` = the PyTorch "
        "reference, with the reason), attn = `pbs.attend` on the prebuilt plan, perm = PBS's permutation step "
        "alone, select = plan − perm, total = end to end, overhead = plan / total; plan peak = extra memory of "
        "`pbs.plan` alone (its plan included). Kwargs: "
        + ", ".join(f"`{n}` = {method_kwargs(cfg, n)[0]} {method_kwargs(cfg, n)[1] or '(defaults)'}"
                    for n in cfg["methods"]) + ".",
        f"- Timing: {timer}, median (p10/p90) of up to {cfg['reps']} reps after {cfg['warmup']} warm-up call(s) "
        f"(reps capped so that a measurement takes about <= {cfg['max_seconds_per_measurement']} s, but at "
        f"least {min(5, cfg['reps'])}; warm-up stopped after a quarter of that). Speedups are against the fastest "
        "dense SDPA "
        "backend at the same N in the same run (`_kvrep` = that backend on K/V repeated to the query heads, run "
        "only when it rejects enable_gqa). Peak memory: max allocated during one call minus allocated before it "
        "(the output included).",
        "",
    ]
    titles = {"dense": "Dense causal attention", "block_sparse": "Same block mask: ours vs FlexAttention",
              "methods": "Methods end to end (Table 7 breakdown)"}
    for section, cols in _SECTION_COLUMNS.items():
        sec_rows = [r for r in rows if r["section"] == section]
        if sec_rows:
            lines += [f"## {titles[section]}", "", _md_table(sec_rows, cols), ""]
    lines += ["## Targets", ""]
    for t in evaluate_targets(rows):
        lines.append(f"- **{t['status']}**: {t['target']} ({t['measured']})")
    lines.append("")
    md_path.write_text("\n".join(lines))
    return csv_path, md_path


def format_table(rows: list[dict]) -> str:
    """A compact plain-text table for the console: section, variant, N, ms, TFLOP/s, speedup, density, overhead."""
    header = f"{'section':<13}{'variant':<26}{'N':>8}{'ms':>10}{'TFLOP/s':>9}{'speedup':>9}{'density':>9}" \
             f"{'ovh%':>7}  error"
    lines = [header, "-" * len(header)]
    for r in rows:
        ms = r["total_ms"] if r["section"] == "methods" else r["median_ms"]
        lines.append(f"{r['section']:<13}{r['variant']:<26}{r['seq_len']:>8}{_fmt(ms):>10}"
                     f"{_fmt(r['tflops_dense_equiv']):>9}{_fmt(r['speedup_vs_fastest_dense']):>9}"
                     f"{_fmt(r['density']):>9}{_fmt(r['overhead_pct']):>7}  {str(r['error'])[:60]}")
    return "\n".join(lines)

