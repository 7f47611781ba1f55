"""Planner timings on a GPU (H100/H200). The kernel's launch variants (tile sizes, loads, schedules) are
``benchmarks.kernel_sweep``.

1. ``planners``: planner time per method at 32K and 128K (the torch planners), and attention on the plan.
2. ``windows``: MInference's key windows vs its aligned layout (bf16 correctness, density, attention time).
3. ``profile``: the top CUDA ops of PBS's planner at 128K.

    python -m benchmarks.tile_sweep --out $OUT                   # planners (CUDA)
    python -m benchmarks.tile_sweep --out $OUT --parts profile

The GPU correctness checks that used to live here are tests: ``pytest -m gpu`` (``tests/gpu/``).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch

import pbs
from pbs.synthetic import Structure, structured_qkv

from .timing import time_cuda


def _sdpa(backend, q, k, v):
    """Dense causal SDPA on one backend (cuDNN, flash)."""
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(backend):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def _events(fn, reps=20, warmup=5):
    return time_cuda(fn, warmup=warmup, reps=reps)["median_ms"]


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _plan(method, kwargs, q, k):
    return pbs.plan(q, k, method, planner="torch", short_seq_policy=False, **kwargs)


def planners(log):
    rows = []
    for n in (32768, 131072):
        q, k, v = structured_qkv(1, 32, 8, n, 128, seed=3, dtype=torch.bfloat16, device="cuda")
        for method, kw in (("pbs", {}), ("pbs", dict(permute="none")), ("pbs", dict(scoring="antidiagonal")),
                           ("meanpool", {}), ("xattention", {}), ("minference", {}), ("flexprefill", {})):
            try:
                ms = _events(functools.partial(_plan, method, kw, q, k), reps=5, warmup=2)
                plan = _plan(method, kw, q, k)
                att = _events(functools.partial(pbs.attend, q, k, v, plan, backend="triton"), reps=5, warmup=2)
            except Exception as e:  # noqa: BLE001
                log(f"N={n} {method} {kw}: failed {type(e).__name__}: {str(e)[:160]}")
                torch.cuda.empty_cache()
                continue
            rows.append(dict(n=n, method=method, kw=kw, plan_ms=ms, attn_ms=att, density=plan.density()))
            log(f"N={n} {method} {kw}: plan {ms:.2f} ms, attention {att:.2f} ms, density {plan.density():.3f}")
            del plan
            torch.cuda.empty_cache()
    return rows


def windows(log):
    """MInference's key windows vs its aligned layout: correctness in bf16 (triton, and flex at 4K), density, and
    attention time at the paper's settings (decides whether the aligned layout is worth keeping for speed)."""
    rows = []
    for nq, nk in ((4097, 4097), (1000, 4097), (32768, 32768), (131072, 131072)):
        q, k, v = structured_qkv(1, 32, 8, nk, 128, seed=nk, dtype=torch.bfloat16, device="cuda",
                                 structure=Structure(heavy_fraction=0.15, recency_logit=8.0))
        q = q[:, :, nk - nq :].contiguous()
        for layout in ("windows", "aligned"):
            kw = dict(slash_layout=layout)
            t0 = time.perf_counter()
            plan = _plan("minference", kw, q, k)
            torch.cuda.synchronize()
            plan_ms = (time.perf_counter() - t0) * 1e3
            row = dict(nq=nq, nk=nk, layout=layout, density=plan.density(), plan_ms=plan_ms)
            if nk <= 32768:
                ref = pbs.attend(q.float(), k.float(), v.float(), plan, backend="torch")
                for backend in ["triton"] + (["flex"] if nk == 4097 else []):
                    out = pbs.attend(q, k, v, plan, backend=backend)
                    row[f"{backend}_rel_err"] = err = _rel(out, ref)
                    row[f"{backend}_ok"] = bool(torch.isfinite(out).all()) and err < 1e-2
            row["attn_ms"] = _events(functools.partial(pbs.attend, q, k, v, plan, backend="triton"), reps=10, warmup=3)
            rows.append(row)
            log(f"minference {layout} Nq={nq} Nk={nk}: " + ", ".join(
                f"{key}={val:.3g}" if isinstance(val, float) else f"{key}={val}" for key, val in row.items()
                if key not in ("nq", "nk", "layout")))
            del plan
            torch.cuda.empty_cache()
    return rows


def profile(log):
    """Top CUDA ops of the pbs planner at 128K (where the planning overhead has to be cut)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    n = 131072
    q, k, _v = structured_qkv(1, 32, 8, n, 128, seed=3, dtype=torch.bfloat16, device="cuda")
    for kw in ({}, dict(permute="none")):
        _plan("pbs", kw, q, k)
        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            _plan("pbs", kw, q, k)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=14)
        log(f"pbs {kw} planner at 128K, top CUDA ops:\n{table}")
    return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--parts", default="planners", help="planners, windows, profile (comma separated)")
    args = parser.parse_args()
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    import triton

    log(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__} "
        f"date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    parts = {"planners": planners, "windows": windows, "profile": profile}
    result = {part: parts[part](log) for part in args.parts.split(",")}
    with open(f"{args.out}/tile_sweep.json", "w") as f:
        json.dump(result, f, indent=1, default=str)
    with open(f"{args.out}/tile_sweep.log", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
