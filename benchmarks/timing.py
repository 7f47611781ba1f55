"""Timing and memory of a zero-argument callable, and the FLOP count of dense causal attention.

CUDA: events around each call after warm-up, the L2 cache flushed before each call outside the timed region (as
``triton.testing.do_bench``); CPU: ``time.perf_counter``.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable

import torch


def on_cuda(device) -> bool:
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
    of ``max_seconds`` (after at least one call); the reps actually used are returned as ``reps``. ``warmup=0``:
    the caller has warmed ``fn`` up (no call before the timed ones).
    """
    cuda = on_cuda(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    last = spent = 0.0
    for _ in range(max(warmup, 0)):
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
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def peak_mem_gib(fn: Callable[[], object], device=None) -> float:
    """Peak CUDA memory of one ``fn()`` above what was allocated before it, in GiB (output included); NaN on CPU."""
    if not on_cuda(device):
        return float("nan")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return (peak - before) / 2**30


def free_memory(device) -> None:
    gc.collect()
    if on_cuda(device):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


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


def describe(exc: BaseException) -> str:
    """One line for a row's ``error``: the exception type and first line, ``OOM`` first for out-of-memory."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        text = "OOM " + text
    return text[:300]
