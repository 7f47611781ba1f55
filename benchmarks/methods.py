"""One method end to end, with the paper's Table 7 breakdown, from the library's public steps."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

import pbs
from pbs.config import make_config
from pbs.methods import Dense, get_method

from .timing import describe, peak_mem_gib, time_cuda


def method_breakdown(q: Tensor, k: Tensor, v: Tensor, method: str, kwargs: dict | None = None, *,
                     kernel_backend: str = "triton", planner: str = "auto", warmup: int = 5, reps: int = 20,
                     device=None, flush_l2: bool = True, max_seconds: float | None = None) -> dict:
    """Table 7 of the paper for one method.

    total: ``pbs.sparse_attention(method, backend=kernel_backend, planner=planner, short_seq_policy=False)`` end
    to end (median, with p10/p90; the policy is off so the sparse path is what is timed); plan: ``pbs.plan``
    alone; attention: ``pbs.attend`` on the prebuilt plan; permutation: PBS's key (and query) permutation alone,
    run as the planner that built the plan runs it (the fused kernels, or the torch functions), else 0;
    selection = plan − permutation (clamped at 0); overhead = plan / total · 100. Memory: ``peak_mem_gib`` of the
    end-to-end call (output included), ``plan_peak_gib`` of ``pbs.plan`` alone (the plan's own tensors included).
    ``planner`` says what built the plan ("triton", "torch", with the reason when a fused planner was not used).
    ``error`` holds the first failure of a part (the parts measured before it are kept); ``note`` a dense
    fallback.
    """
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
                return pbs.sparse_attention(q, k, v, method=method, backend=kernel_backend, planner=planner,
                                            short_seq_policy=False, **kwargs)

            e2e()  # first call: a failing method is recorded here
            t = time_cuda(e2e, **timing)
            res.update(median_ms=t["median_ms"], p10_ms=t["p10_ms"], p90_ms=t["p90_ms"], total_ms=t["median_ms"])
            res["peak_mem_gib"] = peak_mem_gib(e2e, device)

            step = "planner"

            def make_plan():
                return pbs.plan(q, k, method, planner=planner, short_seq_policy=False, **kwargs)

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
            res["attention_ms"] = time_cuda(functools.partial(pbs.attend, q, k, v, result, backend=kernel_backend),
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
        res["error"] = f"{step}: {describe(exc)}"
    return res


def _permutation(q: Tensor, k: Tensor, cfg, scale: float, fused: bool):
    """PBS's permutation step alone (Table 7's "Permutation"): the library functions the planner that built the
    plan calls for it (``pbs/methods/pbs.py``: ``plan_fused`` or ``plan``), nothing re-implemented."""
    key_perm = pooled = None
    if fused:
        from pbs.kernels.block_means import block_means_fused
        from pbs.kernels.key_permutation import key_permutation_fused
        from pbs.kernels.query_permutation import query_permutation_fused

        if cfg.permute in ("key", "key+query"):
            key_perm, pooled, *_ = key_permutation_fused(q, k, cfg.block_size, cfg.segment_size, scale,
                                                         cfg.share_permutation)
        if cfg.permute in ("query", "key+query"):
            pooled = pooled if pooled is not None else block_means_fused(k, cfg.block_size)
            return query_permutation_fused(q, pooled, k.shape[2], cfg.block_size, cfg.segment_size, scale)
        return key_perm
    from pbs.permutation import key_permutation, query_permutation

    if cfg.permute in ("key", "key+query"):
        key_perm = key_permutation(q, k, cfg.block_size, cfg.segment_size, scale, cfg.share_permutation)
    if cfg.permute in ("query", "key+query"):
        return query_permutation(q, k, key_perm, cfg.block_size, cfg.segment_size)
    return key_perm
